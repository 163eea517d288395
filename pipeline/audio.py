"""Audio codecs and conversions for the ingress path, in numpy with no external DSP dependency.

* G.711 mu-law and A-law (ITU-T G.711) decode/encode through lookup tables. Decoding gives the
  standard 16-bit linear values (mu-law 0x00 -> -32124, A-law 0xD5 -> +8), the same values as
  the reference decoders in ITU-T G.191 and the old ``audioop`` module.
* PCM16: signed 16-bit little-endian mono.
* 8 kHz -> 16 kHz: :class:`Upsampler2x`, a polyphase FIR interpolator (windowed-sinc
  half-band, 32 taps, Kaiser beta 8, each phase normalised to unity DC gain; group delay
  15.5 output samples = 0.97 ms). It is causal and keeps the last 15 input samples as
  per-session state, so feeding a stream frame by frame gives exactly the same samples as
  feeding it in one piece: hop boundaries do not click.
* Framing: :func:`frames_of` cuts a sample stream into 20 ms frames (the last one padded
  with silence).
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

Codec = Literal["pcm16", "mulaw", "alaw"]
CODECS: Final[tuple[Codec, ...]] = ("pcm16", "mulaw", "alaw")
SAMPLE_RATES: Final[tuple[int, ...]] = (8000, 16000)
MODEL_RATE: Final = 16000

Int16Array = npt.NDArray[np.int16]

_MULAW_BIAS = 0x84
_MULAW_SEGMENT_ENDS = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _mulaw_decode_table() -> Int16Array:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _MULAW_BIAS) << exponent) - _MULAW_BIAS
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> Int16Array:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


def _mulaw_encode_table() -> npt.NDArray[np.uint8]:
    """The reference (Sun/CCITT g711.c) encoder over every 16-bit value."""
    samples = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(samples < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(samples), 8159) + (_MULAW_BIAS >> 2)
    segment = np.searchsorted(_MULAW_SEGMENT_ENDS, magnitude)
    codes = np.where(segment >= 8, 0x7F, (segment << 4) | ((magnitude >> (segment + 1)) & 0x0F))
    return _by_uint16_index((codes ^ mask).astype(np.uint8))


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    """The reference (Sun/CCITT g711.c) encoder over every 16-bit value."""
    samples = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(samples >= 0, 0xD5, 0x55)
    magnitude = np.where(samples >= 0, samples, -samples - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude)
    mantissa = np.where(segment < 2, magnitude >> 1, magnitude >> segment) & 0x0F
    codes = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return _by_uint16_index((codes ^ mask).astype(np.uint8))


def _by_uint16_index(codes_by_sample: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Re-index a table built over -32768..32767 so that ``table[sample.view(uint16)]`` works."""
    return np.roll(codes_by_sample, -32768)


MULAW_DECODE: Final = _mulaw_decode_table()
ALAW_DECODE: Final = _alaw_decode_table()
MULAW_ENCODE: Final = _mulaw_encode_table()
ALAW_ENCODE: Final = _alaw_encode_table()


def format_error(codec: str, sample_rate: int) -> str | None:
    """Why ``codec`` at ``sample_rate`` is not an audio format hopline takes, or None if it is."""
    if codec not in CODECS:
        return f"unknown codec {codec!r} (pcm16, mulaw or alaw)"
    if sample_rate not in SAMPLE_RATES:
        return f"sample rate {sample_rate} not supported (8000 or 16000)"
    if codec != "pcm16" and sample_rate != 8000:
        return f"{codec} is G.711: 8000 Hz only (got {sample_rate})"
    return None


def bytes_per_sample(codec: str) -> int:
    return 2 if codec == "pcm16" else 1


def frame_bytes(codec: str, sample_rate: int, frame_ms: int = 20) -> int:
    """Payload size of one frame: 640 for 16 kHz pcm16, 160 for 8 kHz G.711."""
    return sample_rate * frame_ms // 1000 * bytes_per_sample(codec)


def pcm16_from_bytes(data: bytes) -> Int16Array:
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def pcm16_to_bytes(samples: Int16Array) -> bytes:
    return np.asarray(samples, dtype="<i2").tobytes()


