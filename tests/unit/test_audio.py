import wave
from pathlib import Path

import numpy as np
import pytest

from pipeline import audio
from pipeline.audio import read_wav

# ITU-T G.711 (and the G.191 reference decoder) values, in 16-bit linear units.
MULAW_KNOWN = {0x00: -32124, 0x80: 32124, 0xFF: 0, 0x7F: 0, 0xF0: 120, 0x70: -120, 0xCE: 988, 0x4E: -988}
ALAW_KNOWN = {0xD5: 8, 0x55: -8, 0xAA: 32256, 0x2A: -32256, 0x80: 5504, 0x00: -5504, 0xFA: 1008, 0x7A: -1008}


@pytest.mark.parametrize(("code", "linear"), MULAW_KNOWN.items())
def test_mulaw_decodes_to_the_g711_table(code: int, linear: int) -> None:
    assert audio.decode(bytes([code]), "mulaw")[0] == linear


@pytest.mark.parametrize(("code", "linear"), ALAW_KNOWN.items())
def test_alaw_decodes_to_the_g711_table(code: int, linear: int) -> None:
    assert audio.decode(bytes([code]), "alaw")[0] == linear


@pytest.mark.parametrize(
    ("linear", "mulaw", "alaw"),
    [(0, 0xFF, 0xD5), (1000, 0xCE, 0xFA), (-1000, 0x4E, 0x7A), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A)],
)
def test_encoders_pick_the_g711_codes(linear: int, mulaw: int, alaw: int) -> None:
    samples = np.array([linear], dtype=np.int16)
    assert audio.encode(samples, "mulaw") == bytes([mulaw])
    assert audio.encode(samples, "alaw") == bytes([alaw])


@pytest.mark.parametrize("codec", ["mulaw", "alaw"])
def test_every_code_survives_decode_then_encode(codec: str) -> None:
    codes = bytes(range(256))
    again = audio.encode(audio.decode(codes, codec), codec)
    # mu-law has two zeros (0x7F, 0xFF); both decode to 0, which encodes as 0xFF.
    differing = [c for c, d in zip(codes, again, strict=True) if c != d]
    assert differing == ([0x7F] if codec == "mulaw" else [])


@pytest.mark.parametrize("codec", ["mulaw", "alaw"])
def test_encoding_is_monotonic_in_the_decoded_value(codec: str) -> None:
    ramp = np.arange(-32768, 32768, 7, dtype=np.int16)
    decoded = audio.decode(audio.encode(ramp, codec), codec)
    assert np.all(np.diff(decoded.astype(np.int32)) >= 0)
    assert np.max(np.abs(decoded.astype(np.int32) - ramp)) <= 1100  # the largest G.711 step is 1024 (mu) / 1024 (A)


def test_pcm16_round_trips_little_endian() -> None:
    samples = np.array([0, 1, -1, 32767, -32768], dtype=np.int16)
    data = audio.pcm16_to_bytes(samples)
    assert data[:4] == b"\x00\x00\x01\x00"
    assert np.array_equal(audio.pcm16_from_bytes(data), samples)
    with pytest.raises(ValueError, match="odd length"):
        audio.decode(b"\x00\x01\x02", "pcm16")


def test_frame_sizes() -> None:
    assert audio.frame_bytes("pcm16", 16000) == 640
    assert audio.frame_bytes("pcm16", 8000) == 320
    assert audio.frame_bytes("mulaw", 8000) == 160


def test_frames_of_pads_the_last_frame_with_silence() -> None:
    samples = np.arange(1, 451, dtype=np.int16)
    frames = list(audio.frames_of(samples, 160))
    assert [len(f) for f in frames] == [160, 160, 160]
    assert np.array_equal(np.concatenate(frames)[:450], samples)
    assert not frames[-1][130:].any()


def test_upsampler_frame_by_frame_equals_one_piece() -> None:
    rng = np.random.default_rng(1)
    signal = rng.integers(-20000, 20000, 8000).astype(np.int16)
    upsampler = audio.Upsampler2x()
    pieces = [upsampler.process(frame) for frame in np.split(signal, 50)]
    assert np.array_equal(np.concatenate(pieces), audio.upsample_8k_to_16k(signal))


