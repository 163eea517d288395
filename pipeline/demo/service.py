"""``hopline demo``: the whole pipeline on the embedded broker, N live sessions, then the report.

Starts Tansu in-process, creates the topics, runs windower, worker, assembler and
controller as child processes (:class:`~pipeline.supervisor.ServiceProcess`), streams the
bundled sample utterances as concurrent real-time sessions (some as 8 kHz mu-law, like phone
calls), follows the transcripts as a client would (measuring delivery), prints a progress
line every second, and ends with the latency report, example transcripts against their
reference text with WER, and each service's exit code after SIGTERM.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from pipeline import contracts
from pipeline.audio import encode, read_wav, resample_to
from pipeline.clock import now_ms
from pipeline.control.capabilities import CapabilityBook
from pipeline.control.costs import level_costs
from pipeline.control.follower import ControlFollower
from pipeline.control.ladder import ladder
from pipeline.demo import SAMPLES_DIR
from pipeline.demo.scenarios import Burst, SlowdownWindow
from pipeline.errors import CliError
from pipeline.gateway.client import STREAM, TWILIO, ClientSession, GatewayClient, StreamResult
from pipeline.gateway.policy import TWILIO_FORMAT
from pipeline.gateway.policy import session_id as gateway_session_id
from pipeline.ingress.service import AudioProducer, AudioStream
from pipeline.kafka.broker import broker_for, embedded_broker_warning
from pipeline.kafka.produce_stats import PRODUCE_STATS
from pipeline.kafka.readers import open_reader, read_to_end
from pipeline.kafka.topics import create_topics
from pipeline.observe.latency import percentile
from pipeline.observe.report import (
    LatencyReport,
    build_report,
    format_groups,
    format_report,
    group_reports,
    plot_breakdown,
    read_decisions,
    read_events,
    read_probes,
)
from pipeline.observe.wer import align, matched_reference_words, normalize, word_errors
from pipeline.settings import Settings
from pipeline.supervisor import ServiceFailed, ServiceProcess, stop_all

log = logging.getLogger(__name__)

MODEL_RATE = 16000
#: Silence between utterances of one session: longer than the endpoint so each gets a final.
GAP_S = 1.0
#: Sessions 1, 6, 11, ... are sent as 8 kHz mu-law, like a telephony gateway would (two of ten).
PHONE_EVERY = 5
#: Through ``hopline gateway`` every other session is a Twilio call (mu-law 8 kHz), the rest ``/v1/stream``.
GATEWAY_PHONE_EVERY = 2
#: The tenant the demo's gateway sessions stream as; its token is made per run.
GATEWAY_TENANT = "demo"
#: Seconds of audio in the warm-up session that runs through every service before the measured ones.
WARM_UP_S = 2.0
#: Queue-wait and e2e figures "after settling" leave out the first SETTLE_S seconds of a run.
SETTLE_S = 10.0


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # int16, 16 kHz mono
    text: str
    name: str
    #: End time (s) of each word of ``normalize(text)``; empty when the manifest has no word times.
    word_ends_s: tuple[float, ...] = ()

    @property
    def seconds(self) -> float:
        return len(self.audio) / MODEL_RATE


@dataclass(frozen=True)
class SessionPlan:
    """One demo session: a playlist of utterances with gaps, and how it is encoded on the wire."""

    session_id: str
    utterances: tuple[Utterance, ...]
    codec: str
    sample_rate: int
    #: Seconds after the run's other sessions start that this one joins (a burst).
    start_offset_s: float = 0.0

    @property
    def reference(self) -> str:
        return " ".join(u.text for u in self.utterances)

    def timed_reference(self) -> list[tuple[str, float]] | None:
        """Reference words with their end time in the session's stream (s), or None without word times."""
        words: list[tuple[str, float]] = []
        offset = 0.0
        for utterance in self.utterances:
            tokens = normalize(utterance.text)
            if len(utterance.word_ends_s) != len(tokens):
                return None
            words += [(word, offset + end) for word, end in zip(tokens, utterance.word_ends_s, strict=True)]
            offset += utterance.seconds + GAP_S
        return words

    def audio(self) -> np.ndarray:
        """int16 mono at 16 kHz: the utterances with GAP_S of silence after each."""
        gap = np.zeros(int(GAP_S * MODEL_RATE), dtype=np.int16)
        return np.concatenate([part for u in self.utterances for part in (u.audio, gap)])


