"""The audio producer without a broker: framing, codecs, admission, interleaving."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from pipeline import audio
from pipeline.control.ladder import Knobs, ladder
from pipeline.ingress.service import AudioProducer, AudioStream, SessionRefused
from pipeline.settings import KafkaSettings, Settings


@dataclass
class FixedControl:
    """Stands in for ControlFollower: the knobs in force and the controller's reason for them."""

    knobs: Knobs
    reason: str = ""


@pytest.fixture
def settings() -> Settings:
    # Nothing listens here: these tests never flush, produce() only queues.
    return Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9"))


def test_pcm16_is_cut_into_20_ms_frames_with_the_last_padded(settings: Settings) -> None:
    producer = AudioProducer(settings)
    samples = np.arange(16000 + 100, dtype=np.int16)
    frames = producer.frames_of(AudioStream("s", samples))
    assert len(frames) == 51 and {len(f) for f in frames} == {640}
    assert audio.pcm16_from_bytes(frames[1])[0] == 320
    assert not audio.pcm16_from_bytes(frames[-1])[100:].any()


def test_g711_frames_are_encoded_at_8_khz_from_any_source_rate(settings: Settings) -> None:
    producer = AudioProducer(settings)
    tone = np.round(np.sin(np.arange(16000) / 10) * 8000).astype(np.int16)
    frames = producer.frames_of(AudioStream("s", tone, "alaw", 8000, source_rate=16000))
    assert len(frames) == 50 and {len(f) for f in frames} == {160}
    decoded = audio.decode(b"".join(frames), "alaw")
    error = np.abs(decoded.astype(np.int32) - tone[::2])[100:-100]  # the offline resampler wraps at the ends
    assert np.max(error) < 600  # A-law steps are 512 at this level


@pytest.mark.parametrize(
    ("codec", "rate", "message"),
    [("opus", 8000, "unknown codec"), ("pcm16", 44100, "not supported"), ("mulaw", 16000, "8000 Hz only")],
)
def test_unsupported_formats_are_refused(settings: Settings, codec: str, rate: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AudioProducer(settings).frames_of(AudioStream("s", np.zeros(10, dtype=np.int16), codec, rate))


def test_new_sessions_are_refused_while_admission_is_closed(settings: Settings) -> None:
    steps = ladder(settings)
    closed = AudioProducer(settings, control=FixedControl(steps[5], "offered load 1.21"))  # type: ignore[arg-type]
    stream = AudioStream("late-caller", np.zeros(3200, dtype=np.int16))
    refusal = r"refused: try again later: admission closed at degradation level 5 \(offered load 1.21\)$"
    with pytest.raises(SessionRefused, match=refusal):
        closed.stream(stream)
    assert closed.stream_many([stream]) == {}
    assert closed.report.sent == 0
    open_ = AudioProducer(settings, control=FixedControl(steps[4]))  # type: ignore[arg-type]
    assert open_.stream_many([stream]) == {"late-caller": 11}  # 10 frames + end of stream
    assert open_.report.sent == 11


def test_sessions_share_one_tick_in_capture_order(settings: Settings) -> None:
    """Every session's frame of a tick goes out back to back: one produce batch per partition per tick."""
    producer = AudioProducer(settings)
    sent: list[tuple[str, int, float]] = []
    producer.send_frame = lambda stream, seq, payload, capture_ms, eos=False: sent.append(  # type: ignore[method-assign]
        (stream.session_id, seq, capture_ms)
    )
    streams = [AudioStream(name, np.zeros(960, dtype=np.int16)) for name in ("a", "b")]
    counts = producer.stream_many(streams)
    assert counts == {"a": 4, "b": 4}
    assert [(s, q) for s, q, _ in sent] == [(s, q) for q in range(4) for s in ("a", "b")]
    captures = {s: [c for name, _, c in sent if name == s] for s in ("a", "b")}
    assert np.allclose(np.diff(captures["a"]), 20) and captures["b"] == captures["a"]


def test_a_session_id_beyond_the_contracts_limit_is_refused_before_any_frame(settings: Settings) -> None:
    producer = AudioProducer(settings)
    stream = AudioStream("x" * 513, np.zeros(3200, dtype=np.int16))
    with pytest.raises(ValueError, match="longer than 512 bytes"):
        producer.stream_many([stream])
    assert producer.report.sent == 0
