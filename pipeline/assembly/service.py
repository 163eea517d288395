"""``hopline assembler``: hypotheses -> transcripts and one latency event per hop.

A faust-streaming agent on the hypotheses topic (keyed by session, so one session's hops
arrive in order on one partition) feeds :class:`pipeline.stitching.Stitcher`, publishes the
partials and finals it yields to the transcripts topic, and for every hypothesis a
LatencyEvent whose components add up to e2e (:mod:`pipeline.latency`). The partial emit
interval follows the controller's knobs (160 ms, 320 ms when throttled).

Recovery: per-session stitching state lives in memory and is mirrored, after every
hypothesis that changes it, into a faust table (changelog topic
``<app>-stitching-changelog``, co-partitioned with the hypotheses by session key). On a
restart or rebalance faust restores the table before the agent consumes again, and a
session's state is reloaded from it when its next hypothesis arrives. Hypotheses since the
last committed offset are then replayed; their hop numbers are not newer than the
restored state's, so they are ignored and no committed word is published twice. What can
repeat after a crash is a partial, a final (identified by ``(session_id, segment)``;
readers keep one) or a latency event (identified by ``(session_id, hop_seq, event_ts_ms)``).

Undecodable or unstitchable hypotheses go to ``<hypotheses>.dlq`` with the reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast

from prometheus_client import Counter, Histogram

from pipeline import contracts
from pipeline.assembly.policy import Stitcher, StitchingPolicy
from pipeline.clock import now_ms
from pipeline.observe.latency import MEASURES, latency_event, measures
from pipeline.observe.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SERVICE = "assembler"

HOP_LATENCY = Histogram(
    "hopline_hop_latency_seconds",
    "Per-hop latency by component (hop_buffer, net, queue_wait, batch_wait, gpu_infer, post, e2e).",
    ["component"],
    buckets=LATENCY_BUCKETS_S,
)
#: One child per component, looked up once: ``labels()`` on every hop cost more than the observation.
_HOP_LATENCY_BY_MEASURE = {name: HOP_LATENCY.labels(name) for name in MEASURES}
HOP_BATCH_SIZE = Histogram(
    "hopline_hop_batch_size", "Size of the micro-batch each hop was inferred in.", buckets=BATCH_SIZE_BUCKETS
)
HYPOTHESES = Counter(
    "hopline_assembler_hypotheses_total",
    "Hypotheses taken, by stitching status (applied, duplicate, stale, closed, invalid, undecodable).",
    ["status"],
)
TRANSCRIPTS = Counter("hopline_assembler_transcripts_total", "Transcripts published, by kind.", ["kind"])


def stitching_policy(settings: Settings) -> StitchingPolicy:
    assembler = settings.assembler
    return StitchingPolicy(
        endpoint_silence_ms=assembler.endpoint_silence_ms,
        agreement_tolerance_ms=assembler.agreement_tolerance_ms,
        stable_after_ms=assembler.stable_after_ms,
        idle_timeout_ms=assembler.idle_timeout_s * 1000.0,
        closed_retention_ms=assembler.closed_retention_s * 1000.0,
    )


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes
    value: bytes


@dataclass
class Handled:
    """What one hypothesis message leads to: messages to send, state to persist, or a dead letter."""

    outgoing: list[Outgoing] = field(default_factory=list)
    session_id: str | None = None
    state: bytes | None = None
    dead_letter_reason: str | None = None
    error: BaseException | None = None


class Assembly:
    """The assembler's logic between Kafka bytes in and Kafka bytes out, free of faust.

    ``load_state(session_id)`` returns a persisted snapshot (or None); it is asked once per
    session not in memory, which is how state comes back after a restart or rebalance.
    """

    def __init__(
        self,
        settings: Settings,
        load_state: Callable[[str], bytes | None],
        clock: Callable[[], float] = now_ms,
    ) -> None:
        self._topics = settings.topics
        self._load_state = load_state
        self._clock = clock
        self.stitcher = Stitcher(stitching_policy(settings), clock=clock)

    def handle(self, value: bytes | None, emit_interval_ms: float) -> Handled:
        try:
            hypothesis = contracts.Hypothesis.decode(value)
        except contracts.ContractError as exc:
            HYPOTHESES.labels("undecodable").inc()
            return Handled(dead_letter_reason=str(exc), error=exc)
        session_id = hypothesis.session_id
        if session_id not in self.stitcher:
            self._restore(session_id)
        outcome = self.stitcher.accept(hypothesis, emit_interval_ms)
        HYPOTHESES.labels(outcome.status).inc()
        if outcome.status == "invalid":
            return Handled(dead_letter_reason=f"cannot stitch: {outcome.reason}")
        if outcome.status != "applied":
            log.info("session %s: ignored %s", session_id, outcome.reason)
        if outcome.dropped_words:
            log.warning(
                "session %s hop %s: dropped %d malformed words",
                session_id,
                hypothesis.hop_seq,
                outcome.dropped_words,
            )
        handled = Handled(session_id=session_id)
        key = session_id.encode()
        finished_ms = self._clock()
        for transcript in outcome.transcripts:
            message, finished_ms = self._transcript(transcript)
            handled.outgoing.append(message)
        event = latency_event(hypothesis, finished_ms, emitted=outcome.emitted)
        observe(event)
        handled.outgoing.append(Outgoing(self._topics.latency, key, event.encode()))
        if outcome.status == "applied":
            handled.state = self._snapshot(session_id)
        return handled

    def expire(self) -> tuple[list[Outgoing], dict[str, bytes | None]]:
        """Finals of idle sessions, and the state changes to persist (None = delete)."""
        expiry = self.stitcher.expire()
        outgoing = [self._transcript(final)[0] for final in expiry.finals]
        changes: dict[str, bytes | None] = {s: self._snapshot(s) for s in expiry.closed}
        changes.update(dict.fromkeys(expiry.forgotten))
        for session_id in expiry.closed:
            log.info("session %s: idle, closed", session_id)
        return outgoing, changes

    def _transcript(self, transcript: contracts.Transcript) -> tuple[Outgoing, float]:
        """The transcript's message, stamped with the moment it is handed over, and that moment."""
        published_ts_ms = self._clock()
        TRANSCRIPTS.labels(transcript.kind).inc()
        value = replace(transcript, published_ts_ms=published_ts_ms).encode()
        return Outgoing(self._topics.transcripts, transcript.session_id.encode(), value), published_ts_ms

    def _snapshot(self, session_id: str) -> bytes | None:
        snapshot = self.stitcher.snapshot(session_id)
        return json.dumps(snapshot, separators=(",", ":")).encode() if snapshot else None

    def _restore(self, session_id: str) -> None:
        stored = self._load_state(session_id)
        if stored is None:
            return
        try:
            self.stitcher.restore(json.loads(stored))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("session %s: unreadable stored state, starting afresh: %s", session_id, exc)


