"""The injectable clock the pure-logic tests drive by hand."""

from __future__ import annotations


class FakeClock:
    """Returns ``now`` until a test moves it; the unit (seconds or ms) is the caller's."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, delta: float) -> None:
        self.now += delta
