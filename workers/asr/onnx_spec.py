"""The feature spec that travels with a bring-your-own ONNX model (``model.onnx`` + ``model.json``).

Kept apart from the runtime (``onnx_backend``) so the format reads in one place; every field is
described in docs/byo-model.md. Problems are one-line ``CheckpointError``s, like the torch checkpoint's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from workers.asr.checkpoint import CheckpointError


class FbankSpec(BaseModel):
    """Log-mel features our code computes (torch) before the graph: power spectrum, HTK mel triangles, ln."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_mels: int = Field(gt=0, description="Mel bands: the graph input's last dimension.")
    frame_length_ms: float = Field(gt=0, description="Analysis window, e.g. 25.")
    frame_shift_ms: float = Field(gt=0, description="Hop between frames, e.g. 10.")
    n_fft: int | None = Field(None, gt=0, description="FFT size; None = the next power of two >= the window.")
    window: Literal["hann", "hamming"] = Field("hann", description="Periodic window function.")
    low_freq_hz: float = Field(20.0, ge=0, description="Lowest mel filter edge.")
    high_freq_hz: float | None = Field(None, gt=0, description="Highest mel filter edge; None = Nyquist.")
    remove_dc_offset: bool = Field(False, description="Subtract each frame's mean before windowing.")
    log_floor: float = Field(1e-6, gt=0, description="Added to the mel energies before the natural log.")
    dither: float = Field(0.0, description="Must be 0: features are deterministic, so windows batch freely.")
    mean: list[float] | None = Field(None, description="Per-band mean subtracted after the log (n_mels values).")
    std: list[float] | None = Field(None, description="Per-band std the features are divided by (n_mels values).")

    @model_validator(mode="after")
    def _consistent(self) -> FbankSpec:
        if self.dither != 0:
            raise ValueError("dither must be 0 (features must not depend on chance)")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) != self.n_mels:
                raise ValueError(f"{name} has {len(values)} values for {self.n_mels} mel bands")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError("std values must be positive")
        return self


class ModelSpec(BaseModel):
    """What the ONNX graph takes and gives, and how its tokens make words."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Literal["waveform", "fbank"] = Field(
        description="waveform: float32 [B, samples] at 16 kHz; fbank: float32 [B, frames, n_mels] from `fbank`. "
        "An optional second graph input takes int64 [B] lengths (samples or feature frames)."
    )
    sample_rate: Literal[16000] = Field(16000, description="The pipeline's hops are 16 kHz.")
    fbank: FbankSpec | None = Field(None, description="Feature parameters; required with input fbank.")
    min_samples: int = Field(0, ge=0, description="Windows shorter than this are zero-padded up to it.")
    output: Literal["log_probs", "logits"] = Field(
        description="What the first graph output [B, frames, tokens] holds; logits get a log_softmax."
    )
    subsampling_factor: int | None = Field(
        None,
        gt=0,
        description="Without a second graph output (int64 [B] frame lengths): frames = ceil(input length / this).",
    )
    seconds_per_frame: float = Field(gt=0, description="Audio time per output frame, e.g. 0.02 or 0.04.")
    start_offset_s: float = Field(0.0, description="Added to a word's first frame time (receptive-field centre).")
    end_offset_s: float = Field(0.0, description="Added to a word's end frame time.")
    blank_index: int = Field(0, ge=0, description="The CTC blank's index in the tokens file.")
    tokens: str = Field("tokens.txt", description="Tokens file, one token per line, relative to the spec file.")
    words: Literal["boundary_token", "sentencepiece", "lexicon"] = Field(
        description="boundary_token: a token such as `|` between words; sentencepiece: a `▁` prefix starts a "
        "word; lexicon: the project's phonemes, decoded with its lexicon and LM."
    )
    boundary_token: str = Field("|", description="The word-boundary token, with words boundary_token.")

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if (self.input == "fbank") != (self.fbank is not None):
            raise ValueError("fbank parameters are required with input fbank, and only then")
        return self


def spec_path(model: Path) -> Path:
    """The spec sits next to the model: ``model.onnx`` -> ``model.json``."""
    return model.with_suffix(".json")


def read_spec(path: Path) -> ModelSpec:
    """Parse and validate a spec file; any problem is one CheckpointError line naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: feature spec not found (it sits next to the model, same name, .json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc})") from exc
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "spec"
        raise CheckpointError(f"{path}: {where}: {first['msg']}") from exc


def read_tokens(path: Path) -> list[str]:
    """One token per line (trailing whitespace ignored, a space token is not supported)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: tokens file not found")
    tokens = [line.rstrip() for line in path.read_text(encoding="utf-8").splitlines()]
    while tokens and not tokens[-1]:
        tokens.pop()
    if not tokens or any(not token for token in tokens):
        raise CheckpointError(f"{path}: tokens file has an empty line")
    return tokens
