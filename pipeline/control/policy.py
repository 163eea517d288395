"""The degradation controller's decisions, as plain Python with an injectable clock.

The policy keeps the latency events of the last ``window_s`` seconds and walks the ladder of
:func:`pipeline.control.ladder`:

- **Raise on queue_wait p95, proactively.** Queueing is the first thing to grow when the
  worker falls behind, so each ``raise_queue_wait_ms`` threshold the p95 exceeds sets a
  minimum level; the level jumps straight there, several steps at once if need be.
- **Raise on e2e p95, as the backstop.** When the hops of the last ``raise_hold_s``, all
  cut at the current level, still put e2e p95 above ``e2e_raise_fraction`` of the target,
  go one level further (at most once per ``raise_hold_s``, so a step gets to take effect
  before the next, and only on what is slow now, not on a spike that has passed).
- **Step down slowly.** One level at a time, only after queue_wait p95 stayed below
  ``recover_fraction`` of the current level's threshold and e2e p95 below
  ``e2e_recover_fraction`` of the target for ``recover_hold_s`` (hysteresis: no flapping).
- **No decision on thin evidence**: fewer than ``min_events`` events in the window, or
  fewer than that many hops cut at the current level for the e2e rule.
- **Hold on a transport alarm.** When the broker probe's verdict (:mod:`pipeline.observe.probe`)
  says the transport is slow, a raise either rule wants is withheld: a slow broker is not fixed
  by lower quality, and degrading for it costs accuracy for nothing. The level holds (stepping
  down stays allowed) and :attr:`ControlPolicy.hold` names the raise withheld, with the probe's
  figures. Without a verdict (no probe, or too few measurements) the rules above apply unchanged.

Every :class:`Decision` (and :class:`TransportHold`) carries its reason and the metric values behind it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pipeline import contracts
from pipeline.control.ladder import Knobs, ladder
from pipeline.observe.latency import MEASURES, measures, percentile
from pipeline.observe.probe import ProbeVerdict
from pipeline.settings import Settings

Direction = Literal["raise", "lower"]


@dataclass(frozen=True)
class Sample:
    """One hop's latency breakdown as the policy keeps it."""

    observed_s: float
    level: int
    components_ms: Mapping[str, float]

    @classmethod
    def from_event(cls, event: contracts.LatencyEvent, observed_s: float) -> Sample:
        return cls(observed_s=observed_s, level=event.control_level, components_ms=measures(event))


@dataclass(frozen=True)
class WindowStats:
    """p50 and p95 per component over a set of samples."""

    events: int
    p50: Mapping[str, float]
    p95: Mapping[str, float]

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> WindowStats:
        by_component: dict[str, list[float]] = {name: [] for name in MEASURES}
        count = 0
        for sample in samples:
            count += 1
            for name in MEASURES:
                by_component[name].append(sample.components_ms[name])
        return cls(
            events=count,
            p50={name: percentile(values, 50) for name, values in by_component.items()},
            p95={name: percentile(values, 95) for name, values in by_component.items()},
        )

    def as_metrics(self) -> dict[str, float]:
        """Flat ``<component>_ms_p50/_p95`` map, the ControlCommand's ``metrics`` field."""
        metrics: dict[str, float] = {"events": float(self.events)}
        for name in MEASURES:
            metrics[f"{name}_ms_p50"] = round(self.p50[name], 3)
            metrics[f"{name}_ms_p95"] = round(self.p95[name], 3)
        return metrics


@dataclass(frozen=True)
class Decision:
    """A level change with the knobs it sets, why, and the figures that triggered it."""

    previous_level: int
    knobs: Knobs
    direction: Direction
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def level(self) -> int:
        return self.knobs.level


@dataclass(frozen=True)
class TransportHold:
    """A raise withheld because the broker probe says the transport is slow: the level stays."""

    withheld: Decision
    probe: ProbeVerdict

    @property
    def level(self) -> int:
        """The level that holds."""
        return self.withheld.previous_level

    @property
    def reason(self) -> str:
        return (
            f"transport alarm ({self.probe.reason}): holding level {self.level} instead of raising to "
            f"{self.withheld.level} on {self.withheld.reason}"
        )

    @property
    def metrics(self) -> dict[str, float]:
        """The latency figures that would have raised, the probe's figures and the level withheld."""
        return {**self.withheld.metrics, **self.probe.as_metrics(), "withheld_level": float(self.withheld.level)}


