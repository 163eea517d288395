"""The audio producer (pipeline/ingress/service.py) against the embedded broker."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import audio, contracts
from pipeline.ingress.service import AudioProducer, AudioStream
from tests.plugins.broker import SettingsFactory
from tests.plugins.kafka import read_sessions

pytestmark = pytest.mark.integration


def test_realtime_frames_are_sent_when_their_audio_ends(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    producer = AudioProducer(settings)
    stream = AudioStream("live", np.zeros(16000 * 3 // 10, dtype=np.int16))  # 0.3 s: 15 frames
    assert producer.stream(stream, realtime=True) == 16
    report = producer.close()
    assert (report.sent, report.delivered, report.failed) == (16, 16, 0)
    frames = read_sessions(settings, settings.topics.frames, contracts.AudioFrame)
    assert [f.seq for f in frames] == list(range(16))
    for frame in frames:
        # Captured at capture_ts_ms, handed to Kafka once its 20 ms of audio have passed.
        assert frame.sent_ts_ms >= frame.capture_ts_ms + 20 - 1
    assert audio.pcm16_from_bytes(frames[0].payload).shape == (320,)
