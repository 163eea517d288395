"""The clocks: one wall clock for event timestamps, one type for the clocks pure policies take.

Pure policies take a ``Clock`` argument so tests drive time by hand; each says its unit.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: A zero-argument function returning the current time (the unit is the caller's contract).
Clock = Callable[[], float]


def now_ms() -> float:
    """Wall-clock ms since epoch: the one clock every event timestamp uses."""
    return time.time() * 1000.0
