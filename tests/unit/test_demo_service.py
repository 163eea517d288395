"""The demo's pure parts: samples, session plans, word-emission latency."""

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from pipeline.demo.scenarios import Burst, SlowdownWindow
from pipeline.demo.service import (
    GAP_S,
    MODEL_RATE,
    Received,
    SessionPlan,
    Utterance,
    compute_saved_pct,
    load_samples,
    over_time,
    plan_sessions,
    recovered_to_level0_s,
    word_emission_latencies,
)
from pipeline.errors import CliError
from pipeline.kafka.broker import embedded_broker_hold_s, embedded_broker_warning
from pipeline.settings import Settings
from tests.plugins.builders import broker_probe, control_command, latency_event


def utterance(seconds: float, text: str) -> Utterance:
    return Utterance(np.ones(int(seconds * MODEL_RATE), dtype=np.int16), text, text)


def test_sessions_rotate_samples_fill_the_duration_and_some_are_phone_calls() -> None:
    samples = [utterance(2.0, "one"), utterance(3.0, "two"), utterance(1.0, "three")]
    plans = plan_sessions(samples, sessions=10, duration_s=None, run_id="r")
    assert [p.reference for p in plans[:4]] == ["one", "two", "three", "one"]
    assert [p.codec for p in plans].count("mulaw") == 2
    assert plan_sessions(samples, sessions=2, duration_s=None, run_id="r")[1].codec == "mulaw"
    assert all(p.sample_rate == 8000 for p in plans if p.codec == "mulaw")
    assert len({p.session_id for p in plans}) == 10
    long = plan_sessions(samples, sessions=2, duration_s=7.5, run_id="r")
    assert long[0].reference == "one two three"
    assert len(long[0].audio()) == int((6.0 + 3 * GAP_S) * MODEL_RATE)
    assert long[1].reference == "two three one"


