"""``hopline asr export-onnx``: the project's torch checkpoint as a bring-your-own ONNX model.

The graph takes log-mel features, not audio: the TorchScript exporter cannot export the front end's
``unfold`` over a dynamic number of samples ("input size not accessible"), so the features stay in
hopline's code, described by the spec (the same log-mel ``workers.asr.features.LogMel`` computes).
Normalisation, the convolutions, the conformer and the CTC head are in the graph.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from workers.asr import checkpoint as checkpoint_io
from workers.asr.checkpoint import DEFAULT_CHECKPOINT
from workers.asr.features import HOP, MIN_SAMPLES, N_FFT, N_MELS, WIN
from workers.asr.model import FRAME_S, AcousticModel
from workers.asr.onnx_spec import FbankSpec, ModelSpec, spec_path
from workers.asr.recognizer import CONFORMER_TIMING

OPSET = 17
#: ``workers.asr.features.mel_filterbank``'s band edges, which LogMel uses.
LOW_FREQ_HZ, HIGH_FREQ_HZ = 20.0, 7600.0


class _FeaturesToLogProbs(torch.nn.Module):
    """log-mel [B, frames, 80] + feature lengths -> log-probs [B, out frames, tokens] + out lengths."""

    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = (feat_lengths - 3) // 2 + 1  # the two valid stride-2 convolutions of width 3
        frames = (frames - 3) // 2 + 1
        return self.model.encode_features(feats, frames), frames


def project_spec() -> ModelSpec:
    """The spec of the exported project model: LogMel's parameters, 40 ms frames, the lexicon decoder."""
    return ModelSpec(
        input="fbank",
        fbank=FbankSpec(
            n_mels=N_MELS,
            frame_length_ms=WIN / 16,
            frame_shift_ms=HOP / 16,
            n_fft=N_FFT,
            window="hann",
            low_freq_hz=LOW_FREQ_HZ,
            high_freq_hz=HIGH_FREQ_HZ,
            remove_dc_offset=True,
            log_floor=1e-6,
        ),
        min_samples=MIN_SAMPLES,
        output="log_probs",
        seconds_per_frame=FRAME_S,
        start_offset_s=CONFORMER_TIMING.start_offset_s,
        end_offset_s=CONFORMER_TIMING.end_offset_s,
        blank_index=0,
        tokens="tokens.txt",
        words="lexicon",
    )


def export_checkpoint(checkpoint: Path | None, out_dir: Path) -> Path:
    """Write ``out_dir/model.onnx``, ``model.json`` and ``tokens.txt``; returns the model's path."""
    model, tokens, _info = checkpoint_io.load(checkpoint or DEFAULT_CHECKPOINT)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    example = model.features(torch.zeros(2, 16000))
    lengths = torch.tensor([example.shape[1], example.shape[1] - 10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about the fixed q/k/v split, which is always 3
        torch.onnx.export(
            _FeaturesToLogProbs(model).eval(),
            (example, lengths),
            str(path),
            input_names=["features", "feature_lengths"],
            output_names=["log_probs", "frame_lengths"],
            dynamic_axes={
                "features": {0: "batch", 1: "frames"},
                "feature_lengths": {0: "batch"},
                "log_probs": {0: "batch", 1: "out_frames"},
                "frame_lengths": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    (out_dir / "tokens.txt").write_text("".join(f"{token}\n" for token in tokens), encoding="utf-8")
    spec_path(path).write_text(json.dumps(project_spec().model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return path
