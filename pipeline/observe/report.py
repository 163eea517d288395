"""``hopline latency report``: which component makes the p95, read back from the topics.

The latency topic carries one event per hop with its full breakdown; the control topic the
controller's decisions; the probe topic the broker probe's heartbeats (each with the previous
heartbeat's produce->consume round trip and an offset lookup's duration). The report gives p50/p95
per component, the batch-size distribution, the component that drives the e2e tail, the broker
probe's figures and the decisions taken in the span. The tail's driver is the component whose
mean over the slowest 5 % of hops exceeds its own median by the most: the hop buffer is large but
constant, so it never explains a tail. When that component carries a Kafka hop (``net``,
``queue_wait``, ``post``) and the probe's p95 over the span is above its alarm threshold, the
driver is named ``broker``: the time is spent in transport, not in the stage.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.errors import CliError
from pipeline.kafka.readers import read_to_end
from pipeline.observe.latency import MEASURES, measures, percentile
from pipeline.observe.probe import ProbeVerdict, judge
from pipeline.settings import ProbeSettings, Settings

log = logging.getLogger(__name__)

R = TypeVar("R", contracts.LatencyEvent, contracts.ControlCommand, contracts.BrokerProbe)

_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

#: The components that include a Kafka produce->consume hop: a slow broker shows up in them.
TRANSPORT_COMPONENTS = ("net", "queue_wait", "post")

#: The driver's name when the broker is why the tail is slow.
BROKER = "broker"


def parse_span(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` -> seconds."""
    match = _SPAN.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise CliError(f"--since wants a positive span such as 90s, 10m or 2h, not {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


@dataclass(frozen=True)
class TailDriver:
    """What the slowest hops (e2e at or above p95) spend their time on, per component."""

    component: str
    hops: int
    tail_mean_ms: Mapping[str, float]
    excess_ms: Mapping[str, float]

    def share(self, component: str) -> float:
        total = self.tail_mean_ms["e2e"]
        return self.tail_mean_ms[component] / total if total > 0 else 0.0


@dataclass(frozen=True)
class LatencyReport:
    events: int
    sessions: int
    first_ts_ms: float
    last_ts_ms: float
    p50: Mapping[str, float]
    p95: Mapping[str, float]
    batch_sizes: Mapping[int, int]
    driver: TailDriver | None
    decisions: Sequence[contracts.ControlCommand] = field(default_factory=tuple)
    invalid_events: int = 0
    heartbeats: int = 0
    probe: ProbeVerdict | None = None

    @property
    def transport_alarm(self) -> bool:
        """The broker probe's p95 over the span is above its alarm threshold."""
        return self.probe is not None and self.probe.transport_slow

    @property
    def driver_name(self) -> str | None:
        """``broker`` when the tail's component carries a Kafka hop and the probe says the broker is slow."""
        if self.driver is None:
            return None
        if self.transport_alarm and self.driver.component in TRANSPORT_COMPONENTS:
            return BROKER
        return self.driver.component

    @property
    def batch_size_mean(self) -> float:
        hops = sum(self.batch_sizes.values())
        return sum(size * count for size, count in self.batch_sizes.items()) / hops if hops else float("nan")

    def figures(self) -> dict[str, Any]:
        """The JSON object: ``<component>_ms_p50/_p95`` for every component, batch sizes, driver, decisions."""
        figures: dict[str, Any] = {"events": self.events, "sessions": self.sessions}
        for name in MEASURES:
            figures[f"{name}_ms_p50"] = _round(self.p50[name])
            figures[f"{name}_ms_p95"] = _round(self.p95[name])
        figures["batch_size_mean"] = _round(self.batch_size_mean)
        figures["batch_size_distribution"] = {str(size): count for size, count in sorted(self.batch_sizes.items())}
        figures["p95_driver"] = self.driver_name
        figures["p95_component"] = self.driver.component if self.driver else None
        figures["broker_heartbeats"] = self.heartbeats
        probe = self.probe
        figures["broker_probe_ms_p50"] = _round(probe.rtt_p50_ms) if probe else None
        figures["broker_probe_ms_p95"] = _round(probe.rtt_p95_ms) if probe else None
        figures["broker_lookup_ms_p50"] = _round(probe.lookup_p50_ms) if probe else None
        figures["broker_lookup_ms_p95"] = _round(probe.lookup_p95_ms) if probe else None
        figures["transport_alarm"] = self.transport_alarm
        figures["span_s"] = _round((self.last_ts_ms - self.first_ts_ms) / 1000.0) if self.events else 0.0
        figures["decisions"] = [
            {
                "seq": d.seq,
                "level": d.level,
                "emit_interval_ms": d.emit_interval_ms,
                "window_secs": d.window_secs,
                "beam": d.beam,
                "admit_new_sessions": d.admit_new_sessions,
                "reason": d.reason,
                "metrics": d.metrics,
                "issued_ts_ms": d.issued_ts_ms,
            }
            for d in self.decisions
        ]
        return figures


def _round(value: float) -> float | None:
    return None if value != value else round(value, 2)


def build_report(
    events: Sequence[contracts.LatencyEvent],
    decisions: Iterable[contracts.ControlCommand] = (),
    invalid_events: int = 0,
    probes: Iterable[contracts.BrokerProbe] = (),
    probe_settings: ProbeSettings | None = None,
) -> LatencyReport:
    """Figures from decoded LatencyEvents, ControlCommands and BrokerProbes (pure: no Kafka).

    Heartbeats count when sent within the events' span (all of them when there are no events),
    judged with ``probe_settings`` (the defaults when None) over the whole span.
    """
    figures = [measures(e) for e in events]
    values = {name: [f[name] for f in figures] for name in MEASURES}
    p50 = {name: percentile(v, 50) for name, v in values.items()}
    p95 = {name: percentile(v, 95) for name, v in values.items()}
    driver = None
    if events:
        tail = [f for f in figures if f["e2e"] >= p95["e2e"]]
        tail_mean = {name: sum(f[name] for f in tail) / len(tail) for name in MEASURES}
        excess = {name: tail_mean[name] - p50[name] for name in MEASURES if name != "e2e"}
        driver = TailDriver(
            component=max(excess, key=lambda name: excess[name]),
            hops=len(tail),
            tail_mean_ms=tail_mean,
            excess_ms=excess,
        )
    timestamps = [e.event_ts_ms for e in events]
    first_ts, last_ts = min(timestamps, default=0.0), max(timestamps, default=0.0)
    beats = [p for p in probes if not events or first_ts <= p.sent_ts_ms <= last_ts]
    probe = judge(
        [p.previous_rtt_ms for p in beats if p.previous_rtt_ms >= 0],
        [p.lookup_ms for p in beats if p.lookup_ms >= 0],
        probe_settings or ProbeSettings(),
    )
    return LatencyReport(
        events=len(events),
        sessions=len({e.session_id for e in events}),
        first_ts_ms=first_ts,
        last_ts_ms=last_ts,
        p50=p50,
        p95=p95,
        batch_sizes=dict(Counter(e.batch_size for e in events)),
        driver=driver,
        decisions=sorted(decisions, key=lambda d: (d.issued_ts_ms, d.seq)),
        invalid_events=invalid_events,
        heartbeats=len(beats),
        probe=probe,
    )


#: ``--by`` groupings: the LatencyEvent field each one splits on.
GROUPINGS: dict[str, Callable[[contracts.LatencyEvent], object]] = {
    "worker": lambda e: e.worker_id,
    "session": lambda e: e.session_id,
    "level": lambda e: e.control_level,
}


def group_reports(events: Sequence[contracts.LatencyEvent], by: str) -> dict[str, LatencyReport]:
    """One report per worker, session or degradation level: which of them makes the p95."""
    group_of = GROUPINGS[by]
    groups: dict[str, list[contracts.LatencyEvent]] = {}
    for event in events:
        groups.setdefault(str(group_of(event)), []).append(event)
    return {name: build_report(members) for name, members in sorted(groups.items())}


def format_groups(by: str, groups: Mapping[str, LatencyReport]) -> str:
    lines = [f"by {by}:", f"  {by:<20}{'hops':>7}{'e2e p50':>9}{'e2e p95':>9}{'qw p95':>8}  p95 driver"]
    for name, report in groups.items():
        driver = report.driver.component if report.driver else "-"
        lines.append(
            f"  {name[:20]:<20}{report.events:>7}{report.p50['e2e']:>9.0f}{report.p95['e2e']:>9.0f}"
            f"{report.p95['queue_wait']:>8.0f}  {driver}"
        )
    return "\n".join(lines)


def format_report(report: LatencyReport) -> str:
    """The analyst's tables, plain text."""
    if not report.events:
        lines = ["no latency events in the span"]
    else:
        span_s = (report.last_ts_ms - report.first_ts_ms) / 1000.0
        lines = [
            f"latency report: {report.events} hops, {report.sessions} sessions, {span_s:.1f} s",
            f"{'component':<12}{'p50 ms':>10}{'p95 ms':>10}",
        ]
        for name in MEASURES:
            lines.append(f"{name:<12}{report.p50[name]:>10.1f}{report.p95[name]:>10.1f}")
        total = sum(report.batch_sizes.values())
        distribution = "  ".join(
            f"{size}:{100.0 * count / total:.0f}%" for size, count in sorted(report.batch_sizes.items())
        )
        lines.append(f"batch size: mean {report.batch_size_mean:.2f}  ({distribution})")
        if report.driver is not None:
            driver = report.driver
            name = driver.component
            spent = (
                f"{driver.tail_mean_ms[name]:.0f} ms ({driver.excess_ms[name]:+.0f} ms over its median, "
                f"{100.0 * driver.share(name):.0f}% of their e2e)"
            )
            if report.driver_name == BROKER and report.probe is not None:
                lines.append(
                    f"e2e p95 driver: broker — {report.probe.reason}; in the slowest {driver.hops} hops "
                    f"{name} (which carries a Kafka hop) averages {spent}"
                )
            else:
                lines.append(f"e2e p95 driver: {name} — in the slowest {driver.hops} hops it averages {spent}")
    if report.heartbeats:
        lines.append(format_probe(report))
    if report.invalid_events:
        lines.append(f"skipped {report.invalid_events} unreadable latency events")
    lines.append(f"controller decisions: {len(report.decisions)}")
    for d in report.decisions:
        lines.append(
            f"  seq {d.seq} -> level {d.level} (emit {d.emit_interval_ms} ms, window {d.window_secs:g} s, "
            f"beam {d.beam}, admit {'yes' if d.admit_new_sessions else 'no'}): {d.reason}"
        )
    return "\n".join(lines)


def format_probe(report: LatencyReport) -> str:
    """The broker probe's line: figures over the span and whether its alarm threshold was crossed."""
    probe = report.probe
    if probe is None:
        return f"broker probe: {report.heartbeats} heartbeats, too few measurements to judge"

    def ms(value: float) -> str:
        return "-" if value != value else f"{value:.1f}"

    line = (
        f"broker probe: {report.heartbeats} heartbeats, round trip p50 {ms(probe.rtt_p50_ms)} / p95 "
        f"{ms(probe.rtt_p95_ms)} ms (alarm > {probe.slow_p95_ms:.0f}), offset lookup p50 {ms(probe.lookup_p50_ms)} "
        f"/ p95 {ms(probe.lookup_p95_ms)} ms (alarm > {probe.slow_lookup_p95_ms:.0f})"
    )
    return line + (f"\ntransport alarm: {probe.reason}" if probe.transport_slow else "")


def _read(settings: Settings, topic: str, record_type: type[R]) -> Iterator[R | None]:
    """Every record of ``topic`` from the beginning, decoded; None for each unreadable one."""
    for message in read_to_end(settings, "history", [topic]):
        try:
            yield record_type.decode(message.value())
        except contracts.ContractError:
            yield None


def read_events(settings: Settings, since_ms: float | None) -> tuple[list[contracts.LatencyEvent], int]:
    """Decoded latency events at or after ``since_ms`` (by event_ts_ms) and the count of unreadable ones."""
    records = list(_read(settings, settings.topics.latency, contracts.LatencyEvent))
    events = [e for e in records if e is not None and (since_ms is None or e.event_ts_ms >= since_ms)]
    return events, sum(e is None for e in records)


def read_decisions(settings: Settings, since_ms: float | None) -> list[contracts.ControlCommand]:
    return [
        c
        for c in _read(settings, settings.topics.control, contracts.ControlCommand)
        if c is not None and (since_ms is None or c.issued_ts_ms >= since_ms)
    ]


def read_probes(settings: Settings, since_ms: float | None) -> list[contracts.BrokerProbe]:
    """Decoded heartbeats sent at or after ``since_ms``; none (with a warning) when there is no probe topic."""
    try:
        return [
            p
            for p in _read(settings, settings.topics.probe, contracts.BrokerProbe)
            if p is not None and (since_ms is None or p.sent_ts_ms >= since_ms)
        ]
    except CliError as exc:
        if "does not exist" not in str(exc):
            raise
        log.warning("no broker probe figures: %s", exc)
        return []


def plot_breakdown(
    events: Sequence[contracts.LatencyEvent],
    decisions: Sequence[contracts.ControlCommand],
    path: str,
    bin_s: float = 1.0,
) -> None:
    """Mean components stacked per time bin (they add up to mean e2e), e2e p95 and the control level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not events:
        raise CliError("no latency events in the span: nothing to plot")
    start = min(e.event_ts_ms for e in events)
    bins: dict[int, list[dict[str, float]]] = {}
    for event in events:
        bins.setdefault(int((event.event_ts_ms - start) / 1000.0 / bin_s), []).append(measures(event))
    keys = sorted(bins)
    times = [k * bin_s for k in keys]
    parts = [name for name in MEASURES if name != "e2e"]
    stacks = [[sum(f[name] for f in bins[k]) / len(bins[k]) for k in keys] for name in parts]
    e2e_p95 = [percentile([f["e2e"] for f in bins[k]], 95) for k in keys]

    figure, axis = plt.subplots(figsize=(11, 5))
    axis.stackplot(times, stacks, labels=[f"{name} (mean)" for name in parts], alpha=0.8)
    axis.plot(times, e2e_p95, color="black", linewidth=1.5, label="e2e p95")
    axis.axhline(500, color="red", linestyle="--", linewidth=1, label="500 ms SLA")
    axis.set_xlabel(f"seconds since first hop ({bin_s:g} s bins)")
    axis.set_ylabel("ms")
    axis.legend(loc="upper left", fontsize=8)
    if decisions:
        level_axis = axis.twinx()
        steps = [(0.0, 0)] + [((d.issued_ts_ms - start) / 1000.0, d.level) for d in decisions]
        steps.append((times[-1] + bin_s, steps[-1][1]))
        level_axis.step([t for t, _ in steps], [lvl for _, lvl in steps], where="post", color="purple", label="level")
        level_axis.set_ylabel("degradation level")
        level_axis.set_ylim(-0.2, 5.5)
        level_axis.legend(loc="upper right", fontsize=8)
    axis.set_title("hopline latency breakdown over time")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def collect_report(
    settings: Settings, since_s: float | None = None
) -> tuple[LatencyReport, list[contracts.LatencyEvent]]:
    """Read the latency, control and probe topics and build the report; also returns the events (for plotting)."""
    since_ms = now_ms() - since_s * 1000.0 if since_s is not None else None
    events, invalid = read_events(settings, since_ms)
    decisions = read_decisions(settings, since_ms)
    probes = read_probes(settings, since_ms)
    return build_report(events, decisions, invalid, probes, settings.probe), events


def run_report(settings: Settings, since: str | None, plot: str | None, as_json: bool, by: str | None = None) -> int:
    since_s = parse_span(since) if since is not None else None
    report, events = collect_report(settings, since_s)
    groups = group_reports(events, by) if by else {}
    if plot:
        try:
            plot_breakdown(events, report.decisions, plot)
        except OSError as exc:
            raise CliError(f"cannot write the plot to {plot}: {exc.strerror or exc}") from exc
    if as_json:
        figures = report.figures()
        if by:
            figures[f"by_{by}"] = {name: _group_figures(group) for name, group in groups.items()}
        print(json.dumps(figures))
    else:
        print(format_report(report))
        if by:
            print(format_groups(by, groups))
        if plot:
            print(f"plot written to {plot}")
    return 0


def _group_figures(report: LatencyReport) -> dict[str, Any]:
    figures = report.figures()
    del figures["decisions"]
    return figures
