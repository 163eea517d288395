"""The demo's overload scenarios, as given on the command line: a slowdown window and a burst of sessions.

Kept apart from :mod:`pipeline.demo.service` so the CLI can parse them without importing the pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class SlowdownWindow:
    """``--slowdown-at T1:T2:K``: the worker runs K times slower from T1 to T2 seconds of streaming."""

    start_s: float
    end_s: float
    factor: float

    def factor_at(self, elapsed_s: float) -> float:
        return self.factor if self.start_s <= elapsed_s < self.end_s else 1.0

    @classmethod
    def parse(cls, text: str) -> SlowdownWindow:
        """``"10:40:3"`` -> 3x from 10 s to 40 s; ValueError with a one-line reason otherwise."""
        try:
            start, end, factor = (_finite(part) for part in text.split(":"))
        except ValueError:
            raise ValueError(f"{text!r} is not T1:T2:K (e.g. 10:40:3)") from None
        if not 0 <= start < end or factor < 1:
            raise ValueError(f"{text!r}: need 0 <= T1 < T2 and K >= 1")
        return cls(start, end, factor)


@dataclass(frozen=True)
class Burst:
    """``--burst N@T``: N more sessions join T seconds into the run (admission is checked as each joins)."""

    sessions: int
    at_s: float

    @classmethod
    def parse(cls, text: str) -> Burst:
        """``"10@15"`` -> 10 sessions joining at 15 s; ValueError with a one-line reason otherwise."""
        try:
            count, at = text.split("@")
            burst = cls(int(count), _finite(at))
        except ValueError:
            raise ValueError(f"{text!r} is not N@T (e.g. 10@15)") from None
        if burst.sessions < 1 or burst.at_s < 0:
            raise ValueError(f"{text!r}: need N >= 1 and T >= 0")
        return burst


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value
