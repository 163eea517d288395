"""What the worker makes of one hop and its recognition, without a broker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from pipeline import contracts
from workers.worker import HopJob, InvalidHop, build_hypothesis, hop_audio


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


def make_hop(**overrides: Any) -> contracts.Record:
    hop: contracts.Record = {
        "session_id": "call-1",
        "hop_seq": 12,
        "first_capture_ts_ms": 1000.0,
        "ready_ts_ms": 1160.0,
        "published_ts_ms": 1162.0,
        "sample_rate": 16000,
        "audio": np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes(),
        "window_start_sample": 32000,
        "window_secs": 1.28,
        "gap_frames": 0,
        "duplicate_frames": 0,
        "is_final": False,
        "control_level": 0,
    }
    hop.update(overrides)
    return hop


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
    assert record["window_start_ms"] == 2000.0
    assert record["window_end_ms"] == 3000.0
    assert [(w["word"], w["start_ms"], w["end_ms"]) for w in record["words"]] == [
        ("two", 2100.0, 2300.0),
        ("pizzas", 2350.0, 2800.0),
    ]
    assert record["hop_published_ts_ms"] == 1162.0
    assert record["received_ts_ms"] == 1170.0
    assert (record["beam"], record["batch_size"], record["control_level"], record["skipped_before"]) == (2, 3, 3, 1)
    decoded = contracts.HYPOTHESIS.decode(contracts.HYPOTHESIS.encode(record))
    assert (decoded["text"], decoded["words"][1]["start_ms"], decoded["is_final"]) == ("two pizzas", 2350.0, False)
