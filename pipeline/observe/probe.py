"""The broker probe's rule, as plain Python with an injectable clock: is the transport slow?

A prober (:mod:`pipeline.observe.prober`) measures two series every interval and feeds them to a
:class:`ProbeWindow`, which keeps the last ``window_s`` seconds of each and gives a
:class:`ProbeVerdict`: p50/p95 per series and whether the transport alarm is on.

- **Round trip**: a heartbeat's produce->consume time on the probe topic. Sees what slows every
  request: a stalled or overloaded broker, the network, the broker-wide lock of the embedded one.
- **Lookup**: how long an end-offset query on a busy pipeline partition takes. The embedded
  broker lists every stored batch of a partition for a lookup exactly as for a fetch, so this
  sees the per-partition slowdown that the heartbeat's own light partition never shows.

Rules:

- **The alarm starts** when a series' p95 exceeds its threshold (``slow_p95_ms``,
  ``slow_lookup_p95_ms``) and **ends** when every p95 is below ``clear_fraction`` of its threshold
  (hysteresis: one start and one end per episode, no flapping).
- **A heartbeat still out counts** once it has been out longer than ``slow_p95_ms``, with its age
  so far (a lower bound of its round trip): a broker that stops answering is slow, not silent.
- **No judgement on thin evidence**: a series with fewer than ``min_samples`` measurements in the
  window is not judged (its figures are NaN); with neither judged the verdict is None and callers
  behave as they would without a probe (the alarm is off).

:func:`judge` is the stateless rule without the hysteresis; ``hopline latency report`` applies it
to the heartbeats of a whole reported span.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from pipeline.clock import Clock
from pipeline.observe.latency import percentile
from pipeline.settings import ProbeSettings


@dataclass(frozen=True)
class ProbeVerdict:
    """Both series over the window (NaN where not judged), their thresholds and the alarm state."""

    rtt_samples: int
    rtt_p50_ms: float
    rtt_p95_ms: float
    lookup_samples: int
    lookup_p50_ms: float
    lookup_p95_ms: float
    slow_p95_ms: float
    slow_lookup_p95_ms: float
    transport_slow: bool

    @property
    def over(self) -> bool:
        """A series' p95 is above its threshold (NaN, not judged, never is)."""
        return self.rtt_p95_ms > self.slow_p95_ms or self.lookup_p95_ms > self.slow_lookup_p95_ms

    def clear(self, fraction: float) -> bool:
        """Every judged series' p95 is below ``fraction`` of its threshold."""
        series = ((self.rtt_p95_ms, self.slow_p95_ms), (self.lookup_p95_ms, self.slow_lookup_p95_ms))
        return all(math.isnan(p95) or p95 < fraction * slow for p95, slow in series)

    @property
    def reason(self) -> str:
        """Which series are over their thresholds (or the figures, when none is)."""
        over = []
        if self.rtt_p95_ms > self.slow_p95_ms:
            over.append(f"heartbeat round trip p95 {self.rtt_p95_ms:.0f} ms > {self.slow_p95_ms:g} ms")
        if self.lookup_p95_ms > self.slow_lookup_p95_ms:
            over.append(f"offset lookup p95 {self.lookup_p95_ms:.0f} ms > {self.slow_lookup_p95_ms:g} ms")
        if over:
            return " and ".join(over)
        return f"heartbeat round trip p95 {self.rtt_p95_ms:.0f} ms, offset lookup p95 {self.lookup_p95_ms:.0f} ms"

    def as_metrics(self) -> dict[str, float]:
        """Flat figures for decision metrics and log lines (NaN figures left out: JSON has no NaN)."""
        figures = {
            "broker_probe_ms_p50": self.rtt_p50_ms,
            "broker_probe_ms_p95": self.rtt_p95_ms,
            "broker_lookup_ms_p50": self.lookup_p50_ms,
            "broker_lookup_ms_p95": self.lookup_p95_ms,
        }
        metrics = {name: round(value, 3) for name, value in figures.items() if not math.isnan(value)}
        metrics.update(
            broker_probe_samples=float(self.rtt_samples),
            broker_lookup_samples=float(self.lookup_samples),
            broker_probe_slow_ms=self.slow_p95_ms,
            broker_lookup_slow_ms=self.slow_lookup_p95_ms,
        )
        return metrics


def judge(round_trips: Sequence[float], lookups: Sequence[float], settings: ProbeSettings) -> ProbeVerdict | None:
    """Both series' p50/p95 (NaN under ``min_samples``) with ``transport_slow`` = :attr:`ProbeVerdict.over`.

    The stateless core, also for a whole reported span; None when neither series is judged.
    """

    def judged(values: Sequence[float]) -> tuple[float, float]:
        if len(values) < settings.min_samples:
            return math.nan, math.nan
        return percentile(values, 50), percentile(values, 95)

    rtt_p50, rtt_p95 = judged(round_trips)
    lookup_p50, lookup_p95 = judged(lookups)
    if math.isnan(rtt_p95) and math.isnan(lookup_p95):
        return None
    verdict = ProbeVerdict(
        rtt_samples=len(round_trips),
        rtt_p50_ms=rtt_p50,
        rtt_p95_ms=rtt_p95,
        lookup_samples=len(lookups),
        lookup_p50_ms=lookup_p50,
        lookup_p95_ms=lookup_p95,
        slow_p95_ms=settings.slow_p95_ms,
        slow_lookup_p95_ms=settings.slow_lookup_p95_ms,
        transport_slow=False,
    )
    return replace(verdict, transport_slow=verdict.over)


class ProbeWindow:
    """The last ``window_s`` seconds (on ``clock``) of round trips and lookups; :meth:`verdict` per tick."""

    def __init__(self, settings: ProbeSettings, clock: Clock = time.monotonic) -> None:
        self._config = settings
        self._clock = clock
        self._round_trips: deque[tuple[float, float]] = deque()
        self._lookups: deque[tuple[float, float]] = deque()
        self._alarm = False

    @property
    def alarm(self) -> bool:
        """Whether the last :meth:`verdict` left the transport alarm on."""
        return self._alarm

    def observe(self, rtt_ms: float) -> None:
        """One heartbeat's produce->consume round trip in ms, stamped with the clock's now."""
        self._round_trips.append((self._clock(), rtt_ms))

    def observe_lookup(self, lookup_ms: float) -> None:
        """One end-offset lookup's duration in ms, stamped with the clock's now."""
        self._lookups.append((self._clock(), lookup_ms))

    def round_trips(self) -> list[float]:
        """The round trips still in the window, oldest first."""
        return self._recent(self._round_trips)

    def lookups(self) -> list[float]:
        """The lookup durations still in the window, oldest first."""
        return self._recent(self._lookups)

    def verdict(self, outstanding_ms: Iterable[float] = ()) -> ProbeVerdict | None:
        """Both series' p50/p95 and the alarm state; ``outstanding_ms``: ages of heartbeats not back yet.

        Moves the alarm (see the module's rules); None, with the alarm off, when neither series is judged.
        """
        config = self._config
        rtts = self.round_trips() + [age for age in outstanding_ms if age > config.slow_p95_ms]
        verdict = judge(rtts, self.lookups(), config)
        if verdict is None:
            self._alarm = False
            return None
        if verdict.over:
            self._alarm = True
        elif verdict.clear(config.clear_fraction):
            self._alarm = False
        return replace(verdict, transport_slow=self._alarm)

    def _recent(self, series: deque[tuple[float, float]]) -> list[float]:
        horizon = self._clock() - self._config.window_s
        while series and series[0][0] < horizon:
            series.popleft()
        return [value for _observed, value in series]
