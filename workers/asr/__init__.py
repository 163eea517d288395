"""hopline's speech recognizer. Attributes load lazily so that importing the CLI stays fast (no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.asr.backends import BACKENDS, load_recognizer
    from workers.asr.checkpoint import DEFAULT_CHECKPOINT, CheckpointError
    from workers.asr.knob_costs import KnobCosts, measure_knob_costs
    from workers.asr.recognizer import Recognition, Recognizer, WordTiming

from workers.asr.tiers import TIER_FULL, TIER_INT8, TIERS

__all__ = [
    "BACKENDS",
    "DEFAULT_CHECKPOINT",
    "TIERS",
    "TIER_FULL",
    "TIER_INT8",
    "CheckpointError",
    "KnobCosts",
    "Recognition",
    "Recognizer",
    "WordTiming",
    "load_recognizer",
    "measure_knob_costs",
]


def __getattr__(name: str) -> Any:
    if name in ("BACKENDS", "load_recognizer"):
        from workers.asr import backends

        return getattr(backends, name)
    if name in ("DEFAULT_CHECKPOINT", "CheckpointError"):
        from workers.asr import checkpoint

        return getattr(checkpoint, name)
    if name in ("Recognition", "Recognizer", "WordTiming"):
        from workers.asr import recognizer

        return getattr(recognizer, name)
    if name in ("KnobCosts", "measure_knob_costs"):
        from workers.asr import knob_costs

        return getattr(knob_costs, name)
    raise AttributeError(f"module 'workers.asr' has no attribute {name!r}")