def test_samples_load_from_the_manifest_resampled_to_16k_with_word_times(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "a.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.arange(800, dtype="<i2").tobytes())
    words = [{"word": "hello", "start_s": 0.0, "end_s": 0.04}, {"word": "there", "start_s": 0.04, "end_s": 0.09}]
    manifest = {"samples": [{"file": "a.wav", "text": "Hello there", "words": words}, {"file": "a.wav", "text": "hi"}]}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    timed, untimed = load_samples(tmp_path)
    assert timed.text == "Hello there" and len(timed.audio) == 1600
    assert timed.word_ends_s == (0.04, 0.09) and untimed.word_ends_s == ()


def test_missing_or_broken_samples_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"manifest\.json"):
        load_samples(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": [{"file": "absent.wav", "text": "x"}]}))
    with pytest.raises(CliError, match="no such file"):
        load_samples(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps([{"file": "a.wav"}]))
    with pytest.raises(CliError, match="cannot read"):
        load_samples(tmp_path)


def test_the_bundled_samples_carry_word_times() -> None:
    samples = load_samples()
    assert samples and all(len(s.word_ends_s) == len(s.text.split()) for s in samples)


def test_word_emission_counts_correct_words_from_their_end_to_first_appearance() -> None:
    clip = Utterance(np.zeros(MODEL_RATE, dtype=np.int16), "two large fries", "c", word_ends_s=(0.3, 0.6, 0.9))
    plan = SessionPlan("s", (clip, clip), "pcm16", MODEL_RATE)
    start = 1_000_000.0
    second = (1.0 + GAP_S) * 1000.0  # the second utterance starts after the first and its gap

    def got(at_ms: float, kind: str, segment: int, text: str) -> Received:
        hop_seq = 3
        return Received(start + at_ms, kind, segment, text, start + hop_seq * 160.0, hop_seq)

    received = [
        got(500, "partial", 0, "two"),
        got(800, "partial", 0, "two large"),
        got(1200, "final", 0, "two large fries"),
        got(second + 700, "partial", 1, "two larch"),
        got(second + 1100, "final", 1, "two larch fries"),
    ]
    latencies = word_emission_latencies(plan, received, hop_ms=160.0)
    assert latencies == pytest.approx([200.0, 200.0, 300.0, 400.0, 200.0]), "'large' of the second is wrong"


def test_word_emission_needs_word_times() -> None:
    plan = SessionPlan("s", (utterance(1.0, "hello"),), "pcm16", MODEL_RATE)
    assert word_emission_latencies(plan, [Received(1.0, "final", 0, "hello", 0.0, 0)], 160.0) == []


def test_over_time_splits_e2e_by_minute_and_takes_the_last_minutes_probe() -> None:
    start = 1_000_000.0
    events = [
        latency_event(e2e_ms=100.0 + minute * 100.0, event_ts_ms=start + minute * 60_000.0 + 5) for minute in range(3)
    ]
    probes = [
        broker_probe(rtt_ms=9.0, sent_ts_ms=start + 10.0),
        broker_probe(rtt_ms=40.0, sent_ts_ms=start + 170_000.0),
    ]
    figures = over_time(events, probes, start, start + 180_000.0)
    assert figures["e2e_ms_p95_per_minute"] == [100.0, 200.0, 300.0]
    assert figures["e2e_ms_p95_first_60s"] == 100.0 and figures["e2e_ms_p95_last_60s"] == 300.0
    assert figures["broker_probe_ms_p95_last_60s"] == 40.0


def test_the_demo_warns_before_outlasting_the_embedded_broker() -> None:
    assert embedded_broker_warning(10, 20.0) is None
    warning = embedded_broker_warning(10, 300.0)
    assert warning is not None and "--bootstrap-servers" in warning and "docker compose" in warning
    assert embedded_broker_hold_s(20) == embedded_broker_hold_s(30)
    assert embedded_broker_hold_s(200) < embedded_broker_hold_s(100)


def test_compute_saved_counts_hops_not_run_as_free() -> None:
    """Level 0 runs every hop at 40 ms a hop; level 1 runs every other hop, batched 8 at 160 ms a batch."""
    events = [latency_event(hop_seq=seq, gpu_infer_ms=40.0, batch_size=1, control_level=0) for seq in range(10)]
    events += [
        latency_event(hop_seq=seq, gpu_infer_ms=160.0, batch_size=8, control_level=1) for seq in range(11, 31, 2)
    ]
    saved = compute_saved_pct(events)
    assert saved["0"] == 0.0
    overloaded = [*events, latency_event(hop_seq=40, gpu_infer_ms=40.0, batch_size=1, skipped_before=10)]
    assert compute_saved_pct(overloaded) == saved, "hops skipped as stale were not served: they cost nothing"
    assert saved["1"] == pytest.approx(100 * (1 - (20 / 2) / 40), abs=0.1)
    assert compute_saved_pct([latency_event(control_level=2)]) == {"2": None}, "no level 0 to compare with"


def test_recovery_is_timed_from_the_end_of_the_slowdown_to_level_zero() -> None:
    settings = Settings()
    up = control_command(settings, 2, seq=1, issued_ts_ms=1_000.0)
    down = control_command(settings, 1, seq=2, issued_ts_ms=45_000.0)
    back = control_command(settings, 0, seq=3, issued_ts_ms=52_500.0)
    assert recovered_to_level0_s([up, down, back], since_ms=40_000.0) == 12.5
    assert recovered_to_level0_s([up, down], since_ms=40_000.0) is None, "never back at level 0"
    assert recovered_to_level0_s([up, down, back], since_ms=60_000.0) == 0.0, "already at level 0"
    assert recovered_to_level0_s([], since_ms=10.0) == 0.0
    assert recovered_to_level0_s([up], since_ms=None) is None


def test_a_slowdown_window_slows_only_inside_it() -> None:
    window = SlowdownWindow(10.0, 40.0, 3.0)
    assert [window.factor_at(t) for t in (0.0, 9.9, 10.0, 39.9, 40.0)] == [1.0, 1.0, 3.0, 3.0, 1.0]


@pytest.mark.parametrize("text", ["10:40", "a:b:c", "40:10:3", "10:40:0.5", "nan:40:3", "10:inf:3"])
def test_a_bad_slowdown_window_is_a_one_line_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"T1:T2:K|need 0 <= T1 < T2"):
        SlowdownWindow.parse(text)


def test_bursts_parse_and_refuse_nonsense() -> None:
    assert Burst.parse("10@15") == Burst(10, 15.0)
    for text in ("10", "x@1", "0@5", "3@-1", "3@nan"):
        with pytest.raises(ValueError, match=r"N@T|need N >= 1"):
            Burst.parse(text)