def load_samples(directory: Path = SAMPLES_DIR) -> list[Utterance]:
    """The utterances of ``samples/manifest.json``: ``{"samples": [{"file", "text", "words": [...]}]}``.

    ``words`` (optional) gives each reference word's ``end_s``; with it the demo measures word
    emission latency.
    """
    manifest_path = directory / "manifest.json"
    if not manifest_path.exists():
        raise CliError(f"no {manifest_path}: the demo streams the bundled samples")
    try:
        entries = json.loads(manifest_path.read_text())["samples"]
        utterances = [_utterance(directory, entry) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CliError(f"cannot read {manifest_path}: {type(exc).__name__} {exc}") from exc
    if not utterances:
        raise CliError(f"{manifest_path} lists no samples")
    return utterances


def _utterance(directory: Path, entry: dict[str, Any]) -> Utterance:
    text = str(entry["text"])
    word_ends: tuple[float, ...] = ()
    words = entry.get("words") or []
    if [normalize(str(w["word"])) for w in words] == [[token] for token in normalize(text)]:
        word_ends = tuple(float(w["end_s"]) for w in words)
    return Utterance(read_wav(directory / entry["file"], MODEL_RATE), text, str(entry["file"]), word_ends)


def plan_sessions(
    samples: Sequence[Utterance],
    sessions: int,
    duration_s: float | None,
    run_id: str,
    phone_every: int = PHONE_EVERY,
) -> list[SessionPlan]:
    """Session i plays the samples from i on, round robin, until ``duration_s`` (one utterance at least);
    sessions 1, 1 + ``phone_every``, ... are 8 kHz mu-law."""
    plans = []
    for index in range(sessions):
        playlist: list[Utterance] = []
        seconds = 0.0
        position = index
        while not playlist or (duration_s is not None and seconds < duration_s):
            utterance = samples[position % len(samples)]
            playlist.append(utterance)
            seconds += utterance.seconds + GAP_S
            position += 1
            if duration_s is None:
                break
        phone = index % phone_every == 1
        plans.append(
            SessionPlan(
                session_id=f"{run_id}-s{index:02d}",
                utterances=tuple(playlist),
                codec="mulaw" if phone else "pcm16",
                sample_rate=8000 if phone else MODEL_RATE,
            )
        )
    return plans


@dataclass(frozen=True)
class Received:
    """One transcript as the client got it."""

    received_ms: float
    kind: str
    segment: int
    text: str
    first_capture_ts_ms: float
    hop_seq: int


@dataclass
class SessionOutcome:
    finals: dict[int, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)


class TranscriptClient:
    """Follows the transcripts and latency topics like a downstream client; thread-safe snapshots.

    Measures delivery (egress: published -> received here) and keeps every session's final
    segments (one per segment number, so a repeated final after a restart counts once).
    """

    def __init__(self, settings: Settings, ignore: frozenset[str] = frozenset()) -> None:
        self._settings = settings
        self._ignore = ignore
        self._consumer = open_reader(settings, "demo-client", [settings.topics.transcripts, settings.topics.latency])
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.sessions: dict[str, SessionOutcome] = {}
        self.egress_ms: list[float] = []
        self.delivered_e2e_ms: list[float] = []
        self.latency: list[tuple[float, float, float, str]] = []  # (event_ts_ms, e2e_ms, queue_wait_ms, session)
        self.last_message_s = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="demo-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.05)
            if message is None or message.error() is not None:
                continue
            received = now_ms()
            with self._lock:
                self.last_message_s = time.monotonic()
                if message.topic() == self._settings.topics.latency:
                    self._take_latency(message.value())
                else:
                    self._take_transcript(message.value(), received)

    def _take_latency(self, value: bytes | None) -> None:
        try:
            event = contracts.LatencyEvent.decode(value)
        except contracts.ContractError:
            return
        if event.session_id not in self._ignore:
            self.latency.append((event.event_ts_ms, event.e2e_ms, event.queue_wait_ms, event.session_id))

    def _take_transcript(self, value: bytes | None, received_ms: float) -> None:
        try:
            transcript = contracts.Transcript.decode(value)
        except contracts.ContractError:
            return
        outcome = self.sessions.setdefault(transcript.session_id, SessionOutcome())
        if transcript.session_id not in self._ignore:
            self.egress_ms.append(received_ms - transcript.published_ts_ms)
            self.delivered_e2e_ms.append(received_ms - transcript.first_capture_ts_ms)
        if transcript.kind == "final":
            outcome.finals[transcript.segment] = transcript.text
        outcome.received.append(
            Received(
                received_ms,
                transcript.kind,
                transcript.segment,
                transcript.text,
                transcript.first_capture_ts_ms,
                transcript.hop_seq,
            )
        )

    def progress(self, recent_s: float = 10.0, live_s: float = 2.0) -> tuple[int, int, float, float]:
        """(sessions with a hop in the last ``live_s``, hops so far, e2e p95 and queue_wait p95 over ``recent_s``)."""
        now = now_ms()
        with self._lock:
            recent = [(e2e, qw) for ts, e2e, qw, _ in self.latency if ts >= now - recent_s * 1000.0]
            live = {session for ts, _, _, session in self.latency if ts >= now - live_s * 1000.0}
            hops = len(self.latency)
        return len(live), hops, percentile([r[0] for r in recent], 95), percentile([r[1] for r in recent], 95)

    def transcript(self, session_id: str) -> str:
        with self._lock:
            outcome = self.sessions.get(session_id)
            return " ".join(outcome.finals[k] for k in sorted(outcome.finals)) if outcome else ""

    def received(self, session_id: str) -> list[Received]:
        with self._lock:
            outcome = self.sessions.get(session_id)
            return list(outcome.received) if outcome else []

    def has_final(self, session_id: str) -> bool:
        with self._lock:
            outcome = self.sessions.get(session_id)
            return bool(outcome and outcome.finals)

    def quiet_for(self) -> float:
        with self._lock:
            return time.monotonic() - self.last_message_s

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._consumer.close()


class Outcomes(Protocol):
    """What the report takes from the sessions' client: :class:`TranscriptClient` or :class:`GatewayOutcomes`."""

    egress_ms: list[float]
    delivered_e2e_ms: list[float]

    def received(self, session_id: str) -> list[Received]: ...

    def transcript(self, session_id: str) -> str: ...


def client_session(plan: SessionPlan) -> ClientSession:
    """A plan as a gateway client streams it: mu-law 8 kHz as a Twilio call, anything else on ``/v1/stream``."""
    samples = resample_to(plan.audio(), MODEL_RATE, plan.sample_rate)
    twilio = (plan.codec, plan.sample_rate) == (TWILIO_FORMAT.codec, TWILIO_FORMAT.sample_rate)
    return ClientSession(
        name=plan.session_id,
        protocol=TWILIO if twilio else STREAM,
        payload=encode(samples, plan.codec),
        codec=plan.codec,
        sample_rate=plan.sample_rate,
        start_offset_s=plan.start_offset_s,
    )


class GatewayIngress:
    """The plans streamed as WebSocket clients of a ``hopline gateway``; results kept by plan id."""

    def __init__(self, url: str, tenant: str, token: str) -> None:
        self.url = url
        self.client = GatewayClient(url, tenant, token)
        self.results: dict[str, StreamResult] = {}

    def stream(self, plans: Sequence[SessionPlan], stop: threading.Event) -> set[str]:
        """Stream ``plans`` in real time until each one's transcripts settle; returns the plans not refused."""
        results = self.client.run([client_session(plan) for plan in plans], stop)
        self.results.update({result.name: result for result in results})
        return {result.name for result in results if not result.refused}

    def progress(self) -> str:
        started = self.client.results
        return f"sessions {len(started)} transcripts received {sum(len(r.messages) for r in started)}"


class GatewayOutcomes:
    """The gateway clients' view of the sessions, by plan id: what was shown on their sockets, and when.

    Egress is gateway socket delivery here: published -> received by the WebSocket client.
    """

    def __init__(self, results: Mapping[str, StreamResult]) -> None:
        self._results = results
        messages = [m for result in results.values() for m in result.messages]
        self.egress_ms = [m.received_ms - m.published_ts_ms for m in messages]
        self.delivered_e2e_ms = [m.received_ms - m.first_capture_ts_ms for m in messages]
        #: When each session's first sample counts as captured, on the client's clock.
        self.starts = {plan: r.started_ms for plan, r in results.items() if r.started_ms is not None}
        self.errors = [r.error for r in results.values() if r.error]

    def received(self, session_id: str) -> list[Received]:
        result = self._results.get(session_id)
        return [
            Received(m.received_ms, m.event, m.segment, m.text, m.first_capture_ts_ms, m.hop_seq)
            for m in (result.messages if result else [])
        ]

    def transcript(self, session_id: str) -> str:
        result = self._results.get(session_id)
        return result.transcript() if result else ""


def word_emission_latencies(
    plan: SessionPlan,
    received: Sequence[Received],
    hop_ms: float,
    slack: int = 20,
    start_ms: float | None = None,
) -> list[float]:
    """Per correctly transcribed word: ms from the word's end in the stream to its first appearance at the client.

    A word counts when the final transcript has it right; it "appears" in the first transcript
    (partial or final) whose words align it correctly. A segment's transcripts are aligned with
    the reference from where the session's earlier finals end (``slack`` words of room), so the
    work per transcript stays small however long the session is. The stream's start is
    ``start_ms`` when the client knows it (it sent the audio), else recovered from the hops.
    """
    reference = plan.timed_reference()
    if reference is None or not received:
        return []
    words = [word for word, _ in reference]
    start_ms = stream_start_ms(received, hop_ms) if start_ms is None else start_ms
    finals: dict[int, list[str]] = {}
    covered_after: dict[int, int] = {}  # segment -> reference words its final and the earlier ones cover
    first_seen: dict[int, float] = {}
    previous: tuple[int, list[str]] | None = None
    for record in sorted(received, key=lambda r: r.received_ms):
        earlier = [segment for segment in covered_after if segment < record.segment]
        base = covered_after[max(earlier)] if earlier else 0
        segment_words = normalize(record.text)
        window = words[base : base + 2 * len(segment_words) + slack]
        matched, covered = align(window, segment_words, prefix=True)
        if record.kind == "final":
            finals[record.segment] = segment_words
            covered_after[record.segment] = base + covered
        if previous == (record.segment, segment_words):
            continue
        previous = (record.segment, segment_words)
        for index in matched:
            first_seen.setdefault(base + index, record.received_ms)
    final_words = [w for segment in sorted(finals) for w in finals[segment]]
    correct = matched_reference_words(words, final_words)
    return [first_seen[i] - (start_ms + reference[i][1] * 1000.0) for i in sorted(correct) if i in first_seen]


def stream_start_ms(received: Sequence[Received], hop_ms: float) -> float:
    """When the session's first sample was captured, from its hops (hop k's first frame: start + k x hop)."""
    return min(r.first_capture_ts_ms - r.hop_seq * hop_ms for r in received)


def final_latencies(
    plan: SessionPlan,
    received: Sequence[Received],
    hop_ms: float,
    slack: int = 20,
    start_ms: float | None = None,
) -> list[float]:
    """Per final with words: ms from the end of speech it closes (its last reference word's end) to its arrival.

    A final covers the reference words its alignment reaches from where the earlier finals end (as in
    :func:`word_emission_latencies`); a segment's repeated final (after a restart) counts once. The
    figure includes the endpoint's silence (``endpoint_silence_ms``): a final waits for it by design.
    """
    reference = plan.timed_reference()
    if reference is None or not received:
        return []
    words = [word for word, _ in reference]
    start_ms = stream_start_ms(received, hop_ms) if start_ms is None else start_ms
    covered_after: dict[int, int] = {}
    latencies = []
    for record in sorted((r for r in received if r.kind == "final"), key=lambda r: r.received_ms):
        if record.segment in covered_after:
            continue
        earlier = [segment for segment in covered_after if segment < record.segment]
        base = covered_after[max(earlier)] if earlier else 0
        segment_words = normalize(record.text)
        _matched, covered = align(words[base : base + 2 * len(segment_words) + slack], segment_words, prefix=True)
        covered_after[record.segment] = base + covered
        if segment_words and covered:
            latencies.append(record.received_ms - (start_ms + reference[base + covered - 1][1] * 1000.0))
    return latencies


@dataclass(frozen=True)
class RunOptions:
    sessions: int = 10
    duration_s: float | None = None
    slowdown: float = 1.0
    slowdown_at: SlowdownWindow | None = None
    burst: Burst | None = None
    controller: bool = True
    samples_dir: Path = SAMPLES_DIR
    ready_timeout_s: float = 180.0
    #: Use the settings' bootstrap servers (Apache Kafka) instead of starting an embedded broker.
    external_broker: bool = False
    #: The sessions enter through a ``hopline gateway`` child as WebSocket clients (half Twilio calls).
    gateway: bool = False
    #: The sessions enter through this running gateway (and its pipeline): no broker or services, client figures only.
    gateway_url: str | None = None
    #: Entered after the warm-up with the running services and left before they stop (a soak's RSS sampler).
    watch: Callable[[Mapping[str, ServiceProcess]], AbstractContextManager[object]] | None = None
    #: Called with the run's settings once the figures are read, while the broker still holds the run's topics.
    after_run: Callable[[Settings], None] | None = None

    @property
    def through_gateway(self) -> bool:
        return self.gateway or self.gateway_url is not None


@dataclass
class DemoResult:
    options: RunOptions
    report: LatencyReport
    events: list[contracts.LatencyEvent]
    settled: dict[str, float | None]
    egress_ms_p50: float
    egress_ms_p95: float
    delivered_e2e_ms_p50: float
    delivered_e2e_ms_p95: float
    word_emission_ms: list[float]
    wer: float
    examples: list[tuple[str, str, str, float]]  # session, reference, hypothesis, WER
    exit_codes: dict[str, int | None]
    streamed_s: float
    refused_sessions: int
    over_time: dict[str, Any]
    produce: dict[str, dict[str, Any]]
    slowdown_ended_ms: float | None = None
    #: Per level, the compute the controller predicts it saves (the workers' measured knob savings).
    predicted_saved_pct: dict[str, float] = field(default_factory=dict)
    #: End of speech -> its final at the client, per final with words.
    final_ms: list[float] = field(default_factory=list)
    #: Gateway sessions that failed (a socket error or an unexpected close), one line each.
    errors: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        figures = self.report.figures()
        produce = self.produce
        levels = [d.level for d in self.report.decisions]
        figures.update(
            {
                "sessions": self.options.sessions,
                "slowdown": self.options.slowdown,
                "controller": self.options.controller,
                "wer": round(self.wer, 4),
                "egress_ms_p50": _rounded(self.egress_ms_p50),
                "egress_ms_p95": _rounded(self.egress_ms_p95),
                "delivered_e2e_ms_p50": _rounded(self.delivered_e2e_ms_p50),
                "delivered_e2e_ms_p95": _rounded(self.delivered_e2e_ms_p95),
                "word_emission_ms_p50": _rounded(percentile(self.word_emission_ms, 50)),
                "word_emission_ms_p95": _rounded(percentile(self.word_emission_ms, 95)),
                "word_emission_words": len(self.word_emission_ms),
                "max_level": max(levels, default=0),
                "final_level": levels[-1] if levels else 0,
                "e2e_ms_p95_after_10s": self.settled.get("e2e_ms_p95"),
                "slowdown_at": asdict(self.options.slowdown_at) if self.options.slowdown_at else None,
                "burst": asdict(self.options.burst) if self.options.burst else None,
                "recovered_to_level0_s": recovered_to_level0_s(self.report.decisions, self.slowdown_ended_ms),
                "compute_saved_pct": compute_saved_pct(self.events),
                "compute_saved_pct_predicted": self.predicted_saved_pct,
                "streamed_s": round(self.streamed_s, 1),
                "refused_sessions": self.refused_sessions,
                "exit_codes": self.exit_codes,
                **self.over_time,
                "produce_batches_per_s": round(
                    sum(s.get("produce_batches_per_s", 0.0) for s in self.produce.values()), 1
                ),
                "produce_batches_per_s_by_service": {
                    role: s.get("produce_batches_per_s") for role, s in sorted(produce.items())
                },
                **{f"settled_{key}": value for key, value in self.settled.items()},
            }
        )
        if self.options.through_gateway:
            figures.update(
                {
                    "ingress": "gateway",
                    "final_ms_p50": _rounded(percentile(self.final_ms, 50)),
                    "final_ms_p95": _rounded(percentile(self.final_ms, 95)),
                    "finals": len(self.final_ms),
                    "errors": len(self.errors),
                    "error_examples": self.errors[:3],
                }
            )
        return figures


def recovered_to_level0_s(decisions: Sequence[contracts.ControlCommand], since_ms: float | None) -> float | None:
    """Seconds from ``since_ms`` (the end of a slowdown) until level 0 was in force again; None if it never was.

    0 when level 0 was in force at ``since_ms`` already; None also without a ``since_ms``.
    """
    if since_ms is None:
        return None
    ordered = sorted(decisions, key=lambda d: (d.issued_ts_ms, d.seq))
    before = [d for d in ordered if d.issued_ts_ms <= since_ms]
    if not before or before[-1].level == 0:
        return 0.0
    back = next((d for d in ordered if d.issued_ts_ms > since_ms and d.level == 0), None)
    return None if back is None else round((back.issued_ts_ms - since_ms) / 1000.0, 1)


def compute_saved_pct(events: Sequence[contracts.LatencyEvent]) -> dict[str, float | None]:
    """Per level, the recognizer time per hop served, as % saved against level 0 of the same run.

    A hop's share of its batch's inference time is ``gpu_infer / batch_size``; the hops an event
    serves are those since the session's previous event: itself and the hops not run at an
    inference stride (they cost nothing by design), but not the hops skipped as stale (load the
    worker could not carry, which would flatter an overloaded level). Compared within one run, so
    a whole-run slowdown cancels; a slowdown that covers only some levels does not.
    """
    by_session: dict[str, list[contracts.LatencyEvent]] = {}
    for event in events:
        by_session.setdefault(event.session_id, []).append(event)
    cost: dict[int, float] = {}
    hops: dict[int, int] = {}
    for session_events in by_session.values():
        previous = -1
        for event in sorted(session_events, key=lambda e: e.hop_seq):
            level = event.control_level
            cost[level] = cost.get(level, 0.0) + event.gpu_infer_ms / max(event.batch_size, 1)
            hops[level] = hops.get(level, 0) + max(event.hop_seq - previous - event.skipped_before, 1)
            previous = event.hop_seq
    per_hop = {level: cost[level] / hops[level] for level in cost}
    base = per_hop.get(0)
    return {
        str(level): None if not base else round(100.0 * (1.0 - per_hop[level] / base), 1) for level in sorted(per_hop)
    }


def _ms(value: float) -> str:
    return "- ms" if value != value else f"{value:.0f} ms"


def _rounded(value: float) -> float | None:
    return None if value != value else round(value, 2)


def _status(stream: TextIO) -> Callable[[str], None]:
    def say(line: str) -> None:
        print(line, file=stream, flush=True)

    return say


@contextmanager
def running_services(
    settings: Settings, options: RunOptions, say: Callable[[str], None]
) -> Iterator[dict[str, ServiceProcess]]:
    """Start the services in pipeline order, wait until each is ready; SIGTERM them all on the way out."""
    roles = ["windower", "worker", "assembler"] + (["controller"] if options.controller else [])
    roles += ["gateway"] if options.gateway else []
    services: dict[str, ServiceProcess] = {}
    try:
        for role in roles:
            services[role] = ServiceProcess(settings, role)
        for role, service in services.items():
            started = time.monotonic()
            service.wait_ready(options.ready_timeout_s)
            say(f"  {role} ready ({time.monotonic() - started:.1f} s)")
        yield services
    finally:
        codes = stop_all(list(services.values()))
        for role, code in zip(services, codes, strict=True):
            if code < 0:
                say(f"  {role} ignored SIGTERM and was killed")


#: Streams plans in real time until ``stop``; returns the ids of the plans admitted.
Streamer = Callable[[Sequence[SessionPlan], threading.Event], Collection[str]]


def stream_sessions(producer: AudioProducer, plans: Sequence[SessionPlan], stop: threading.Event) -> dict[str, int]:
    """Stream every plan concurrently in real time; returns frames sent per admitted session.

    Admission control may refuse sessions (degradation level 5): they are left out of the result.
    Reuse one producer across calls: a new idempotent producer's first frames wait for its
    producer id, which would show up as ``net`` latency on every session's first hops.
    """
    streams = [
        AudioStream(
            plan.session_id,
            plan.audio(),
            plan.codec,
            plan.sample_rate,
            source_rate=MODEL_RATE,
            start_offset_s=plan.start_offset_s,
        )
        for plan in plans
    ]
    sent = producer.stream_many(streams, realtime=True, stop=stop)
    producer.flush()
    return sent


def run_demo(settings: Settings, options: RunOptions, say: Callable[[str], None] | None = None) -> DemoResult:
    """One full run on a fresh embedded broker; returns the figures (the caller prints them)."""
    say = say or _status(sys.stderr)
    samples = load_samples(options.samples_dir)
    run_id = uuid.uuid4().hex[:6]
    phone_every = GATEWAY_PHONE_EVERY if options.through_gateway else PHONE_EVERY
    plans = plan_sessions(samples, options.sessions, options.duration_s, run_id, phone_every)
    if options.burst is not None:
        joining = options.sessions + options.burst.sessions
        extra = plan_sessions(samples, joining, options.duration_s, run_id, phone_every)
        plans += [replace(plan, start_offset_s=options.burst.at_s) for plan in extra[options.sessions :]]
    if options.gateway_url is not None:
        return _run_against_gateway(settings, options, options.gateway_url, plans, say)
    schedule = FaultSchedule(options.slowdown_at)
    settings = settings.override(
        worker={"fault_slowdown": options.slowdown, "fault_slowdown_file": schedule.path_setting}
    )
    if options.gateway:
        # A token made for this run, handed to the gateway child through its settings (HOPLINE_GATEWAY__TOKENS).
        tokens = {GATEWAY_TENANT: secrets.token_urlsafe(24)}
        settings = settings.override(gateway={"host": "127.0.0.1", "port": _free_port(), "tokens": tokens})
    with broker_for(settings, options.external_broker) as bootstrap:
        topics: dict[str, Any] = {"prefix": f"demo{run_id}"}
        if not options.external_broker:
            topics["partitions"] = settings.broker.topic_partitions
        settings = settings.override(kafka={"bootstrap_servers": bootstrap}, topics=topics)
        create_topics(settings)
        say(
            f"hopline demo: {'Kafka' if options.external_broker else 'embedded broker'} {bootstrap}, "
            f"{settings.topics.partitions} partitions, {len(plans)} sessions "
            f"({sum(p.codec == 'mulaw' for p in plans)} as 8 kHz mu-law), slowdown {options.slowdown:g}x, "
            f"controller {'on' if options.controller else 'off'}"
            + (", through hopline gateway (WebSocket clients: Twilio calls and /v1/stream)" if options.gateway else "")
        )
        warm_up = _warm_up_plan(samples, run_id)
        warm_up_id = warm_up.session_id
        if options.gateway:
            # A Twilio call: its session id is known before the gateway names it, so its events can be left out.
            warm_up = replace(warm_up, codec=TWILIO_FORMAT.codec, sample_rate=TWILIO_FORMAT.sample_rate)
            warm_up_id = gateway_session_id(GATEWAY_TENANT, warm_up.session_id)
        client = TranscriptClient(settings, ignore=frozenset({warm_up_id}))
        follower = ControlFollower(settings).start()
        producer: AudioProducer | None = None
        ingress: GatewayIngress | None = None
        stream: Streamer
        if options.gateway:
            url = f"ws://{settings.gateway.host}:{settings.gateway.port}"
            ingress = GatewayIngress(url, GATEWAY_TENANT, settings.gateway.tokens[GATEWAY_TENANT])
            stream = ingress.stream
        else:
            producer = AudioProducer(settings, control=follower)
            stream = partial(stream_sessions, producer)
        exit_codes: dict[str, int | None] = {}
        produce: dict[str, dict[str, Any]] = {}
        try:
            with running_services(settings, options, say) as services:
                _warm_up(stream, warm_up, warm_up_id, client, say)
                with options.watch(services) if options.watch else nullcontext():
                    streamed_s, stream_start_ms, refused = _stream_with_progress(
                        stream, plans, _pipeline_progress(client, follower, len(plans)), services, say, schedule
                    )
                    _drain(client, say)
            exit_codes = {role: service.process.returncode for role, service in services.items()}
            produce = {role: service.stats for role, service in services.items()}
        finally:
            delivery = producer.close() if producer is not None else None
            if producer is not None:
                produce["producer (demo)"] = PRODUCE_STATS.summary()
            del producer  # destroy the client before the broker stops, not after
            follower.close()
            client.close()
            schedule.close()
        if delivery is not None and (delivery.failed or delivery.pending):
            say(f"frames: {delivery.failed} failed, {delivery.pending} undelivered: {delivery.errors[:3]}")
        events, invalid = read_events(settings, None)
        events = [e for e in events if e.session_id != warm_up_id]
        probes = read_probes(settings, None)
        report = build_report(events, read_decisions(settings, None), invalid, probes, settings.probe)
        if options.after_run is not None:
            options.after_run(settings)
        admitted = [plan for plan in plans if plan.session_id not in refused]
        outcomes: Outcomes = client
        starts: Mapping[str, float] = {}
        failures: list[str] = []
        if ingress is not None:
            gateway = GatewayOutcomes({plan.session_id: ingress.results[plan.session_id] for plan in admitted})
            outcomes, starts, failures = gateway, gateway.starts, gateway.errors
        return _result(
            options,
            report,
            events,
            outcomes,
            admitted,
            exit_codes,
            produce,
            probes,
            streamed_s,
            stream_start_ms,
            len(refused),
            settings,
            schedule.ended_ms,
            starts=starts,
            failures=failures,
        )


def _run_against_gateway(
    settings: Settings, options: RunOptions, url: str, plans: Sequence[SessionPlan], say: Callable[[str], None]
) -> DemoResult:
    """``--gateway-url``: the plans as clients of a running gateway and its pipeline; the client's figures only.

    The tenant and its token come from the settings (``HOPLINE_GATEWAY__TOKENS``, one tenant).
    """
    if len(settings.gateway.tokens) != 1:
        raise CliError('--gateway-url streams as one tenant: set HOPLINE_GATEWAY__TOKENS=\'{"tenant":"token"}\'')
    [(tenant, token)] = settings.gateway.tokens.items()
    ingress = GatewayIngress(url, tenant, token)
    say(f"hopline demo: {len(plans)} sessions through the gateway at {url} as tenant {tenant}")
    streamed_s, stream_start_ms, refused = _stream_with_progress(
        ingress.stream, plans, ingress.progress, {}, say, FaultSchedule(None)
    )
    admitted = [plan for plan in plans if plan.session_id not in refused]
    gateway = GatewayOutcomes({plan.session_id: ingress.results[plan.session_id] for plan in admitted})
    return _result(
        options,
        build_report([]),
        [],
        gateway,
        admitted,
        {},
        {},
        [],
        streamed_s,
        stream_start_ms,
        len(refused),
        settings,
        starts=gateway.starts,
        failures=gateway.errors,
    )


def _free_port() -> int:
    """A loopback port free now, for the gateway child (it is told the port rather than asked for it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FaultSchedule:
    """Drives the worker's slowdown file for ``--slowdown-at``: K inside the window, 1 outside it."""

    def __init__(self, window: SlowdownWindow | None) -> None:
        self.window = window
        self.path = Path(tempfile.mkdtemp(prefix="hopline-fault-")) / "slowdown" if window else None
        self._factor = 1.0
        #: When the slowdown ended (epoch ms), once it has.
        self.ended_ms: float | None = None
        self._write(1.0)

    @property
    def path_setting(self) -> str | None:
        return str(self.path) if self.path else None

    def tick(self, elapsed_s: float) -> None:
        if self.window is None:
            return
        factor = self.window.factor_at(elapsed_s)
        if factor != self._factor:
            if factor < self._factor:
                self.ended_ms = now_ms()
            self._write(factor)

    def _write(self, factor: float) -> None:
        self._factor = factor
        if self.path is not None:
            self.path.write_text(f"{factor:g}\n")

    def close(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path.parent, ignore_errors=True)


def _warm_up_plan(samples: Sequence[Utterance], run_id: str, seconds: float = WARM_UP_S) -> SessionPlan:
    first = samples[0]
    clip = Utterance(first.audio[: int(seconds * MODEL_RATE)], "", f"{first.name} (warm-up)")
    return SessionPlan(f"{run_id}-warmup", (clip,), "pcm16", MODEL_RATE)


def _warm_up(
    stream: Streamer,
    plan: SessionPlan,
    session: str,
    client: TranscriptClient,
    say: Callable[[str], None],
    limit_s: float = 20.0,
) -> None:
    """One short session through every service first (lazy initialisation), left out of the figures;
    ``session`` is its id on the topics."""
    started = time.monotonic()
    stream([plan], threading.Event())
    deadline = time.monotonic() + limit_s
    while not client.has_final(session) and time.monotonic() < deadline:
        time.sleep(0.1)
    say(f"  warm-up session done ({time.monotonic() - started:.1f} s; not in the figures)")


def _pipeline_progress(client: TranscriptClient, follower: ControlFollower, sessions: int) -> Callable[[], str]:
    """The progress line's figures from the latency topic and the control topic."""

    def line() -> str:
        live, hops, e2e_p95, queue_p95 = client.progress()
        knobs = follower.knobs
        return (
            f"sessions {live}/{sessions} hops {hops} "
            f"e2e p95 {_ms(e2e_p95)} queue_wait p95 {_ms(queue_p95)} (last 10 s) "
            f"level {knobs.level} (window {knobs.window_secs:g} s, beam {knobs.beam})"
        )

    return line


def _stream_with_progress(
    stream: Streamer,
    plans: Sequence[SessionPlan],
    progress: Callable[[], str],
    services: dict[str, ServiceProcess],
    say: Callable[[str], None],
    schedule: FaultSchedule,
) -> tuple[float, float, list[str]]:
    stop = threading.Event()
    failure: list[BaseException] = []
    admitted: set[str] = set()

    def produce() -> None:
        try:
            admitted.update(stream(plans, stop))
        except Exception as exc:
            failure.append(exc)

    longest = max(len(p.audio()) for p in plans) / MODEL_RATE
    say(f"streaming {len(plans)} sessions of up to {longest:.1f} s in real time")
    start_ms = now_ms()
    started = time.monotonic()
    streamer = threading.Thread(target=produce, name="demo-producer", daemon=True)
    streamer.start()
    try:
        while streamer.is_alive():
            streamer.join(0.5 if schedule.window else 1.0)
            schedule.tick(time.monotonic() - started)
            for role, service in services.items():
                if not service.running:
                    raise CliError(f"{role} exited with {service.process.returncode}: {service.lines[-1:]}")
            say(f"  t={time.monotonic() - started:5.1f}s {progress()}")
    finally:
        stop.set()
        streamer.join(5.0)
    if failure:
        raise CliError(f"streaming failed: {failure[0]}")
    refused = [plan.session_id for plan in plans if plan.session_id not in admitted]
    if refused:
        say(f"admission control refused {len(refused)} sessions")
    return time.monotonic() - started, start_ms, refused


def _drain(client: TranscriptClient, say: Callable[[str], None], quiet_s: float = 2.0, limit_s: float = 30.0) -> None:
    """Let the last hops through: wait until the output topics are quiet for ``quiet_s``."""
    deadline = time.monotonic() + limit_s
    while client.quiet_for() < quiet_s and time.monotonic() < deadline:
        time.sleep(0.2)
    say(f"streams ended; output quiet for {client.quiet_for():.1f} s")


def _result(
    options: RunOptions,
    report: LatencyReport,
    events: Sequence[contracts.LatencyEvent],
    client: Outcomes,
    plans: Sequence[SessionPlan],
    exit_codes: dict[str, int | None],
    produce: dict[str, dict[str, Any]],
    probes: Sequence[contracts.BrokerProbe],
    streamed_s: float,
    stream_start_ms: float,
    refused: int,
    settings: Settings,
    slowdown_ended_ms: float | None = None,
    starts: Mapping[str, float] | None = None,
    failures: Sequence[str] = (),
) -> DemoResult:
    """The run's figures; ``starts``: sessions' stream starts known to their client (else recovered from hops)."""
    starts = starts or {}
    settled_from = stream_start_ms + SETTLE_S * 1000.0
    settled = [e for e in events if e.event_ts_ms >= settled_from]
    settled_figures: dict[str, float | None] = {
        "events": float(len(settled)),
        "queue_wait_ms_p95": _rounded(percentile([e.queue_wait_ms for e in settled], 95)),
        "e2e_ms_p95": _rounded(percentile([e.e2e_ms for e in settled], 95)),
    }
    total_errors = total_words = 0
    examples = []
    emission: list[float] = []
    final_ms: list[float] = []
    for plan in plans:
        received = client.received(plan.session_id)
        start_ms = starts.get(plan.session_id)
        emission += word_emission_latencies(plan, received, settings.audio.hop_ms, start_ms=start_ms)
        final_ms += final_latencies(plan, received, settings.audio.hop_ms, start_ms=start_ms)
        hypothesis = client.transcript(plan.session_id)
        errors, words = word_errors(plan.reference, hypothesis)
        total_errors += errors
        total_words += words
        examples.append((plan.session_id, plan.reference, hypothesis, errors / words if words else 0.0))
    return DemoResult(
        options=options,
        report=report,
        events=list(events),
        settled=settled_figures,
        egress_ms_p50=percentile(client.egress_ms, 50),
        egress_ms_p95=percentile(client.egress_ms, 95),
        delivered_e2e_ms_p50=percentile(client.delivered_e2e_ms, 50),
        delivered_e2e_ms_p95=percentile(client.delivered_e2e_ms, 95),
        word_emission_ms=emission,
        wer=total_errors / total_words if total_words else 0.0,
        examples=examples,
        exit_codes=exit_codes,
        streamed_s=streamed_s,
        refused_sessions=refused,
        over_time=over_time(events, probes, stream_start_ms, stream_start_ms + streamed_s * 1000.0),
        produce=produce,
        slowdown_ended_ms=slowdown_ended_ms,
        predicted_saved_pct=predicted_saved_pct(settings),
        final_ms=final_ms,
        errors=list(failures),
    )


def predicted_saved_pct(settings: Settings) -> dict[str, float]:
    """Per level, % of level 0's compute the controller expects it to save, priced as the controller does."""
    book = CapabilityBook()
    for message in read_to_end(settings, "capabilities", [settings.topics.capabilities]):
        book.apply(message.value())
    costs = level_costs(ladder(settings), book.savings(), settings.audio.hop_ms)
    return {str(level): round(100.0 * (1.0 - cost), 1) for level, cost in enumerate(costs)}


def over_time(
    events: Sequence[contracts.LatencyEvent],
    probes: Sequence[contracts.BrokerProbe],
    start_ms: float,
    end_ms: float,
    span_s: float = 60.0,
) -> dict[str, Any]:
    """Does the pipeline last? e2e p95 of the first and the last ``span_s`` of streaming and per span, and the
    broker probe's round-trip p95 over the last ``span_s``."""
    span_ms = span_s * 1000.0
    last_rtts = [p.previous_rtt_ms for p in probes if p.previous_rtt_ms >= 0 and p.sent_ts_ms >= end_ms - span_ms]

    def p95(low: float, high: float) -> float | None:
        return _rounded(percentile([e.e2e_ms for e in events if low <= e.event_ts_ms < high], 95))

    spans = max(1, math.ceil((end_ms - start_ms) / span_ms))
    return {
        "e2e_ms_p95_first_60s": p95(start_ms, start_ms + span_ms),
        "e2e_ms_p95_last_60s": p95(end_ms - span_ms, end_ms),
        "e2e_ms_p95_per_minute": [p95(start_ms + i * span_ms, start_ms + (i + 1) * span_ms) for i in range(spans)],
        "broker_probe_ms_p95_last_60s": _rounded(percentile(last_rtts, 95)),
    }


def format_result(result: DemoResult, examples: int = 4) -> str:
    lines = [format_report(result.report)]
    if len({e.control_level for e in result.events}) > 1:
        lines.append(format_groups("level", group_reports(result.events, "level")))
    lines.append(
        f"delivery to the client (egress): p50 {result.egress_ms_p50:.1f} ms, p95 {result.egress_ms_p95:.1f} ms; "
        f"e2e as delivered (capture -> client, transcripts sent): p50 {result.delivered_e2e_ms_p50:.0f} ms, "
        f"p95 {result.delivered_e2e_ms_p95:.0f} ms"
    )
    if result.word_emission_ms:
        emission = result.word_emission_ms
        lines.append(
            f"word emission (correct words, word end -> first shown to the client): "
            f"p50 {percentile(emission, 50):.0f} ms, p95 {percentile(emission, 95):.0f} ms ({len(emission)} words)"
        )
    if result.options.through_gateway:
        finals = result.final_ms
        lines.append(
            "through hopline gateway (the client is the sessions' WebSocket): end of speech -> final "
            f"(endpoint silence included) p50 {_ms(percentile(finals, 50))}, p95 {_ms(percentile(finals, 95))} "
            f"({len(finals)} finals); {len(result.errors)} sessions failed"
            + (f" ({result.errors[0]})" if result.errors else "")
        )
    settled = result.settled
    if settled["events"]:
        lines.append(
            f"after the first {SETTLE_S:.0f} s: queue_wait p95 {settled['queue_wait_ms_p95']} ms, "
            f"e2e p95 {settled['e2e_ms_p95']} ms ({settled['events']:.0f} hops)"
        )
    per_minute = result.over_time["e2e_ms_p95_per_minute"]
    if len(per_minute) > 1:
        minutes = ", ".join(_ms(math.nan if v is None else v) for v in per_minute)
        lines.append(f"e2e p95 per minute of streaming: {minutes}")
    figures = result.figures()
    by_service = ", ".join(f"{role} {rate}" for role, rate in figures["produce_batches_per_s_by_service"].items())
    lines.append(f"record batches produced: {figures['produce_batches_per_s']}/s ({by_service})")
    if result.refused_sessions:
        lines.append(f"admission control refused {result.refused_sessions} sessions")
    predicted = figures["compute_saved_pct_predicted"]
    if predicted:
        lines.append(
            "compute saved per level as the controller prices it (workers' measured knob savings): "
            + ", ".join(f"level {level} {pct:.0f}%" for level, pct in predicted.items() if level != "0")
        )
    saved = figures["compute_saved_pct"]
    if len(saved) > 1:
        lines.append(
            "recognizer time per hop saved vs level 0: "
            + ", ".join(
                f"level {level} {'-' if pct is None else f'{pct:.0f}%'}" for level, pct in saved.items() if level != "0"
            )
        )
    if result.options.slowdown_at is not None:
        recovered = figures["recovered_to_level0_s"]
        lines.append(
            f"slowdown {result.options.slowdown_at.factor:g}x ended at t={result.options.slowdown_at.end_s:g} s; "
            + ("level 0 never came back" if recovered is None else f"back at level 0 {recovered:g} s later")
        )
    lines.append(f"transcripts (WER over all {len(result.examples)} sessions: {100 * result.wer:.1f}%):")
    for session, reference, hypothesis, session_wer in result.examples[:examples]:
        lines.append(f"  {session}  WER {100 * session_wer:.0f}%")
        lines.append(f"    reference : {reference}")
        lines.append(f"    transcript: {hypothesis}")
    codes = ", ".join(f"{role} {code}" for role, code in result.exit_codes.items())
    lines.append(f"services stopped with SIGTERM: {codes}")
    return "\n".join(lines)


COMPARED = (
    ("e2e p50 ms", "e2e_ms_p50"),
    ("e2e p95 ms", "e2e_ms_p95"),
    ("queue_wait p95 ms", "queue_wait_ms_p95"),
    ("gpu_infer p95 ms", "gpu_infer_ms_p95"),
    (f"queue_wait p95 after {SETTLE_S:.0f} s", "settled_queue_wait_ms_p95"),
    (f"e2e p95 after {SETTLE_S:.0f} s", "settled_e2e_ms_p95"),
    ("max level", "max_level"),
    ("decisions", "decision_count"),
    ("WER", "wer"),
)


def format_comparison(with_controller: DemoResult, without: DemoResult) -> str:
    left, right = with_controller.figures(), without.figures()
    for figures in (left, right):
        figures["decision_count"] = len(figures["decisions"])
    lines = [
        f"slowdown {with_controller.options.slowdown:g}x, {with_controller.options.sessions} sessions",
        f"{'':<28}{'controller':>14}{'no controller':>16}",
    ]
    for label, key in COMPARED:
        lines.append(f"{label:<28}{_cell(left[key]):>14}{_cell(right[key]):>16}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 1 else f"{value:.1f}"
    return str(value)


def run_demo_command(
    settings: Settings,
    sessions: int,
    duration_s: float | None,
    slowdown: float,
    controller: bool,
    compare_slowdown: float | None,
    as_json: bool,
    samples_dir: str | None = None,
    slowdown_at: SlowdownWindow | None = None,
    burst: Burst | None = None,
    plot: str | None = None,
    external_broker: bool = False,
    gateway: bool = False,
    gateway_url: str | None = None,
) -> int:
    if sessions < 1:
        raise CliError("--sessions must be at least 1")
    if duration_s is not None and duration_s <= 0:
        raise CliError("--duration must be positive")
    if slowdown < 1 or (compare_slowdown is not None and compare_slowdown < 1):
        raise CliError("slowdown factors are at least 1")
    if gateway_url is not None and not gateway_url.startswith(("ws://", "wss://")):
        raise CliError(f"--gateway-url {gateway_url!r}: give the gateway as ws://HOST:PORT or wss://HOST:PORT")
    options = RunOptions(
        sessions=sessions,
        duration_s=duration_s,
        slowdown=slowdown,
        slowdown_at=slowdown_at,
        burst=burst,
        controller=controller,
        samples_dir=Path(samples_dir) if samples_dir else SAMPLES_DIR,
        external_broker=external_broker,
        gateway=gateway,
        gateway_url=gateway_url,
    )
    if not external_broker and gateway_url is None and duration_s is not None:
        warning = embedded_broker_warning(sessions, duration_s)
        if warning:
            print(f"hopline demo: warning: {warning}", file=sys.stderr)
    if compare_slowdown is not None:
        runs = [
            _run_checked(settings, replace(options, slowdown=compare_slowdown, controller=with_controller))
            for with_controller in (True, False)
        ]
        if as_json:
            print(json.dumps({"controller": runs[0].figures(), "no_controller": runs[1].figures()}))
        else:
            for run in runs:
                print(format_result(run), end="\n\n")
            print(format_comparison(runs[0], runs[1]))
        return 0
    result = _run_checked(settings, options)
    if plot:
        try:
            plot_breakdown(result.events, result.report.decisions, plot)
        except OSError as exc:
            raise CliError(f"cannot write the plot to {plot}: {exc.strerror or exc}") from exc
    print(json.dumps(result.figures()) if as_json else format_result(result))
    return 0


def _run_checked(settings: Settings, options: RunOptions) -> DemoResult:
    """:func:`run_demo`; a service that fails to start becomes its output tail on stderr and a one-line error."""
    try:
        return run_demo(settings, options)
    except ServiceFailed as failure:
        detail = str(failure)
        print(detail, file=sys.stderr)
        raise CliError(detail.splitlines()[0]) from failure