class ControlPolicy:
    """Sliding-window percentiles and the ladder walk; feed :meth:`observe`, call :meth:`evaluate` per tick."""

    def __init__(self, settings: Settings, level: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = settings.controller
        self._ladder = ladder(settings)
        if not 0 <= level < len(self._ladder):
            raise ValueError(f"level {level} is not on the ladder (0..{len(self._ladder) - 1})")
        self._clock = clock
        self._level = level
        self._samples: deque[Sample] = deque()
        self._last_change_s = clock()
        self._recovering_since_s: float | None = None
        #: The raise withheld by the last :meth:`evaluate` on a transport alarm, else None.
        self.hold: TransportHold | None = None

    @property
    def level(self) -> int:
        return self._level

    @property
    def knobs(self) -> Knobs:
        return self._ladder[self._level]

    @property
    def max_level(self) -> int:
        return len(self._ladder) - 1

    def observe(self, event: contracts.LatencyEvent) -> None:
        """Take one decoded LatencyEvent, stamped with the policy clock's now."""
        self._samples.append(Sample.from_event(event, self._clock()))

    def stats(self) -> WindowStats:
        self._prune(self._clock())
        return WindowStats.of(self._samples)

    def _prune(self, now_s: float) -> None:
        horizon = now_s - self._config.window_s
        while self._samples and self._samples[0].observed_s < horizon:
            self._samples.popleft()

    def threshold_ms(self, level: int) -> float:
        """The queue_wait p95 that raises to ``level`` (levels past the tuple share its last entry)."""
        thresholds = self._config.raise_queue_wait_ms
        return thresholds[min(level, len(thresholds)) - 1]

    def evaluate(self, transport: ProbeVerdict | None = None) -> Decision | None:
        """One tick: a :class:`Decision` when the level changes, else None.

        ``transport``: the broker probe's current verdict, if any; while it says the transport is
        slow, a raise is withheld and kept in :attr:`hold` instead (see the module's rules).
        """
        now = self._clock()
        self.hold = None
        self._prune(now)
        stats = WindowStats.of(self._samples)
        if stats.events < self._config.min_events:
            self._recovering_since_s = None
            return None
        metrics = stats.as_metrics()
        queue_wait = stats.p95["queue_wait"]
        decision = self._raise_on_queue_wait(queue_wait, metrics) or self._raise_on_e2e(now, metrics)
        if decision is not None:
            if transport is None or not transport.transport_slow:
                return self._apply(decision, now)
            self.hold = TransportHold(withheld=decision, probe=transport)
        return self._maybe_step_down(now, queue_wait, stats.p95["e2e"], metrics)

    def _raise_on_queue_wait(self, queue_wait_p95: float, metrics: dict[str, float]) -> Decision | None:
        thresholds = self._config.raise_queue_wait_ms
        wanted = min(sum(queue_wait_p95 > t for t in thresholds), self.max_level)
        if wanted <= self._level:
            return None
        threshold = thresholds[wanted - 1]
        return Decision(
            previous_level=self._level,
            knobs=self._ladder[wanted],
            direction="raise",
            reason=f"queue_wait p95 {queue_wait_p95:.0f} ms > {threshold:.0f} ms",
            metrics={**metrics, "threshold_ms": threshold},
        )

    def _raise_on_e2e(self, now_s: float, metrics: dict[str, float]) -> Decision | None:
        if self._level >= self.max_level or now_s - self._last_change_s < self._config.raise_hold_s:
            return None
        since = now_s - self._config.raise_hold_s
        at_level = [s.components_ms["e2e"] for s in self._samples if s.level >= self._level and s.observed_s >= since]
        if len(at_level) < self._config.min_events:
            return None
        e2e_p95 = percentile(at_level, 95)
        limit = self._config.e2e_raise_fraction * self._config.e2e_p95_target_ms
        if e2e_p95 <= limit:
            return None
        return Decision(
            previous_level=self._level,
            knobs=self._ladder[self._level + 1],
            direction="raise",
            reason=f"e2e p95 {e2e_p95:.0f} ms at level {self._level} over the last {self._config.raise_hold_s:g} s "
            f"> {limit:.0f} ms ({self._config.e2e_raise_fraction:.0%} of the {self._config.e2e_p95_target_ms:.0f} ms "
            "target)",
            metrics={**metrics, "level_e2e_ms_p95": round(e2e_p95, 3), "threshold_ms": limit},
        )

    def _maybe_step_down(
        self, now_s: float, queue_wait_p95: float, e2e_p95: float, metrics: dict[str, float]
    ) -> Decision | None:
        if self._level == 0:
            self._recovering_since_s = None
            return None
        queue_bound = self._config.recover_fraction * self.threshold_ms(self._level)
        e2e_bound = self._config.e2e_recover_fraction * self._config.e2e_p95_target_ms
        if queue_wait_p95 >= queue_bound or e2e_p95 >= e2e_bound:
            self._recovering_since_s = None
            return None
        if self._recovering_since_s is None:
            self._recovering_since_s = now_s
        held = now_s - self._recovering_since_s
        if held < self._config.recover_hold_s:
            return None
        decision = Decision(
            previous_level=self._level,
            knobs=self._ladder[self._level - 1],
            direction="lower",
            reason=f"recovered for {held:.1f} s: queue_wait p95 {queue_wait_p95:.0f} ms < {queue_bound:.0f} ms "
            f"and e2e p95 {e2e_p95:.0f} ms < {e2e_bound:.0f} ms",
            metrics={**metrics, "threshold_ms": queue_bound, "recovered_s": round(held, 3)},
        )
        return self._apply(decision, now_s)

    def _apply(self, decision: Decision, now_s: float) -> Decision:
        self._level = decision.level
        self._last_change_s = now_s
        self._recovering_since_s = None
        return decision
