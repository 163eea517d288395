from __future__ import annotations

import math

import numpy as np
import torch

from workers.asr.features import HOP, MIN_SAMPLES, N_FFT, N_MELS, WIN, LogMel, mel_filterbank, num_frames


def reference_logmel(audio: list[float]) -> list[list[float]]:
    """Plain-python DFT log-mel of one short signal (slow: tiny inputs only)."""
    fb = mel_filterbank().tolist()
    out = []
    n_frames = (max(len(audio), MIN_SAMPLES) - WIN) // HOP + 1
    padded = audio + [0.0] * max(0, MIN_SAMPLES - len(audio))
    for t in range(n_frames):
        seg = padded[t * HOP : t * HOP + WIN]
        mean = sum(seg) / WIN
        win = [(s - mean) * (0.5 - 0.5 * math.cos(2 * math.pi * i / WIN)) for i, s in enumerate(seg)]
        power = []
        for k in range(N_FFT // 2 + 1):
            re = sum(v * math.cos(2 * math.pi * k * i / N_FFT) for i, v in enumerate(win))
            im = sum(v * math.sin(2 * math.pi * k * i / N_FFT) for i, v in enumerate(win))
            power.append(re * re + im * im)
        out.append([math.log(sum(p * fb[k][m] for k, p in enumerate(power)) + 1e-6) for m in range(N_MELS)])
    return out


def test_logmel_matches_a_plain_dft_reference() -> None:
    rng = np.random.default_rng(0)
    n = MIN_SAMPLES + HOP
    t = np.arange(n) / 16000
    audio = (0.3 * np.sin(2 * math.pi * 440 * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
    ours = LogMel()(torch.from_numpy(audio)[None])[0]
    ref = torch.tensor(reference_logmel(audio[:MIN_SAMPLES].tolist()))  # first frames only: the reference is slow
    assert ours.shape == (int(num_frames(torch.tensor(n))), 80)
    torch.testing.assert_close(ours[: len(ref)], ref, atol=2e-3, rtol=1e-4)


def test_padding_never_changes_the_frames_of_real_samples() -> None:
    audio = torch.randn(1, 12345) * 0.1
    padded = torch.nn.functional.pad(audio, (0, 7000))
    feats = LogMel()(audio)
    torch.testing.assert_close(LogMel()(padded)[:, : feats.shape[1]], feats)


def test_short_windows_still_yield_a_frame() -> None:
    assert int(num_frames(torch.tensor(100))) == int(num_frames(torch.tensor(MIN_SAMPLES)))
    assert LogMel()(torch.zeros(1, 100)).shape[1] == int(num_frames(torch.tensor(100)))


def test_mel_filters_are_ordered_triangles_within_the_band() -> None:
    fb = mel_filterbank()
    assert fb.shape == (N_FFT // 2 + 1, N_MELS) and bool((fb >= 0).all())
    peaks = fb.argmax(0)
    assert bool((peaks[1:] >= peaks[:-1]).all()) and bool((fb.max(0).values > 0.3).all())
    hz = torch.arange(N_FFT // 2 + 1) * 16000 / N_FFT
    assert float(fb[hz < 20].sum()) == 0.0 and float(fb[hz > 7600].sum()) == 0.0
