"""Checkpoint format: model weights (fp16), config, token list and provenance, in one torch file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pipeline.errors import CliError
from workers.asr.model import AcousticModel, ModelConfig

FORMAT = "hopline-asr/1"
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_CHECKPOINT = ASSETS / "asr.pt"


class CheckpointError(CliError):
    """The checkpoint file is missing, unreadable or does not fit this code or its assets."""


def save(path: Path, model: AcousticModel, tokens: list[str], info: dict[str, Any]) -> None:
    """Write weights as fp16 (half the size, no measurable accuracy change for inference)."""
    state = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"format": FORMAT, "config": model.config.to_dict(), "tokens": tokens, "state": state, "info": info}, tmp
    )
    tmp.replace(path)


def load(path: Path, map_location: str | torch.device = "cpu") -> tuple[AcousticModel, list[str], dict]:
    """Rebuild the model; any problem becomes one CheckpointError line naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found (train one with `hopline asr train`)")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from exc
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
    try:
        config = ModelConfig(**blob["config"])
        tokens = list(blob["tokens"])
        if len(tokens) != config.n_tokens:
            raise ValueError(f"{len(tokens)} tokens for a {config.n_tokens}-way output")
        model = AcousticModel(config)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()})
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: checkpoint does not match the model code ({first[:160]})") from exc
    return model.eval(), tokens, dict(blob.get("info", {}))
