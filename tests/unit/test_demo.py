import json
import wave
from pathlib import Path

import numpy as np
import pytest

from pipeline.demo import GAP_S, MODEL_RATE, Utterance, load_samples, plan_sessions
from pipeline.errors import CliError
from pipeline.wer import normalize, wer, word_errors


def test_wer_counts_substitutions_deletions_insertions_on_normalized_words() -> None:
    assert normalize("Two Large Fries, please!") == ["two", "large", "fries", "please"]
    assert wer("two large fries please", "Two large fries, please.") == 0.0
    assert word_errors("a b c d", "a x c") == (2, 4)
    assert word_errors("a b", "a b c d") == (2, 2)
    assert wer("", "") == 0.0 and wer("", "noise") == 1.0


def utterance(seconds: float, text: str) -> Utterance:
    return Utterance(np.ones(int(seconds * MODEL_RATE), dtype=np.int16), text, text)


def test_sessions_rotate_samples_fill_the_duration_and_some_are_phone_calls() -> None:
    samples = [utterance(2.0, "one"), utterance(3.0, "two"), utterance(1.0, "three")]
    plans = plan_sessions(samples, sessions=10, duration_s=None, run_id="r")
    assert [p.reference for p in plans[:4]] == ["one", "two", "three", "one"]
    assert [p.codec for p in plans].count("mulaw") == 2
    assert all(p.sample_rate == 8000 for p in plans if p.codec == "mulaw")
    assert len({p.session_id for p in plans}) == 10
    long = plan_sessions(samples, sessions=2, duration_s=7.5, run_id="r")
    assert long[0].reference == "one two three"
    assert len(long[0].audio()) == int((6.0 + 3 * GAP_S) * MODEL_RATE)
    assert long[1].reference == "two three one"


def test_samples_load_from_the_manifest_resampled_to_16k(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "a.wav"), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.arange(800, dtype="<i2").tobytes())
    (tmp_path / "manifest.json").write_text(json.dumps([{"file": "a.wav", "text": "hello there"}]))
    [sample] = load_samples(tmp_path)
    assert sample.text == "hello there" and len(sample.audio) == 1600


def test_missing_or_broken_samples_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"manifest\.json"):
        load_samples(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps([{"file": "absent.wav", "text": "x"}]))
    with pytest.raises(CliError, match="cannot read"):
        load_samples(tmp_path)
