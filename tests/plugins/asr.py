"""Fixtures for the ASR engine tests: the shipped recognizer (loaded once), the shipped samples, and
tiny randomly initialised CTC models exported to ONNX for the onnx backend (``export_tiny_ctc_model``).

torch is imported by the fixtures, not by this module: a run without ASR tests does not pay for it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pytest

from pipeline.demo import SAMPLES_DIR

if TYPE_CHECKING:
    from workers.asr import Recognizer

Samples = list[tuple[dict, np.ndarray]]


@pytest.fixture(scope="session")
def recognizer() -> Recognizer:
    from workers.asr import Recognizer

    return Recognizer.load(device="cpu", threads=2)


@pytest.fixture(scope="session")
def samples() -> Samples:
    """``(manifest entry, 16 kHz float audio)`` of every bundled demo sample."""
    from workers.asr.audio import load_audio

    manifest = json.loads((SAMPLES_DIR / "manifest.json").read_text())
    return [(entry, load_audio(SAMPLES_DIR / entry["file"])) for entry in manifest["samples"]]


#: A wav2vec2-style character set: blank, the word boundary ``|``, 20 letters.
TINY_TOKENS = ["<blank>", "|", *"abcdefghijklmnopqrst"]
#: The tiny waveform model: one frame per 20 ms from a 25 ms window.
TINY_WINDOW, TINY_STRIDE, TINY_FRAME_S = 400, 320, 0.02
#: The tiny fbank model: 24 mel bands, frames halved by one stride-2 convolution.
TINY_MELS = 24


def export_tiny_ctc_model(
    directory: Path,
    input_kind: Literal["waveform", "fbank"] = "waveform",
    tokens: list[str] | None = None,
    words: str = "boundary_token",
    seed: int = 0,
) -> Path:
    """A random conv + linear CTC model exported to ``directory/model.onnx`` with its spec and tokens.

    waveform: audio [B, samples] + int64 lengths in, logits + frame lengths out (20 ms frames).
    fbank: 24-band log-mel [B, frames, 24] in (no lengths), log-probs out; frames = ceil(feature frames / 2).
    """
    import torch

    tokens = tokens or TINY_TOKENS
    torch.manual_seed(seed)
    waveform_model, fbank_model = _tiny_modules()
    model: torch.nn.Module
    spec: dict[str, Any]
    if input_kind == "waveform":
        model = waveform_model(len(tokens))
        example: tuple[Any, ...] = (torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000]))
        names, outputs = ["audio", "audio_lengths"], ["logits", "frame_lengths"]
        axes = {"audio": {0: "b", 1: "n"}, "audio_lengths": {0: "b"}, "logits": {0: "b", 1: "t"}}
        axes["frame_lengths"] = {0: "b"}
        spec = {"input": "waveform", "output": "logits", "seconds_per_frame": TINY_FRAME_S}
    else:
        model = fbank_model(len(tokens))
        example = (torch.randn(2, 98, TINY_MELS),)
        names, outputs = ["features"], ["log_probs"]
        axes = {"features": {0: "b", 1: "n"}, "log_probs": {0: "b", 1: "t"}}
        fbank: dict[str, Any] = {"n_mels": TINY_MELS, "frame_length_ms": 25, "frame_shift_ms": 10}
        fbank.update(mean=[-5.0] * TINY_MELS, std=[4.0] * TINY_MELS)
        spec = {"input": "fbank", "fbank": fbank, "output": "log_probs", "subsampling_factor": 2}
        spec["seconds_per_frame"] = 2 * 0.01
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model.eval(), example, str(path), input_names=names, output_names=outputs, dynamic_axes=axes, dynamo=False
        )
    (directory / "tokens.txt").write_text("".join(f"{t}\n" for t in tokens), encoding="utf-8")
    spec.update(blank_index=0, tokens="tokens.txt", words=words)
    (directory / "model.json").write_text(json.dumps(spec), encoding="utf-8")
    return path


def _tiny_modules() -> tuple[type, type]:
    import torch
    from torch import nn

    class TinyWaveformCtc(nn.Module):
        def __init__(self, n_tokens: int) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 16, TINY_WINDOW, stride=TINY_STRIDE)
            self.head = nn.Linear(16, n_tokens)

        def forward(self, audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = torch.relu(self.conv(audio[:, None])).transpose(1, 2)
            return 20 * self.head(hidden), (lengths - TINY_WINDOW) // TINY_STRIDE + 1

    class TinyFbankCtc(nn.Module):
        def __init__(self, n_tokens: int) -> None:
            super().__init__()
            self.conv = nn.Conv1d(TINY_MELS, 16, 3, stride=2, padding=1)
            self.head = nn.Linear(16, n_tokens)

        def forward(self, feats: torch.Tensor) -> torch.Tensor:
            hidden = torch.relu(self.conv(feats.transpose(1, 2))).transpose(1, 2)
            return self.head(hidden).log_softmax(-1)

    return TinyWaveformCtc, TinyFbankCtc