def test_upsampler_state_can_be_persisted_and_restored() -> None:
    signal = (np.sin(np.arange(1600) / 5) * 9000).astype(np.int16)
    first = audio.Upsampler2x()
    head = first.process(signal[:800])
    restored = audio.Upsampler2x(first.history)
    assert np.array_equal(np.concatenate([head, restored.process(signal[800:])]), audio.upsample_8k_to_16k(signal))


def test_upsampler_reproduces_a_tone_with_the_documented_delay() -> None:
    n = np.arange(8000)
    tone = np.round(np.sin(2 * np.pi * 1000 * n / 8000) * 10000).astype(np.int16)
    out = audio.upsample_8k_to_16k(tone).astype(np.float64)
    delay = 15.5  # output samples
    expected = np.sin(2 * np.pi * 1000 * (np.arange(16000) - delay) / 16000) * 10000
    assert len(out) == 16000
    assert np.max(np.abs(out[64:] - expected[64:])) < 40  # < 0.4 % of the amplitude


def test_upsampler_keeps_dc_and_attenuates_images() -> None:
    dc = np.full(800, 1000, dtype=np.int16)
    assert np.all(audio.upsample_8k_to_16k(dc)[64:] == 1000)
    n = np.arange(8000)
    tone = np.round(np.sin(2 * np.pi * 3000 * n / 8000) * 10000).astype(np.int16)
    spectrum = np.abs(np.fft.rfft(audio.upsample_8k_to_16k(tone)[64:].astype(np.float64)))
    freqs = np.fft.rfftfreq(16000 - 64, 1 / 16000)
    wanted = spectrum[np.argmin(np.abs(freqs - 3000))]
    image = spectrum[np.argmin(np.abs(freqs - 5000))]
    assert image < wanted / 10


def test_offline_resampling_keeps_length_and_tone() -> None:
    n = np.arange(44100)
    tone = np.round(np.sin(2 * np.pi * 440 * n / 44100) * 8000).astype(np.int16)
    out = audio.resample_to(tone, 44100, 16000)
    assert len(out) == 16000
    expected = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 8000
    assert np.max(np.abs(out[100:-100] - expected[100:-100])) < 20


def write_wav(path: Path, data: bytes, width: int, channels: int, rate: int) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setsampwidth(width)
        wav.setnchannels(channels)
        wav.setframerate(rate)
        wav.writeframes(data)
    return path


def test_read_wav_mixes_down_and_resamples(tmp_path: Path) -> None:
    left = np.full(4410, 1000, dtype="<i2")
    right = np.full(4410, 3000, dtype="<i2")
    stereo = np.stack([left, right], axis=1).tobytes()
    samples = read_wav(write_wav(tmp_path / "s.wav", stereo, 2, 2, 44100), 16000)
    assert len(samples) == 1600
    assert np.all(np.abs(samples[50:-50] - 2000) <= 2)


@pytest.mark.parametrize(("width", "raw", "expected"), [(1, bytes([128, 255, 0]), [0, 127 << 8, -32768])])
def test_read_wav_widens_8_bit(tmp_path: Path, width: int, raw: bytes, expected: list[int]) -> None:
    assert read_wav(write_wav(tmp_path / "w.wav", raw, width, 1, 16000), 16000).tolist() == expected


def test_read_wav_narrows_24_bit(tmp_path: Path) -> None:
    values = [0x123456, -0x123456, 0x7FFFFF]
    raw = b"".join((v & 0xFFFFFF).to_bytes(3, "little") for v in values)
    assert read_wav(write_wav(tmp_path / "w.wav", raw, 3, 1, 16000), 16000).tolist() == [0x1234, -0x1235, 0x7FFF]


def test_read_wav_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        read_wav(tmp_path / "absent.wav", 16000)
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(ValueError, match="not a PCM WAV file") as info:
        read_wav(tmp_path / "text.wav", 16000)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no audio"):
        read_wav(write_wav(tmp_path / "empty.wav", b"", 2, 1, 16000), 16000)
