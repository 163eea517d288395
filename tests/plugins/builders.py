"""Records for tests: one builder per topic record, with defaults that make a valid, ordinary message.

Every builder takes the fields a test cares about as keywords and returns the typed record of
:mod:`pipeline.contracts`; ``.encode()`` gives the bytes to produce. Timestamps default to now
(``pipeline.clock.now_ms``) stepping through the pipeline the way a real hop does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.control.ladder import GLOBAL_SCOPE, command_record, ladder
from pipeline.settings import Settings

#: Latency components of an ordinary hop, in ms; ``queue_wait_ms`` is what the tests vary.
FIXED_COMPONENTS_MS = {
    "hop_buffer_ms": 160.0,
    "net_ms": 3.0,
    "batch_wait_ms": 4.0,
    "gpu_infer_ms": 40.0,
    "post_ms": 2.0,
}

#: Offsets (ms) of a hypothesis's timestamps from the capture of its hop's first frame.
HYPOTHESIS_STEPS_MS = {
    "ready_ts_ms": 160.0,
    "hop_published_ts_ms": 162.0,
    "received_ts_ms": 170.0,
    "batch_closed_ts_ms": 185.0,
    "infer_start_ts_ms": 186.0,
    "infer_end_ts_ms": 230.0,
}


def frame(
    session: str = "s1",
    seq: int = 0,
    *,
    payload: bytes = bytes(640),
    codec: str = "pcm16",
    sample_rate: int = 16000,
    **fields: Any,
) -> contracts.AudioFrame:
    """A 20 ms ingress frame (silence at 16 kHz PCM16 unless given), captured and sent now."""
    now = now_ms()
    values: dict[str, Any] = {"capture_ts_ms": now, "sent_ts_ms": now, **fields}
    return contracts.AudioFrame(
        session_id=session, seq=seq, payload=payload, codec=codec, sample_rate=sample_rate, **values
    )


def hop(session: str = "call-1", seq: int = 12, **fields: Any) -> contracts.Hop:
    """A 16 kHz hop of four samples whose window starts 2 s into the session."""
    first_capture = fields.pop("first_capture_ts_ms", 1000.0)
    values: dict[str, Any] = {
        "first_capture_ts_ms": first_capture,
        "ready_ts_ms": first_capture + 160.0,
        "published_ts_ms": first_capture + 162.0,
        "sample_rate": 16000,
        "audio": b"\x00\x00\x00\x40\x00\x80\xff\x7f",  # 0, 16384, -32768, 32767 little-endian
        "window_start_sample": 32000,
        "window_secs": 1.28,
        "gap_frames": 0,
        "duplicate_frames": 0,
        "is_final": False,
        "control_level": 0,
        **fields,
    }
    return contracts.Hop(session_id=session, hop_seq=seq, **values)


def words(*spec: tuple[str, float, float], confidence: float = 0.9) -> tuple[contracts.Word, ...]:
    """``words(("open", 200, 500), ("the", 540, 640))``: words with stream times in ms."""
    return tuple(
        contracts.Word(word=word, start_ms=float(start), end_ms=float(end), confidence=confidence)
        for word, start, end in spec
    )


def window_words(
    speech: Iterable[tuple[str, float, float]], window_start_ms: float, window_end_ms: float
) -> tuple[contracts.Word, ...]:
    """The words of ``speech`` that start inside the window, the one still being spoken cut at its end."""
    return words(
        *(
            (word, start, min(end, window_end_ms))
            for word, start, end in speech
            if window_start_ms <= start < window_end_ms
        )
    )


def hypothesis(
    session: str = "s1",
    seq: int = 0,
    *,
    speech: Iterable[tuple[str, float, float]] | None = None,
    hop_ms: float = 160.0,
    window_ms: float = 1280.0,
    first_capture_ts_ms: float | None = None,
    steps_ms: Mapping[str, float] | None = None,
    **fields: Any,
) -> contracts.Hypothesis:
    """The worker's hypothesis for hop ``seq``: window ``[end - window_ms, end)`` with ``end = (seq + 1) * hop_ms``.

    The words are ``words=`` if given, else those of ``speech`` (``(word, start_ms, end_ms)`` in
    stream time) the window holds (:func:`window_words`); ``text`` joins them. The timestamps
    step from ``first_capture_ts_ms`` (default: 300 ms ago) by :data:`HYPOTHESIS_STEPS_MS`,
    updated with ``steps_ms``. Any other field can be given as a keyword.
    """
    window_end = (seq + 1) * hop_ms
    window_start = max(0.0, window_end - window_ms)
    given = fields.pop("words", None)
    heard = tuple(given) if given is not None else window_words(speech or (), window_start, window_end)
    captured = now_ms() - 300.0 if first_capture_ts_ms is None else first_capture_ts_ms
    steps = {**HYPOTHESIS_STEPS_MS, **(steps_ms or {})}
    values: dict[str, Any] = {
        "text": " ".join(w.word for w in heard),
        "words": heard,
        "confidence": 0.9,
        "window_start_ms": window_start,
        "window_end_ms": window_end,
        "is_final": False,
        "beam": 4,
        "window_secs": window_ms / 1000.0,
        "batch_size": 2,
        "control_level": 0,
        "worker_id": "test-worker",
        "first_capture_ts_ms": captured,
        **{name: captured + step for name, step in steps.items()},
        "skipped_before": 0,
        **fields,
    }
    return contracts.Hypothesis(session_id=session, hop_seq=seq, **values)


def latency_event(queue_wait_ms: float = 10.0, *, e2e_ms: float | None = None, **fields: Any) -> contracts.LatencyEvent:
    """One hop's latency event: :data:`FIXED_COMPONENTS_MS` plus ``queue_wait_ms``, adding up to ``e2e_ms``.

    ``e2e_ms`` may be given on its own (the backstop's input); ``event_ts_ms`` defaults to now.
    """
    components = {**FIXED_COMPONENTS_MS, **{k: v for k, v in fields.items() if k in FIXED_COMPONENTS_MS}}
    values: dict[str, Any] = {
        "session_id": "s1",
        "hop_seq": 1,
        "worker_id": "w1",
        "event_ts_ms": now_ms(),
        **components,
        "queue_wait_ms": queue_wait_ms,
        "e2e_ms": sum(components.values()) + queue_wait_ms if e2e_ms is None else e2e_ms,
        "batch_size": 2,
        "beam": 4,
        "window_secs": 1.28,
        "control_level": 0,
        "emitted": True,
        **{k: v for k, v in fields.items() if k not in FIXED_COMPONENTS_MS},
    }
    return contracts.LatencyEvent(**values)


def control_command(
    settings: Settings,
    level: int,
    *,
    seq: int = 1,
    reason: str = "test",
    metrics: Mapping[str, float] | None = None,
    scope: str = GLOBAL_SCOPE,
    issued_ts_ms: float | None = None,
) -> contracts.ControlCommand:
    """What the controller publishes to put ``level`` of the degradation ladder in force (issued now)."""
    command = command_record(seq, ladder(settings)[level], reason, dict(metrics or {}), scope)
    return command if issued_ts_ms is None else replace(command, issued_ts_ms=issued_ts_ms)


def broker_probe(
    rtt_ms: float = 5.0, *, lookup_ms: float = 1.0, prober: str = "test-prober", seq: int = 2, **fields: Any
) -> contracts.BrokerProbe:
    """A heartbeat (sent now unless ``sent_ts_ms`` is given) carrying the previous round trip and a lookup."""
    values: dict[str, Any] = {"sent_ts_ms": now_ms(), **fields}
    return contracts.BrokerProbe(prober=prober, seq=seq, previous_rtt_ms=rtt_ms, lookup_ms=lookup_ms, **values)
