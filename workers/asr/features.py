"""Log-mel filterbank features computed in torch, batched, on the model's device.

Frames use no centering (no reflection padding), so a frame only ever sees samples of its own
window: padding a window to the batch's longest never changes the frames of its real samples.
"""

from __future__ import annotations

import torch

N_FFT = 512
WIN = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
N_MELS = 80
MIN_SAMPLES = WIN + 6 * HOP  # the shortest window that still yields one model frame


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_filterbank(
    n_mels: int = N_MELS, n_fft: int = N_FFT, rate: int = 16000, fmin: float = 20.0, fmax: float = 7600.0
) -> torch.Tensor:
    """HTK-style triangular filters, [n_fft // 2 + 1, n_mels]."""
    freqs = torch.linspace(0, rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges_mel = torch.linspace(
        _hz_to_mel(torch.tensor(fmin)).item(), _hz_to_mel(torch.tensor(fmax)).item(), n_mels + 2, dtype=torch.float64
    )
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]
    up = (freqs[:, None] - lo[None]) / (mid - lo)[None]
    down = (hi[None] - freqs[:, None]) / (hi - mid)[None]
    return torch.clamp(torch.minimum(up, down), min=0.0).float()


def num_frames(num_samples: torch.Tensor) -> torch.Tensor:
    """Feature frames for each length in samples (lengths below MIN_SAMPLES are padded up to it)."""
    n = torch.clamp(num_samples, min=MIN_SAMPLES)
    return (n - WIN) // HOP + 1


class LogMel(torch.nn.Module):
    """[B, samples] float audio -> [B, frames, n_mels] log-mel."""

    window: torch.Tensor
    fbank: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN, periodic=True), persistent=False)
        self.register_buffer("fbank", mel_filterbank(), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.shape[-1] < MIN_SAMPLES:
            audio = torch.nn.functional.pad(audio, (0, MIN_SAMPLES - audio.shape[-1]))
        frames = audio.float().unfold(-1, WIN, HOP)  # [B, T, WIN]
        frames = frames - frames.mean(-1, keepdim=True)  # remove DC per frame, as telephone chains do
        spec = torch.fft.rfft(frames * self.window, n=N_FFT)
        power = spec.real.square() + spec.imag.square()
        return torch.log(power @ self.fbank + 1e-6)