def pcm16_from_float(samples: npt.NDArray[np.floating]) -> Int16Array:
    """[-1, 1) floats -> int16, rounded and clipped."""
    return np.clip(np.round(np.asarray(samples, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def pcm16_to_float(samples: Int16Array) -> npt.NDArray[np.float32]:
    return (np.asarray(samples, dtype=np.float32) / 32768.0).astype(np.float32)


def decode(payload: bytes, codec: str) -> Int16Array:
    """One payload of ``codec`` -> linear int16 samples at the payload's own rate."""
    if codec == "pcm16":
        if len(payload) % 2:
            raise ValueError(f"pcm16 payload has an odd length ({len(payload)} bytes)")
        return pcm16_from_bytes(payload)
    codes = np.frombuffer(payload, dtype=np.uint8)
    if codec == "mulaw":
        return MULAW_DECODE[codes]
    if codec == "alaw":
        return ALAW_DECODE[codes]
    raise ValueError(f"unknown codec {codec!r}")


def encode(samples: Int16Array, codec: str) -> bytes:
    """Linear int16 samples -> payload bytes of ``codec``."""
    samples = np.asarray(samples, dtype=np.int16)
    if codec == "pcm16":
        return pcm16_to_bytes(samples)
    index = samples.view(np.uint16)
    if codec == "mulaw":
        return MULAW_ENCODE[index].tobytes()
    if codec == "alaw":
        return ALAW_ENCODE[index].tobytes()
    raise ValueError(f"unknown codec {codec!r}")


def _interpolation_filter(taps: int = 32, beta: float = 8.0) -> npt.NDArray[np.float64]:
    """Windowed-sinc low-pass at the 8 kHz Nyquist (4 kHz), designed at 16 kHz, split into 2 phases."""
    n = np.arange(taps) - (taps - 1) / 2.0
    h = np.sinc(n / 2.0) * np.kaiser(taps, beta)
    phases = h.reshape(-1, 2).T.copy()
    phases /= phases.sum(axis=1, keepdims=True)
    return phases


class Upsampler2x:
    """Streaming 8 kHz -> 16 kHz interpolator; one instance per session (see module docstring)."""

    PHASES: Final = _interpolation_filter()
    HISTORY: Final = PHASES.shape[1] - 1

    def __init__(self, history: Int16Array | None = None) -> None:
        self._history = np.zeros(self.HISTORY, dtype=np.float64)
        if history is not None:
            self._history[:] = np.asarray(history, dtype=np.float64)[-self.HISTORY :]

    @property
    def history(self) -> Int16Array:
        """The state to persist: the last input samples."""
        return self._history.astype(np.int16)

    def process(self, samples: Int16Array) -> Int16Array:
        """``n`` samples at 8 kHz -> ``2n`` samples at 16 kHz, continuing the previous call."""
        if len(samples) == 0:
            return np.zeros(0, dtype=np.int16)
        extended = np.concatenate([self._history, np.asarray(samples, dtype=np.float64)])
        self._history = extended[-self.HISTORY :]
        windows = np.lib.stride_tricks.sliding_window_view(extended, self.HISTORY + 1)[:, ::-1]
        out = np.empty(2 * len(samples), dtype=np.float64)
        out[0::2] = windows @ self.PHASES[0]
        out[1::2] = windows @ self.PHASES[1]
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def upsample_8k_to_16k(samples: Int16Array) -> Int16Array:
    """A whole 8 kHz signal -> 16 kHz with a fresh :class:`Upsampler2x` (what the windower does per session)."""
    return Upsampler2x().process(samples)


def resample_to(samples: Int16Array, from_rate: int, to_rate: int) -> Int16Array:
    """Offline resampling for producers reading arbitrary WAV files: band-limited by FFT.

    Not streaming; the pipeline's own 8 -> 16 kHz step is :class:`Upsampler2x`.
    """
    if from_rate == to_rate or len(samples) == 0:
        return np.asarray(samples, dtype=np.int16)
    count = round(len(samples) * to_rate / from_rate)
    spectrum = np.fft.rfft(np.asarray(samples, dtype=np.float64))
    keep = min(len(spectrum), count // 2 + 1)
    resized = np.zeros(count // 2 + 1, dtype=np.complex128)
    resized[:keep] = spectrum[:keep]
    out = np.fft.irfft(resized, n=count) * (count / len(samples))
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def frames_of(samples: Int16Array, samples_per_frame: int) -> Iterator[Int16Array]:
    """Cut a stream into frames of ``samples_per_frame``; the last one is padded with silence."""
    for start in range(0, len(samples), samples_per_frame):
        frame = samples[start : start + samples_per_frame]
        if len(frame) < samples_per_frame:
            frame = np.concatenate([frame, np.zeros(samples_per_frame - len(frame), dtype=np.int16)])
        yield frame


def read_wav_native(path: str | Path) -> tuple[Int16Array, int]:
    """Any PCM WAV (8/16/24/32-bit, any rate, any channels) -> mono int16 and its own sample rate.

    Raises ValueError with a one-line reason for anything that is not a readable PCM WAV.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({exc})") from None
    if width == 1:
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.int32) - 128) << 8
    elif width == 2:
        samples = np.frombuffer(data, dtype="<i2").astype(np.int32)
    elif width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        samples = ((raw[:, 0] << 8) | (raw[:, 1] << 16) | (raw[:, 2] << 24)) >> 16
    elif width == 4:
        samples = np.frombuffer(data, dtype="<i4").astype(np.int32) >> 16
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported")
    if len(samples) == 0:
        raise ValueError(f"{path}: no audio")
    mono = samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples
    pcm = np.clip(np.round(mono), -32768, 32767).astype(np.int16)
    return pcm, rate


def read_wav(path: str | Path, sample_rate: int) -> Int16Array:
    """Any PCM WAV -> mono int16 at ``sample_rate`` (see :func:`read_wav_native`)."""
    pcm, rate = read_wav_native(path)
    return resample_to(pcm, rate, sample_rate)
