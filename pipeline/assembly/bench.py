"""``hopline bench assembler``: what the assembler adds to e2e (``post``), measured for real.

Runs the embedded broker and a real ``hopline assembler`` process, feeds N sessions of
synthetic hypotheses in real time (one per session every 160 ms, a word every 400 ms, a
pause long enough for an endpoint every eight words), each stamped ``infer_end`` just
before it is produced (after a warm-up), and reads back the latency events: their ``post`` is hypothesis
transport + stitching + transcript publish. It also times the stitching logic alone, in
this process, without Kafka. Figures, not a test: machines are noisy.
"""

from __future__ import annotations

import time
from typing import Any

from pipeline import contracts
from pipeline.assembly.service import Assembly
from pipeline.clock import now_ms
from pipeline.errors import CliError
from pipeline.kafka.broker import EmbeddedBroker
from pipeline.kafka.clients import make_producer
from pipeline.kafka.readers import open_reader
from pipeline.kafka.topics import fresh_topics
from pipeline.observe.latency import percentile
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess

WORD_MS = 400.0
WORDS_PER_PHRASE = 8
PAUSE_MS = 1000.0
WARM_UP = "warm-up-"


def synthetic_words(window_start: float, window_end: float) -> list[contracts.Word]:
    """Words of a made-up talker whose start lies in the window; the last one cut at its end."""
    phrase_ms = WORDS_PER_PHRASE * WORD_MS + PAUSE_MS
    words = []
    first = int(window_start // WORD_MS) - 1
    for index in range(max(0, first), int(window_end // WORD_MS) + 1):
        phrase, position = divmod(index, WORDS_PER_PHRASE)
        start = phrase * phrase_ms + position * WORD_MS + 50.0
        end = start + WORD_MS - 100.0
        if window_start <= start < window_end:
            words.append(contracts.Word(word=f"w{index}", start_ms=start, end_ms=min(end, window_end), confidence=0.9))
    return words


def synthetic_hypothesis(
    session: str, seq: int, hop_ms: float, window_ms: float, infer_end: float
) -> contracts.Hypothesis:
    end = (seq + 1) * hop_ms
    start = max(0.0, end - window_ms)
    words = synthetic_words(start, end)
    return contracts.Hypothesis(
        session_id=session,
        hop_seq=seq,
        text=" ".join(w.word for w in words),
        words=tuple(words),
        confidence=0.9,
        window_start_ms=start,
        window_end_ms=end,
        is_final=False,
        beam=4,
        window_secs=window_ms / 1000.0,
        batch_size=1,
        control_level=0,
        worker_id="bench",
        first_capture_ts_ms=infer_end - 230.0,
        ready_ts_ms=infer_end - 70.0,
        hop_published_ts_ms=infer_end - 68.0,
        received_ts_ms=infer_end - 60.0,
        batch_closed_ts_ms=infer_end - 45.0,
        infer_start_ts_ms=infer_end - 40.0,
        infer_end_ts_ms=infer_end,
        skipped_before=0,
    )


def time_stitching(settings: Settings, sessions: int, hops: int) -> float:
    """Microseconds per hypothesis through :class:`Assembly` (decode, stitch, encode, snapshot)."""
    assembly = Assembly(settings, load_state=lambda session: None)
    messages = [
        synthetic_hypothesis(f"s{n}", seq, settings.audio.hop_ms, settings.audio.window_secs * 1000, now_ms()).encode()
        for seq in range(hops)
        for n in range(sessions)
    ]
    started = time.perf_counter()
    for message in messages:
        assembly.handle(message, settings.assembler.emit_interval_ms)
    return (time.perf_counter() - started) / len(messages) * 1e6


def run_bench(settings: Settings, sessions: int, duration_s: float) -> dict[str, Any]:
    hop_ms = float(settings.audio.hop_ms)
    window_ms = settings.audio.window_secs * 1000.0
    hops = max(1, int(duration_s * 1000 / hop_ms))
    stitch_us = time_stitching(settings, sessions, hops)
    with EmbeddedBroker() as broker:
        settings = fresh_topics(settings, broker.bootstrap_servers, metrics={"enabled": False})
        topics = settings.topics
        with ServiceProcess(settings, "assembler") as assembler:
            assembler.wait_ready(60)
            producer = make_producer(settings)
            _warm_up(settings, producer, hop_ms, window_ms)
            started = time.monotonic()
            for seq in range(hops):
                for n in range(sessions):
                    record = synthetic_hypothesis(f"s{n}", seq, hop_ms, window_ms, now_ms())
                    producer.produce(topics.hypotheses, key=f"s{n}".encode(), value=record.encode())
                producer.poll(0)
                time.sleep(max(0.0, started + (seq + 1) * hop_ms / 1000.0 - time.monotonic()))
            producer.flush(10)
            events = _read_latency(settings, sessions * hops)
            exit_code = assembler.terminate()
    if exit_code != 0:
        raise CliError(f"assembler exited with {exit_code} after the bench")
    post = [e.post_ms for e in events]
    emitted = [e.post_ms for e in events if e.emitted]
    return {
        "sessions": sessions,
        "duration_s": duration_s,
        "hypotheses": sessions * hops,
        "latency_events": len(events),
        "emitted": len(emitted),
        "post_ms_p50": percentile(post, 50),
        "post_ms_p95": percentile(post, 95),
        "post_ms_max": max(post, default=float("nan")),
        "emitted_post_ms_p50": percentile(emitted, 50),
        "emitted_post_ms_p95": percentile(emitted, 95),
        "stitching_us_per_hypothesis": stitch_us,
    }


def _warm_up(settings: Settings, producer: Any, hop_ms: float, window_ms: float) -> None:
    """One hop per partition-ish session until each is answered: the first fetches and the
    output topics' metadata take ~0.5 s after ``ready`` and are not what the bench measures."""
    sessions = [f"{WARM_UP}{n}" for n in range(2 * settings.topics.partitions)]
    for session in sessions:
        record = synthetic_hypothesis(session, 0, hop_ms, window_ms, now_ms())
        producer.produce(settings.topics.hypotheses, key=session.encode(), value=record.encode())
    producer.flush(10)
    _read_latency(settings, len(sessions), warm_up=True)


def _read_latency(settings: Settings, expected: int, warm_up: bool = False) -> list[contracts.LatencyEvent]:
    """The bench's (or the warm-up's) latency events, once ``expected`` have arrived or after 30 s."""
    consumer = open_reader(settings, "bench-reader", [settings.topics.latency])
    events: list[contracts.LatencyEvent] = []
    deadline = time.monotonic() + 30
    try:
        while len(events) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.05)
            if message is not None and not message.error():
                event = contracts.LatencyEvent.decode(message.value())
                if event.session_id.startswith(WARM_UP) == warm_up:
                    events.append(event)
    finally:
        consumer.close()
    return events


def format_report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"assembler bench: {result['sessions']} sessions x {result['duration_s']:.0f} s, "
            f"{result['hypotheses']} hypotheses -> {result['latency_events']} latency events, "
            f"{result['emitted']} with a transcript",
            f"post (hypothesis produced -> transcript published): p50 {result['post_ms_p50']:.1f} ms, "
            f"p95 {result['post_ms_p95']:.1f} ms, max {result['post_ms_max']:.1f} ms",
            f"post of hops with a transcript: p50 {result['emitted_post_ms_p50']:.1f} ms, "
            f"p95 {result['emitted_post_ms_p95']:.1f} ms",
            f"stitching alone (decode, stitch, encode, snapshot): {result['stitching_us_per_hypothesis']:.0f} us "
            "per hypothesis",
        ]
    )
