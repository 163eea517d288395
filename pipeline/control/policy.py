"""The degradation controller's decisions, as plain Python with an injectable clock.

The policy keeps the latency events of the last ``window_s`` seconds and walks the ladder of
:func:`pipeline.control.ladder`, moving only between *worthwhile* levels: a level whose predicted
compute saving (:mod:`pipeline.control.costs`, priced by the worker's own start-up measurement
when it has published one) is below ``min_level_saving`` is skipped, so no accuracy is paid for
nothing. Its inputs are the pipeline's own clocks: ``e2e`` here is the trusted end-to-end time,
one hop period plus the components measured by the windower, worker and assembler
(``net`` ... ``post``), never the client's capture timestamp; an event with a non-finite or
absurd figure is refused (:meth:`ControlPolicy.observe` returns False) instead of counted.

- **Raise on load.** Per worker, the busy fraction (inference time per second, from each hop's
  share of its batch) and the ratio of hops skipped as stale give the *offered load*
  ``busy x (1 + skipped/run)``, the load the worker would carry if it skipped nothing. It is
  what actually moves under overload: once stale hops are coalesced, queue_wait stays near one
  hop period however far behind the worker is. Above ``raise_load`` the level goes straight to
  the lowest worthwhile level predicted to bring it under ``target_load`` (the top level when none
  does). Measured over ``load_window_s`` of hops cut at the current level only.
- **Raise on queue_wait p95, proactively** (the design's first signal): each ``raise_queue_wait_ms``
  threshold the p95 of hops cut at the current level exceeds sets a minimum level (rounded up to a
  worthwhile one), at most once per ``raise_hold_s`` and never to the admission level: refusing new
  sessions does nothing for the queue of the running ones.
- **Raise on e2e p95, as the backstop.** When the hops of the last ``raise_hold_s``, all cut at the
  current level, still put the trusted e2e p95 above ``e2e_raise_fraction`` of the target, go one
  worthwhile level further (at most once per ``raise_hold_s``).
- **Step down after a sustained recovery**, only once queue_wait p95 of the hops cut at the
  current level stayed below
  ``recover_fraction`` of the current level's threshold, trusted e2e p95 below
  ``e2e_recover_fraction`` of the target and the offered load predicted at the lower level below
  ``recover_load``, all for ``recover_hold_s`` (hysteresis: no flapping back into overload). With
  the load measured it goes straight to the lowest worthwhile level predicted to carry it;
  without, one worthwhile level at a time.
- **No decision on thin evidence**: fewer than ``min_events`` events in the window.
- **Hold on a transport alarm.** When the broker probe's verdict (:mod:`pipeline.observe.probe`)
  says the transport is slow, a raise either rule wants is withheld: a slow broker is not fixed
  by lower quality. The level holds (stepping down stays allowed) and :attr:`ControlPolicy.hold`
  names the raise withheld, with the probe's figures.
- **Propose, then commit.** :meth:`ControlPolicy.evaluate` only proposes; the level moves when the
  controller calls :meth:`ControlPolicy.commit` after the command was acknowledged, so a command
  that never reached the followers is proposed again at the next tick.

Every :class:`Decision` (and :class:`TransportHold`) carries its reason and the metric values behind it.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pipeline import contracts
from pipeline.control.costs import level_costs, worthwhile_levels
from pipeline.control.ladder import Knobs, ladder
from pipeline.observe.latency import COMPONENTS, MEASURES, measures, percentile
from pipeline.observe.probe import ProbeVerdict
from pipeline.settings import Settings

Direction = Literal["raise", "lower"]

#: Components measured on the pipeline's own clocks; with one hop period they make the trusted e2e.
TRUSTED_COMPONENTS = tuple(name for name in COMPONENTS if name != "hop_buffer")

#: A pipeline-clock component outside this range (ms) is not a measurement: hosts' clocks that
#: disagree by seconds, or a forged event. Such events are refused, not counted.
PLAUSIBLE_COMPONENT_MS = (-1_000.0, 600_000.0)


@dataclass(frozen=True)
class Sample:
    """One hop's latency breakdown as the policy keeps it (``e2e`` is the trusted one)."""

    observed_s: float
    level: int
    worker_id: str
    components_ms: Mapping[str, float]
    #: The hop's share of its batch's inference time: summed per worker it gives the busy time.
    infer_share_ms: float
    skipped_before: int

    @classmethod
    def from_event(cls, event: contracts.LatencyEvent, observed_s: float, hop_ms: float) -> Sample | None:
        """None when a pipeline-clock figure is not finite or out of :data:`PLAUSIBLE_COMPONENT_MS`."""
        figures = measures(event)
        low, high = PLAUSIBLE_COMPONENT_MS
        if any(not (math.isfinite(figures[name]) and low <= figures[name] <= high) for name in TRUSTED_COMPONENTS):
            return None
        if event.batch_size < 1 or event.skipped_before < 0:
            return None
        components = {**figures, "e2e": hop_ms + sum(figures[name] for name in TRUSTED_COMPONENTS)}
        return cls(
            observed_s=observed_s,
            level=event.control_level,
            worker_id=event.worker_id,
            components_ms=components,
            infer_share_ms=max(figures["gpu_infer"], 0.0) / event.batch_size,
            skipped_before=event.skipped_before,
        )


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
class Load:
    """How hard the busiest worker works at the current level, over the load window."""

    busy: float
    skip_ratio: float
    span_s: float
    events: int

    @property
    def offered(self) -> float:
        """The load it would carry without skipping: a skipped hop would have cost about as much as a run one."""
        return self.busy * (1.0 + self.skip_ratio)

    def as_metrics(self) -> dict[str, float]:
        return {
            "busy": round(self.busy, 4),
            "skip_ratio": round(self.skip_ratio, 4),
            "offered_load": round(self.offered, 4),
            "load_span_s": round(self.span_s, 3),
        }


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
    """Sliding-window signals and the ladder walk; feed :meth:`observe`, call :meth:`evaluate` per tick."""

    def __init__(self, settings: Settings, level: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = settings.controller
        self._hop_ms = float(settings.audio.hop_ms)
        self._ladder = ladder(settings)
        if not 0 <= level < len(self._ladder):
            raise ValueError(f"level {level} is not on the ladder (0..{len(self._ladder) - 1})")
        self._clock = clock
        self._level = level
        self._samples: deque[Sample] = deque()
        #: No change yet: the holds that let a change take effect do not apply to the level it started at.
        self._last_change_s = -math.inf
        self._recovering_since_s: float | None = None
        self.set_savings({})
        #: The raise withheld by the last :meth:`evaluate` on a transport alarm, else None.
        self.hold: TransportHold | None = None
        #: Events refused by :meth:`observe` (non-finite or implausible figures).
        self.refused = 0

    @property
    def level(self) -> int:
        return self._level

    @property
    def knobs(self) -> Knobs:
        return self._ladder[self._level]

    @property
    def max_level(self) -> int:
        return len(self._ladder) - 1

    @property
    def costs(self) -> tuple[float, ...]:
        """Predicted compute of each level relative to level 0."""
        return self._costs

    @property
    def worthwhile(self) -> tuple[int, ...]:
        """The levels the policy moves between (see :func:`~pipeline.control.costs.worthwhile_levels`)."""
        return self._worthwhile

    def set_savings(self, savings: Mapping[str, float]) -> None:
        """Price the levels with what the worker measured each knob saves (knob name -> fraction)."""
        self._costs = level_costs(self._ladder, savings, int(self._hop_ms))
        self._worthwhile = worthwhile_levels(self._ladder, self._costs, self._config.min_level_saving)

    def observe(self, event: contracts.LatencyEvent) -> bool:
        """Take one decoded LatencyEvent, stamped with the policy clock's now; False if refused."""
        sample = Sample.from_event(event, self._clock(), self._hop_ms)
        if sample is None:
            self.refused += 1
            return False
        self._samples.append(sample)
        return True

    def stats(self) -> WindowStats:
        self._prune(self._clock())
        return WindowStats.of(self._samples)

    def load(self) -> Load | None:
        """The busiest worker's load over the hops cut at the current level in the load window; None if too few."""
        now = self._clock()
        span = min(self._config.load_window_s, now - self._last_change_s)
        since = now - span
        recent = [s for s in self._samples if s.observed_s >= since and s.level == self._level]
        if span < self._config.load_window_s / 3 or len(recent) < self._config.min_events // 2:
            return None
        busy_ms: dict[str, float] = defaultdict(float)
        for sample in recent:
            busy_ms[sample.worker_id] += sample.infer_share_ms
        skipped = sum(s.skipped_before for s in recent)
        return Load(
            busy=max(busy_ms.values()) / (span * 1000.0),
            skip_ratio=skipped / len(recent),
            span_s=span,
            events=len(recent),
        )

    def _prune(self, now_s: float) -> None:
        horizon = now_s - self._config.window_s
        while self._samples and self._samples[0].observed_s < horizon:
            self._samples.popleft()

    def threshold_ms(self, level: int) -> float:
        """The queue_wait p95 that raises to ``level`` (levels past the tuple share its last entry)."""
        thresholds = self._config.raise_queue_wait_ms
        return thresholds[min(level, len(thresholds)) - 1]

    def _worthwhile_at_least(self, level: int) -> int:
        return next(kept for kept in self._worthwhile if kept >= level)

    def _next_up(self) -> int | None:
        return next((kept for kept in self._worthwhile if kept > self._level), None)

    def _next_down(self) -> int | None:
        return next((kept for kept in reversed(self._worthwhile) if kept < self._level), None)

    def evaluate(self, transport: ProbeVerdict | None = None) -> Decision | None:
        """One tick: the proposed :class:`Decision` when the level should change, else None.

        Nothing moves until :meth:`commit`. ``transport``: the broker probe's current verdict, if
        any; while it says the transport is slow, a raise is withheld and kept in :attr:`hold`.
        """
        now = self._clock()
        self.hold = None
        self._prune(now)
        stats = WindowStats.of(self._samples)
        if stats.events < self._config.min_events:
            self._recovering_since_s = None
            return None
        load = self.load()
        metrics = {**stats.as_metrics(), **(load.as_metrics() if load is not None else {})}
        decision = (
            self._raise_on_load(load, metrics)
            or self._raise_on_queue_wait(now, metrics)
            or self._raise_on_e2e(now, metrics)
        )
        if decision is not None:
            if transport is None or not transport.transport_slow:
                return decision
            self.hold = TransportHold(withheld=decision, probe=transport)
        here = WindowStats.of(s for s in self._samples if s.level == self._level)
        if here.events < self._config.min_events:
            self._recovering_since_s = None
            return None
        return self._maybe_step_down(now, here.p95["queue_wait"], here.p95["e2e"], load, metrics)

    def commit(self, decision: Decision) -> None:
        """Put a decision from :meth:`evaluate` in force (the controller calls this once it is delivered)."""
        if decision.previous_level != self._level:
            raise ValueError(f"decision from level {decision.previous_level}, but level {self._level} is in force")
        self._level = decision.level
        self._last_change_s = self._clock()
        self._recovering_since_s = None

    def _raise(self, level: int, reason: str, metrics: dict[str, float]) -> Decision:
        return Decision(
            previous_level=self._level, knobs=self._ladder[level], direction="raise", reason=reason, metrics=metrics
        )

    def _raise_on_load(self, load: Load | None, metrics: dict[str, float]) -> Decision | None:
        if load is None or load.offered <= self._config.raise_load or self._next_up() is None:
            return None
        here = self._costs[self._level]
        target = self._config.target_load
        wanted = next(
            (
                kept
                for kept in self._worthwhile
                if kept > self._level and load.offered * self._costs[kept] / here <= target
            ),
            self.max_level,
        )
        predicted = load.offered * self._costs[wanted] / here
        return self._raise(
            wanted,
            f"offered load {load.offered:.2f} (busy {load.busy:.2f}, skipped {load.skip_ratio:.2f} per hop run) "
            f"> {self._config.raise_load:.2f}; level {wanted} predicts {predicted:.2f}",
            {**metrics, "threshold_load": self._config.raise_load, "predicted_load": round(predicted, 4)},
        )

    def _raise_on_queue_wait(self, now_s: float, metrics: dict[str, float]) -> Decision | None:
        """Queueing of hops cut at the current level since the last change, once it has had ``raise_hold_s``
        to take effect (a burst from before a step down must not raise straight back).

        Never to the admission level: refusing new sessions does nothing for the queue of the running
        ones, so only the load rule (when no compute level fits) and the e2e backstop close admission.
        """
        if now_s - self._last_change_s < self._config.raise_hold_s:
            return None
        since = self._last_change_s
        at_level = [
            s.components_ms["queue_wait"] for s in self._samples if s.level >= self._level and s.observed_s >= since
        ]
        if len(at_level) < self._config.min_events:
            return None
        queue_wait_p95 = percentile(at_level, 95)
        thresholds = self._config.raise_queue_wait_ms
        exceeded = min(sum(queue_wait_p95 > t for t in thresholds), self.max_level - 1)
        if exceeded == 0:
            return None
        wanted = min(self._worthwhile_at_least(exceeded), self.max_level - 1)
        if wanted <= self._level:
            return None
        threshold = thresholds[exceeded - 1]
        return self._raise(
            wanted,
            f"queue_wait p95 {queue_wait_p95:.0f} ms > {threshold:.0f} ms",
            {**metrics, "level_queue_wait_ms_p95": round(queue_wait_p95, 3), "threshold_ms": threshold},
        )

    def _raise_on_e2e(self, now_s: float, metrics: dict[str, float]) -> Decision | None:
        wanted = self._next_up()
        if wanted is None or now_s - self._last_change_s < self._config.raise_hold_s:
            return None
        since = now_s - self._config.raise_hold_s
        at_level = [s.components_ms["e2e"] for s in self._samples if s.level >= self._level and s.observed_s >= since]
        if len(at_level) < self._config.min_events:
            return None
        e2e_p95 = percentile(at_level, 95)
        limit = self._config.e2e_raise_fraction * self._config.e2e_p95_target_ms
        if e2e_p95 <= limit:
            return None
        return self._raise(
            wanted,
            f"e2e p95 {e2e_p95:.0f} ms at level {self._level} over the last {self._config.raise_hold_s:g} s "
            f"> {limit:.0f} ms ({self._config.e2e_raise_fraction:.0%} of the {self._config.e2e_p95_target_ms:.0f} ms "
            "target)",
            {**metrics, "level_e2e_ms_p95": round(e2e_p95, 3), "threshold_ms": limit},
        )

    def _lowest_fitting(self, load: Load, lower: int) -> int:
        """The lowest worthwhile level at or below ``lower`` predicted to carry the load under ``recover_load``.

        With the load measured, a recovery goes straight there (one decision instead of one per level);
        without it, one level at a time.
        """
        here = self._costs[self._level]
        fitting = [
            kept
            for kept in self._worthwhile
            if kept <= lower and load.offered * self._costs[kept] / here < self._config.recover_load
        ]
        return fitting[0] if fitting else lower

    def _maybe_step_down(
        self, now_s: float, queue_wait_p95: float, e2e_p95: float, load: Load | None, metrics: dict[str, float]
    ) -> Decision | None:
        lower = self._next_down()
        if lower is None:
            self._recovering_since_s = None
            return None
        queue_bound = self._config.recover_fraction * self.threshold_ms(self._level)
        e2e_bound = self._config.e2e_recover_fraction * self._config.e2e_p95_target_ms
        if load is not None:
            lower = self._lowest_fitting(load, lower)
        predicted = None if load is None else load.offered * self._costs[lower] / self._costs[self._level]
        if (
            queue_wait_p95 >= queue_bound
            or e2e_p95 >= e2e_bound
            or (predicted is not None and predicted >= self._config.recover_load)
        ):
            self._recovering_since_s = None
            return None
        if self._recovering_since_s is None:
            self._recovering_since_s = now_s
        held = now_s - self._recovering_since_s
        if held < self._config.recover_hold_s:
            return None
        load_note = "" if predicted is None else f" and level {lower} predicts load {predicted:.2f}"
        extra = {} if predicted is None else {"predicted_load": round(predicted, 4)}
        return Decision(
            previous_level=self._level,
            knobs=self._ladder[lower],
            direction="lower",
            reason=f"recovered for {held:.1f} s: queue_wait p95 {queue_wait_p95:.0f} ms < {queue_bound:.0f} ms "
            f"and e2e p95 {e2e_p95:.0f} ms < {e2e_bound:.0f} ms{load_note}",
            metrics={**metrics, **extra, "threshold_ms": queue_bound, "recovered_s": round(held, 3)},
        )