def observe(event: contracts.LatencyEvent) -> None:
    """Feed one latency event into the Prometheus histograms (seconds)."""
    for name, value in measures(event).items():
        _HOP_LATENCY_BY_MEASURE[name].observe(value / 1000.0)
    HOP_BATCH_SIZE.observe(event.batch_size)


def run(settings: Settings) -> int:
    """Run the assembler agent until SIGTERM; returns the exit code."""
    from pipeline.control.follower import ControlFollower
    from pipeline.kafka.faust_app import AgentDeadLetters, make_app, raw_topic, run_app
    from pipeline.observe.metrics import serve_metrics

    serve_metrics(settings, SERVICE)
    app = make_app(settings, f"{settings.app_id}-{SERVICE}")
    source = raw_topic(app, settings.topics.hypotheses)
    outputs = {name: raw_topic(app, name) for name in (settings.topics.transcripts, settings.topics.latency)}
    dead_letters = AgentDeadLetters(app, settings, service=SERVICE)
    # use_partitioner: the changelog partition follows the session key (as the hypotheses'
    # does), so the expiry timer can write outside an event too.
    states = app.Table(
        "stitching",
        default=None,
        key_type=bytes,
        value_type=bytes,
        use_partitioner=True,
    )
    assembly = Assembly(settings, load_state=lambda session_id: states.get(session_id.encode()))
    follower = ControlFollower(settings)

    async def send(outgoing: list[Outgoing]) -> None:
        for message in outgoing:
            await outputs[message.topic].send(key=message.key, value=message.value)

    def persist(session_id: str, state: bytes | None) -> None:
        key = session_id.encode()
        if state is not None:
            states[key] = state
        elif key in states:
            del states[key]

    @app.agent(source)
    async def assemble(stream: Any) -> None:
        async for event in stream.events():
            handled = assembly.handle(event.value, follower.knobs.emit_interval_ms)
            if handled.dead_letter_reason is not None:
                await dead_letters.publish(event, handled.dead_letter_reason, handled.error)
                continue
            await send(handled.outgoing)
            if handled.session_id is not None and handled.state is not None:
                persist(handled.session_id, handled.state)

    @app.timer(1.0)
    async def expire_idle_sessions() -> None:
        outgoing, changes = assembly.expire()
        await send(outgoing)
        for session_id, state in changes.items():
            persist(session_id, state)

    def forget_sessions(sender: Any, *args: Any, **kwargs: Any) -> None:
        """After a rebalance another instance may own a session: reload each from the table when touched."""
        assembly.stitcher.forget()

    # mode's signal-handler type cannot be satisfied by a plain def under mypy; the call shape is right.
    app.on_partitions_revoked.connect(cast(Any, forget_sessions))

    follower.start()
    try:
        return run_app(app, service=SERVICE)
    finally:
        follower.close()
