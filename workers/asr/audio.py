"""Audio helpers shared by synthesis, training and the recognizer: resampling, G.711 mu-law, WAV I/O."""

from __future__ import annotations

import math
import wave
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from pipeline.audio import read_wav_native

SAMPLE_RATE = 16000
_MU = 255.0


@lru_cache(maxsize=16)
def _polyphase(orig: int, new: int, zeros: int = 16) -> tuple[torch.Tensor, int, int, int]:
    """Windowed-sinc filter bank [up, 1, K]: row p gives output phase p from a block of `down` inputs."""
    g = math.gcd(orig, new)
    up, down = new // g, orig // g
    cutoff = min(1.0, up / down) * 0.97
    width = math.ceil(zeros / cutoff)
    k = torch.arange(down + 2 * width + 1, dtype=torch.float64)
    t = (torch.arange(up, dtype=torch.float64)[:, None] * down / up + width) - k[None, :]
    window = torch.where(t.abs() <= width, torch.cos(t / width * math.pi / 2) ** 2, torch.zeros_like(t))
    return (cutoff * torch.sinc(t * cutoff) * window).float()[:, None, :], up, down, width


def resample(x: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """Band-limited resampling of [..., time] float audio as one strided conv (no torchaudio needed)."""
    if orig == new:
        return x
    taps, up, down, width = _polyphase(orig, new)
    n_in = x.shape[-1]
    n_out = math.ceil(n_in * up / down)
    blocks = math.ceil(n_out / up)
    flat = x.reshape(-1, 1, n_in)
    right = blocks * down + taps.shape[-1] - width - n_in
    padded = torch.nn.functional.pad(flat, (width, max(right, 0)))
    y = torch.nn.functional.conv1d(padded, taps.to(x.device, x.dtype), stride=down)[..., :blocks]
    y = y.transpose(1, 2).reshape(flat.shape[0], -1)[:, :n_out]
    return y.reshape(*x.shape[:-1], n_out)


def mulaw_encode(x: torch.Tensor) -> torch.Tensor:
    """Continuous mu-law companding followed by 8-bit quantization (as G.711 carries it)."""
    y = torch.sign(x) * torch.log1p(_MU * x.abs().clamp(max=1.0)) / math.log1p(_MU)
    return torch.round((y + 1) / 2 * _MU).clamp(0, _MU)


def mulaw_decode(q: torch.Tensor) -> torch.Tensor:
    y = q / _MU * 2 - 1
    return torch.sign(y) * ((1 + _MU) ** y.abs() - 1) / _MU


def telephone(x: torch.Tensor, rate: int = SAMPLE_RATE) -> torch.Tensor:
    """16 kHz -> 8 kHz G.711 mu-law -> 16 kHz round trip: what a phone gateway does to the audio."""
    narrow = resample(x, rate, 8000)
    return resample(mulaw_decode(mulaw_encode(narrow)), 8000, rate)[..., : x.shape[-1]]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Any PCM WAV -> mono float32 in [-1, 1) and its sample rate."""
    pcm, rate = read_wav_native(path)
    return pcm.astype(np.float32) / 32768, rate


def load_audio(path: Path) -> np.ndarray:
    """Any PCM WAV as 16 kHz mono float32."""
    data, rate = read_wav(path)
    return resample(torch.from_numpy(data), rate, SAMPLE_RATE).numpy().astype(np.float32)


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    pcm = np.clip(np.round(np.asarray(audio, np.float32) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
