"""A small Conformer CTC acoustic model over phoneme tokens.

Padding safety: the front end uses valid (unpadded) convolutions, attention masks padded keys, and
the depthwise convolution sees zeros past each sequence's end, so a padded window gives the same
outputs as the window alone. LayerNorm (not BatchNorm) keeps statistics per frame for the same reason.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from workers.asr.features import N_MELS, LogMel, num_frames

FRAME_S = 0.04  # one output frame per 4 feature frames


@dataclass(frozen=True)
class ModelConfig:
    n_tokens: int
    d_model: int = 160
    n_layers: int = 7
    n_heads: int = 4
    ff_mult: int = 4
    kernel: int = 15
    front_channels: int = 64
    dropout: float = 0.1

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)


def output_lengths(num_samples: torch.Tensor) -> torch.Tensor:
    """Model frames for each window length in samples (two valid stride-2 convs of width 3)."""
    t = num_frames(num_samples)
    t = (t - 3) // 2 + 1
    return (t - 3) // 2 + 1


class _FeedForward(nn.Module):
    def __init__(self, d: int, mult: int, p: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, d * mult), nn.SiLU(), nn.Dropout(p), nn.Linear(d * mult, d), nn.Dropout(p)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int, p: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.heads = heads
        self.p = p

    def forward(self, x: torch.Tensor, key_ok: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=key_ok[:, None, None, :], dropout_p=self.p if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class _ConvModule(nn.Module):
    def __init__(self, d: int, kernel: int, p: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.pw1 = nn.Linear(d, 2 * d)
        self.dw = nn.Conv1d(d, d, kernel, padding=kernel // 2, groups=d)
        self.norm2 = nn.LayerNorm(d)
        self.pw2 = nn.Linear(d, d)
        self.drop = nn.Dropout(p)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.pw1(self.norm(x)), dim=-1) * valid[..., None]
        return self.drop(self.pw2(F.silu(self.norm2(_depthwise_over_time(y, self.dw)))))


def _depthwise_over_time(y: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """The depthwise, same-padded ``conv`` over [B, T, C] frames, in that layout.

    On the CPU, oneDNN took ~0.5 ms per layer at batch 8 x 30 frames, mostly moving data between layouts;
    k shifted multiply-adds along time take ~0.2 (encoder 23.2 -> 20.7 ms on the 2-core box), same weights,
    same outputs to ~3e-5. On CUDA, and in an ONNX export, the single conv op is the better graph.
    """
    if y.device.type != "cpu" or torch.onnx.is_in_onnx_export():
        return conv(y.transpose(1, 2)).transpose(1, 2)
    k = conv.kernel_size[0]
    frames = y.shape[1]
    padded = F.pad(y, (0, 0, k // 2, k // 2))
    taps = conv.weight[:, 0, :].t()  # [k, C]
    bias = conv.bias if conv.bias is not None else torch.zeros_like(taps[0])
    out = torch.addcmul(bias, padded[:, :frames], taps[0])
    for j in range(1, k):
        out.addcmul_(padded[:, j : j + frames], taps[j])
    return out


class _Block(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.ff1 = _FeedForward(c.d_model, c.ff_mult, c.dropout)
        self.attn = _Attention(c.d_model, c.n_heads, c.dropout)
        self.conv = _ConvModule(c.d_model, c.kernel, c.dropout)
        self.ff2 = _FeedForward(c.d_model, c.ff_mult, c.dropout)
        self.norm = nn.LayerNorm(c.d_model)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        x = x + self.drop(self.attn(x, valid))
        x = x + self.conv(x, valid)
        x = x + 0.5 * self.ff2(x)
        return self.norm(x)


class AcousticModel(nn.Module):
    """Audio [B, samples] + lengths -> CTC log-probabilities [B, frames, tokens] + frame lengths."""

    feat_mean: torch.Tensor
    feat_std: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.features = LogMel()
        self.register_buffer("feat_mean", torch.zeros(N_MELS))
        self.register_buffer("feat_std", torch.ones(N_MELS))
        self.front = nn.Sequential(
            nn.Conv2d(1, c.front_channels, 3, stride=2),
            nn.SiLU(),
            nn.Conv2d(c.front_channels, c.front_channels, 3, stride=2),
            nn.SiLU(),
        )
        freq = ((N_MELS - 3) // 2 + 1 - 3) // 2 + 1
        self.proj = nn.Linear(c.front_channels * freq, c.d_model)
        self.blocks = nn.ModuleList(_Block(c) for _ in range(c.n_layers))
        self.head = nn.Linear(c.d_model, c.n_tokens)

    def encode_features(
        self, feats: torch.Tensor, lengths: torch.Tensor, spec_augment: nn.Module | None = None
    ) -> torch.Tensor:
        x = (feats - self.feat_mean) / self.feat_std
        if spec_augment is not None:
            x = spec_augment(x)
        x = self._front_end(x)  # [B, C, T', F']
        b, ch, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, ch * f))
        valid = torch.arange(t, device=x.device)[None, :] < lengths[:, None]
        for block in self.blocks:
            x = block(x, valid)
        return self.head(x).float().log_softmax(-1)

    def _front_end(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, T, F] features -> [B, C, T', F'] through ``self.front``'s two 3x3 stride-2 convs.

        The first conv has one input channel, where oneDNN took 3.0 ms at batch 8 on the 2-core box; the same
        arithmetic as a [9 -> C] matmul over stacked 3x3 patches takes ~0.5, and leaves its output channels-last,
        which the second conv also runs faster on. Same weights, same outputs to ~2e-5.
        """
        first, act1, second, act2 = self.front
        weight, bias = cast(torch.Tensor, first.weight), cast(torch.Tensor, first.bias)
        h = (feats.shape[1] - 3) // 2 + 1
        w = (feats.shape[2] - 3) // 2 + 1
        patches = torch.stack(
            [feats[:, i : i + 2 * h - 1 : 2, j : j + 2 * w - 1 : 2] for i in range(3) for j in range(3)], dim=-1
        )
        x = act1(F.linear(patches, weight.flatten(1), bias))  # [B, T1, F1, C]
        return act2(second(x.permute(0, 3, 1, 2)))

    def forward(self, audio: torch.Tensor, num_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = output_lengths(num_samples)
        return self.encode_features(self.features(audio), lengths), lengths


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class Int8Linear(nn.Module):
    """A Linear with int8 weights (one scale per output) and int8 activations (one scale per frame).

    Scaling each frame on its own, unlike ``torch.ao`` dynamic quantization's one scale per batch,
    keeps the model's contract: a window's output depends neither on its batch-mates nor on padding.
    CPU only (``torch._int_mm``); accumulation is exact in int32.
    """

    weight_q: torch.Tensor
    weight_scale: torch.Tensor
    bias: torch.Tensor

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127
        self.register_buffer("weight_q", torch.round(w / scale[:, None]).to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale)
        bias = linear.bias if linear.bias is not None else torch.zeros(linear.out_features)
        self.register_buffer("bias", bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).float()
        scale = rows.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
        acc = torch._int_mm(torch.round(rows / scale).to(torch.int8), self.weight_q)
        y = acc.float().mul_(scale).mul_(self.weight_scale).add_(self.bias)
        return y.view(*x.shape[:-1], y.shape[-1])


def quantize_int8(model: AcousticModel) -> AcousticModel:
    """A copy whose Linear layers run in int8; the convolutions and the log-mel front end stay float."""
    copied = copy.deepcopy(model).eval()
    for module in list(copied.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child))
    return copied
