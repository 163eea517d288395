"""``hopline produce`` (pipeline/ingress/cli.py) against the embedded broker."""

from __future__ import annotations

import wave
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from pipeline import contracts
from tests.plugins.broker import SettingsFactory
from tests.plugins.kafka import hopline, read_sessions

pytestmark = pytest.mark.integration


def test_produce_cli_sends_a_wav_as_mulaw_sessions(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings()
    tone = np.round(np.sin(np.arange(22050 // 2) / 7) * 9000).astype("<i2")  # 0.5 s at 22.05 kHz
    path = tmp_path / "call.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setsampwidth(2)
        wav.setnchannels(1)
        wav.setframerate(22050)
        wav.writeframes(tone.tobytes())
    result = hopline(settings, "produce", str(path), "--session", "call", "--codec", "mulaw", "--sessions", "2")
    assert result.returncode == 0, result.stderr
    assert "2 session(s) sent, 0 refused; frames sent 52, delivered 52, failed 0" in result.stdout
    by_session: dict[str, list[contracts.AudioFrame]] = defaultdict(list)
    for record in read_sessions(settings, settings.topics.frames, contracts.AudioFrame):
        by_session[record.session_id].append(record)
    assert set(by_session) == {"call-0", "call-1"}
    for frames in by_session.values():
        assert [f.seq for f in frames] == list(range(26))
        assert [f.end_of_stream for f in frames] == [False] * 25 + [True]
        assert {(f.codec, f.sample_rate) for f in frames} == {("mulaw", 8000)}
        assert {len(f.payload) for f in frames[:-1]} == {160} and frames[-1].payload == b""
        assert np.allclose(np.diff([f.capture_ts_ms for f in frames]), 20)


def test_produce_cli_rejects_bad_input_in_one_line(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings()
    (tmp_path / "notes.wav").write_text("not audio")
    for args, message in [
        ([str(tmp_path / "notes.wav"), "--session", "x"], "not a PCM WAV file"),
        ([str(tmp_path / "absent.wav"), "--session", "x"], "no such file"),
        ([str(tmp_path / "notes.wav"), "--session", "x", "--codec", "alaw", "--rate", "16000"], "8000 Hz only"),
    ]:
        result = hopline(settings, "produce", *args)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and message in result.stderr
