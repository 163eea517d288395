from __future__ import annotations

import math

import numpy as np
import torch

from workers.asr.features import HOP, MIN_SAMPLES, LogMel, num_frames, reference_logmel


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
