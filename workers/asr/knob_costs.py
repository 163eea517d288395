"""What each degradation knob saves on this machine, measured once when the worker starts.

The savings differ by machine (on a GPU the model is launch-bound and int8 does not exist; on a
2-core CPU the model is most of a batch), so the controller gets them measured, not assumed.
Importing this module loads no torch: the controller can use the knob names and ``KnobCosts``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from workers.asr.tiers import TIER_FULL, TIER_INT8

if TYPE_CHECKING:
    from workers.asr.recognizer import Recognizer

KNOB_WINDOW = "window"  # windows of min_window_secs instead of window_secs
KNOB_BEAM2 = "beam2"  # beam 2 instead of 4
KNOB_GREEDY = "greedy"  # beam 1 instead of 4
KNOB_INT8 = "int8"  # the int8 model tier instead of full
KNOBS = (KNOB_WINDOW, KNOB_BEAM2, KNOB_GREEDY, KNOB_INT8)
# A knob never reads as free: a measured saving is at most this.
_MAX_SAVING = 0.999


@dataclass(frozen=True)
class KnobCosts:
    """Batch time at the base settings and, per knob alone, the fraction of it that the knob saves."""

    base_ms: float
    saving: Mapping[str, float]

    def as_dict(self) -> dict[str, object]:
        return {"base_ms": self.base_ms, "saving": dict(self.saving)}


def measure_knob_costs(
    recognizer: Recognizer,
    sample_rate: int = 16000,
    window_secs: float = 1.28,
    min_window_secs: float = 0.96,
    batch_size: int = 8,
    runs: int = 5,
) -> KnobCosts:
    """Median ``transcribe`` time of a batch of shipped-sample speech, base (beam 4, full) vs each knob.

    One warm-up per configuration, then ``runs`` rounds that time every configuration in turn, so a
    change of load on the machine hits all of them alike. The int8 saving is 0 without timing where
    the device has no int8 tier. At runs=5 the whole call took 1.7 s on the 2-core dev CPU
    (building the int8 copy included).
    """
    if sample_rate != recognizer.sample_rate:
        raise ValueError(f"the recognizer takes {recognizer.sample_rate} Hz audio, got sample_rate={sample_rate}")
    if not 0 < min_window_secs <= window_secs:
        raise ValueError(f"need 0 < min_window_secs <= window_secs, got {min_window_secs} and {window_secs}")
    if runs < 1 or batch_size < 1:
        raise ValueError(f"need runs >= 1 and batch_size >= 1, got {runs} and {batch_size}")
    # torch-heavy: loaded here so that importing the knob names stays light.
    from pipeline.demo import SAMPLES_DIR
    from workers.asr.audio import load_audio
    from workers.asr.bench import windows_from

    sources = [load_audio(path) for path in sorted(SAMPLES_DIR.glob("*.wav"))]
    full = windows_from(sources, batch_size, length=round(window_secs * sample_rate))
    short = [w[: round(min_window_secs * sample_rate)] for w in full]
    configs: dict[str | None, Callable[[], object]] = {
        None: lambda: recognizer.transcribe(full, 4, TIER_FULL),
        KNOB_WINDOW: lambda: recognizer.transcribe(short, 4, TIER_FULL),
        KNOB_BEAM2: lambda: recognizer.transcribe(full, 2, TIER_FULL),
        KNOB_GREEDY: lambda: recognizer.transcribe(full, 1, TIER_FULL),
    }
    if TIER_INT8 in recognizer.tiers_available():
        configs[KNOB_INT8] = lambda: recognizer.transcribe(full, 4, TIER_INT8)
    times: dict[str | None, list[float]] = {name: [] for name in configs}
    for fn in configs.values():
        fn()
    for _ in range(runs):
        for name, fn in configs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - t0))
    base = float(np.median(times[None]))
    saving = {knob: 0.0 for knob in KNOBS}
    for knob in KNOBS:
        if knob in times:
            fraction = 1.0 - float(np.median(times[knob])) / base
            saving[knob] = round(min(max(fraction, 0.0), _MAX_SAVING), 3)
    return KnobCosts(round(base, 2), MappingProxyType(saving))
