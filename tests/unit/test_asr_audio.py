from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from workers.asr.audio import load_audio, mulaw_decode, mulaw_encode, resample, telephone, write_wav


def _sine(freq: float, rate: int, seconds: float = 1.0) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(int(rate * seconds)) / rate)


def test_resampling_keeps_in_band_tones_and_removes_out_of_band_ones() -> None:
    y = resample(_sine(1000, 22050), 22050, 16000)
    assert y.shape[-1] == 16000
    torch.testing.assert_close(y[500:-500], _sine(1000, 16000)[500:-500], atol=5e-3, rtol=0)
    assert resample(_sine(9500, 22050), 22050, 16000)[500:-500].abs().max() < 0.02
    torch.testing.assert_close(
        resample(_sine(440, 8000), 8000, 16000)[200:-200], _sine(440, 16000)[200:-200], atol=2e-3, rtol=0
    )


def test_resampling_is_batched_per_row() -> None:
    x = torch.randn(3, 4410)
    batched = resample(x, 22050, 16000)
    for i in range(3):
        torch.testing.assert_close(batched[i], resample(x[i], 22050, 16000))


def test_mulaw_round_trip_is_close_and_telephone_band_limits() -> None:
    x = torch.linspace(-1, 1, 1001)
    assert (mulaw_decode(mulaw_encode(x)) - x).abs().max() < 0.03
    tone = 0.5 * _sine(440, 16000)
    assert (telephone(tone) - tone)[200:-200].abs().max() < 0.03
    assert telephone(0.5 * _sine(6000, 16000))[200:-200].abs().max() < 0.05


def test_wav_round_trip_and_resampling_on_load(tmp_path: Path) -> None:
    audio = (0.5 * _sine(300, 8000)).numpy()
    write_wav(tmp_path / "a.wav", audio, rate=8000)
    loaded = load_audio(tmp_path / "a.wav")
    assert loaded.dtype == np.float32 and len(loaded) == 16000
    assert np.abs(loaded[200:-200] - 0.5 * _sine(300, 16000).numpy()[200:-200]).max() < 5e-3
