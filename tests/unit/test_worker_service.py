"""What the worker makes of one hop and its recognition, without a broker."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.control.ladder import ladder
from pipeline.settings import Settings
from tests.plugins.builders import hop as make_hop
from workers.batching.policy import Batch, BatchPolicy, Pending
from workers.worker.service import HopJob, InvalidHop, build_hypothesis, hop_audio, infer_batch


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Recognition:
    text: str
    words: tuple[Word, ...]
    confidence: float


def test_pcm16_becomes_float32_in_unit_range() -> None:
    audio = hop_audio(make_hop(), 16000)
    assert audio.dtype == np.float32
    assert audio.tolist() == [0.0, 0.5, -1.0, 32767 / 32768]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sample_rate": 8000}, "sample_rate 8000"),
        ({"audio": b"\x00\x01\x02"}, "3 bytes"),
        ({"audio": b""}, "0 bytes"),
    ],
)
def test_hops_the_model_cannot_take_are_refused_with_a_reason(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidHop, match=message):
        hop_audio(make_hop(**overrides), 16000)


def test_hypothesis_moves_word_times_to_stream_time_and_carries_every_timestamp() -> None:
    hop = make_hop()
    audio = np.zeros(16000, dtype=np.float32)
    job = HopJob(hop=hop, audio=audio, received_ts_ms=1170.0, message=None)  # type: ignore[arg-type]
    recognition = Recognition("two pizzas", (Word("two", 0.1, 0.3, 0.9), Word("pizzas", 0.35, 0.8, 0.7)), 0.8)
    record = build_hypothesis(
        job,
        recognition,
        beam=2,
        batch_size=3,
        control_level=3,
        worker_id="w1",
        batch_closed_ts_ms=1180.0,
        infer_start_ts_ms=1181.0,
        infer_end_ts_ms=1230.0,
        skipped_before=1,
    )
    assert record.window_start_ms == 2000.0
    assert record.window_end_ms == 3000.0
    assert [(w.word, w.start_ms, w.end_ms) for w in record.words] == [
        ("two", 2100.0, 2300.0),
        ("pizzas", 2350.0, 2800.0),
    ]
    assert record.hop_published_ts_ms == 1162.0
    assert record.received_ts_ms == 1170.0
    assert (record.beam, record.batch_size, record.control_level, record.skipped_before) == (2, 3, 3, 1)
    decoded = contracts.Hypothesis.decode(record.encode())
    assert (decoded.text, decoded.words[1].start_ms, decoded.is_final) == ("two pizzas", 2350.0, False)


class TimedRecognizer:
    """Sleeps like a model would and remembers the beam it was asked for and how long it took."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.beams: list[int] = []
        self.took_ms: list[float] = []

    def transcribe(self, windows: Sequence[np.ndarray], beam: int) -> list[Recognition]:
        started = time.perf_counter()
        time.sleep(self.seconds)
        self.beams.append(beam)
        self.took_ms.append((time.perf_counter() - started) * 1000.0)
        return [Recognition("hi", (Word("hi", 0.0, 0.1, 1.0),), 1.0) for _ in windows]


def closed_batch(sessions: str) -> Batch[HopJob]:
    policy: BatchPolicy[HopJob] = BatchPolicy(max_batch_size=8, max_latency_s=0.0, clock=lambda: now_ms() / 1000.0)
    for session in sessions:
        received = now_ms()
        job = HopJob(make_hop(session), np.zeros(1600, np.float32), received, None)  # type: ignore[arg-type]
        policy.offer(Pending(session, 0, False, job, received_at=received / 1000.0))
    batch = policy.take(force=True)
    assert batch is not None
    return batch


def test_a_batch_runs_at_the_beam_and_level_in_force_with_ordered_timestamps() -> None:
    recognizer = TimedRecognizer(0.001)
    knobs = ladder(Settings())[3]
    records = infer_batch(recognizer, closed_batch("abc"), knobs, "w1")
    assert recognizer.beams == [2]
    assert [r.session_id for r in records] == ["a", "b", "c"]
    for r in records:
        assert (r.beam, r.control_level, r.batch_size, r.worker_id) == (2, 3, 3, "w1")
        stamps = [r.received_ts_ms, r.batch_closed_ts_ms, r.infer_start_ts_ms, r.infer_end_ts_ms]
        assert stamps == sorted(stamps)


def test_fault_slowdown_makes_inference_take_x_times_as_long() -> None:
    recognizer = TimedRecognizer(0.01)
    records = infer_batch(recognizer, closed_batch("a"), ladder(Settings())[0], "w1", fault_slowdown=3.0)
    gpu_infer_ms = records[0].infer_end_ts_ms - records[0].infer_start_ts_ms
    assert gpu_infer_ms >= 3.0 * recognizer.took_ms[0]
