"""The audio producer and ``hopline produce`` against the embedded broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import wave
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline import audio, contracts
from pipeline.ingress.service import AudioProducer, AudioStream
from pipeline.kafka.clients import consumer_config
from pipeline.settings import Settings
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration


def read_frames(settings: Settings, count: int, timeout_s: float = 20.0) -> list[contracts.Record]:
    consumer = Consumer(consumer_config(settings, f"{settings.app_id}-test-frames"))
    topic = settings.topics.frames
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.topics.partitions)])
    frames: list[contracts.Record] = []
    deadline = time.monotonic() + timeout_s
    while len(frames) < count and time.monotonic() < deadline:
        message = consumer.poll(0.05)
        if message is not None and not message.error():
            assert message.key() == contracts.FRAME.decode(message.value())["session_id"].encode()
            frames.append(contracts.FRAME.decode(message.value()))
    consumer.close()
    return frames


def hopline(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings.to_env()}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=60
    )


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
    by_session: dict[str, list[contracts.Record]] = defaultdict(list)
    for record in read_frames(settings, 52):
        by_session[record["session_id"]].append(record)
    assert set(by_session) == {"call-0", "call-1"}
    for frames in by_session.values():
        assert [f["seq"] for f in frames] == list(range(26))
        assert [f["end_of_stream"] for f in frames] == [False] * 25 + [True]
        assert {(f["codec"], f["sample_rate"]) for f in frames} == {("mulaw", 8000)}
        assert {len(f["payload"]) for f in frames[:-1]} == {160} and frames[-1]["payload"] == b""
        assert np.allclose(np.diff([f["capture_ts_ms"] for f in frames]), 20)


def test_produce_cli_rejects_bad_input_in_one_line(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings()
    (tmp_path / "notes.wav").write_text("not audio")
    for args, message in [
        ([str(tmp_path / "notes.wav"), "--session", "x"], "not a PCM WAV file"),
        ([str(tmp_path / "absent.wav"), "--session", "x"], "no such file"),
        ([str(tmp_path / "notes.wav"), "--session", "x", "--codec", "alaw", "--rate", "16000"], "--rate must be 8000"),
    ]:
        result = hopline(settings, "produce", *args)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and message in result.stderr


def test_realtime_frames_are_sent_when_their_audio_ends(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    producer = AudioProducer(settings)
    stream = AudioStream("live", np.zeros(16000 * 3 // 10, dtype=np.int16))  # 0.3 s: 15 frames
    assert producer.stream(stream, realtime=True) == 16
    report = producer.close()
    assert (report.sent, report.delivered, report.failed) == (16, 16, 0)
    frames = read_frames(settings, 16)
    assert [f["seq"] for f in frames] == list(range(16))
    for frame in frames:
        # Captured at capture_ts_ms, handed to Kafka once its 20 ms of audio have passed.
        assert frame["sent_ts_ms"] >= frame["capture_ts_ms"] + 20 - 1
    assert audio.pcm16_from_bytes(frames[0]["payload"]).shape == (320,)
