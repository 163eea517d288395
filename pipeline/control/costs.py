"""What each ladder level costs in recognizer compute, relative to full quality (pure, no Kafka).

A level pays for itself only through what it saves. Three kinds of saving compose:

* **Inference stride.** At a throttled emit interval (320 ms = two hops) a partial goes out only
  every other hop, so the worker runs a session's non-final hop only every ``stride``-th time
  (:func:`inference_stride`): half the compute at emit 320.
* **Knobs the engine prices itself**: the shorter window, beam 2, greedy decoding, a cheaper
  model tier. What these save depends on the engine and the device (the beam steps save
  0-7% on the CPU engine, more where the decoder dominates), so the worker measures them at
  start-up and publishes them; until such a measurement arrives :data:`DEFAULT_SAVINGS` stands
  in (the window in proportion to its length, the beam steps at the CPU figures).
* **Admission** saves nothing for running sessions: it only stops new load.

The controller uses :func:`level_costs` to predict the load at another level and to skip levels
whose saving is below a threshold (:func:`worthwhile_levels`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipeline.control.ladder import Knobs

#: Knob names of the savings map (the worker's measurement uses the same names).
KNOB_WINDOW = "window"
KNOB_BEAM2 = "beam2"
KNOB_GREEDY = "greedy"
KNOB_INT8 = "int8"

#: Fractions saved per knob when the worker has not published its own measurement.
DEFAULT_SAVINGS: Mapping[str, float] = {KNOB_BEAM2: 0.02, KNOB_GREEDY: 0.05, KNOB_INT8: 0.0}


def inference_stride(knobs: Knobs, hop_ms: int) -> int:
    """Run every n-th non-final hop of a session: partials go out every ``emit_interval_ms`` anyway."""
    return max(1, knobs.emit_interval_ms // hop_ms)


def _saving(savings: Mapping[str, float], knob: str, default: float) -> float:
    value = savings.get(knob, DEFAULT_SAVINGS.get(knob, default))
    return min(max(float(value), 0.0), 0.95) if value == value else default


def level_cost(knobs: Knobs, full: Knobs, savings: Mapping[str, float], hop_ms: int) -> float:
    """Compute per second of audio at ``knobs``, as a fraction of ``full``'s."""
    cost = inference_stride(full, hop_ms) / inference_stride(knobs, hop_ms)
    if knobs.window_secs < full.window_secs:
        cost *= 1.0 - _saving(savings, KNOB_WINDOW, 1.0 - knobs.window_secs / full.window_secs)
    if knobs.beam == 1 < full.beam:
        cost *= 1.0 - _saving(savings, KNOB_GREEDY, 0.0)
    elif knobs.beam < full.beam:
        cost *= 1.0 - _saving(savings, KNOB_BEAM2, 0.0)
    if knobs.tier != full.tier:
        cost *= 1.0 - _saving(savings, KNOB_INT8, 0.0)
    return cost


def level_costs(ladder: Sequence[Knobs], savings: Mapping[str, float], hop_ms: int) -> tuple[float, ...]:
    """:func:`level_cost` of every level of ``ladder`` (level 0 first, cost 1.0)."""
    return tuple(level_cost(knobs, ladder[0], savings, hop_ms) for knobs in ladder)


def worthwhile_levels(ladder: Sequence[Knobs], costs: Sequence[float], min_saving: float) -> tuple[int, ...]:
    """The levels the controller may move to: level 0, each level saving at least ``min_saving`` of the
    compute of the last worthwhile level below it, and the top level (admission) as the last resort.

    A level that saves less costs quality (a narrower beam) for nearly nothing, so it is skipped.
    """
    kept = [0]
    for level in range(1, len(ladder)):
        last = kept[-1]
        top = level == len(ladder) - 1
        if top or costs[level] <= costs[last] * (1.0 - min_saving):
            kept.append(level)
    return tuple(kept)
