"""The broker probe's pure rule (pipeline/observe/probe.py) under a fake clock."""

import math

import pytest

from pipeline.observe.probe import ProbeWindow, judge
from pipeline.settings import ProbeSettings
from tests.plugins.clock import FakeClock

SETTINGS = ProbeSettings(window_s=30.0, min_samples=10, slow_p95_ms=50.0, slow_lookup_p95_ms=25.0, clear_fraction=0.8)


def window(clock: FakeClock) -> ProbeWindow:
    return ProbeWindow(SETTINGS, clock=clock)


def feed(probe: ProbeWindow, clock: FakeClock, rtts: list[float], lookup_ms: float | None = None) -> None:
    """One heartbeat (and one lookup, if given) per second, as the prober measures them."""
    for rtt in rtts:
        clock.advance(1.0)
        probe.observe(rtt)
        if lookup_ms is not None:
            probe.observe_lookup(lookup_ms)


def test_no_verdict_on_thin_evidence() -> None:
    clock = FakeClock()
    probe = window(clock)
    feed(probe, clock, [500.0] * 9)
    assert probe.verdict() is None and not probe.alarm
    feed(probe, clock, [500.0])
    verdict = probe.verdict()
    assert verdict is not None and verdict.transport_slow and verdict.rtt_samples == 10
    assert math.isnan(verdict.lookup_p95_ms), "no lookups: that series is not judged"


def test_healthy_round_trips_give_p50_p95_and_no_alarm() -> None:
    clock = FakeClock()
    probe = window(clock)
    feed(probe, clock, [float(ms) for ms in range(1, 21)], lookup_ms=1.0)
    verdict = probe.verdict()
    assert verdict is not None and not verdict.transport_slow
    assert verdict.rtt_p50_ms == pytest.approx(10.5) and verdict.rtt_p95_ms == pytest.approx(19.05)
    assert verdict.lookup_p95_ms == 1.0
    metrics = verdict.as_metrics()
    assert metrics["broker_probe_ms_p95"] == pytest.approx(19.05) and metrics["broker_probe_slow_ms"] == 50.0


def test_one_slow_heartbeat_in_thirty_does_not_raise_the_alarm_two_do() -> None:
    clock = FakeClock()
    probe = window(clock)
    feed(probe, clock, [5.0] * 28 + [900.0])
    verdict = probe.verdict()
    assert verdict is not None and verdict.rtt_p95_ms == 5.0 and not verdict.transport_slow
    feed(probe, clock, [900.0])
    verdict = probe.verdict()
    assert verdict is not None and verdict.transport_slow and verdict.rtt_samples == 30
    assert "heartbeat round trip p95" in verdict.reason


def test_slow_lookups_raise_the_alarm_though_heartbeats_are_fast() -> None:
    """The embedded broker's busy partitions: lookups slow, the heartbeat's own light partition fast."""
    clock = FakeClock()
    probe = window(clock)
    feed(probe, clock, [6.0] * 20, lookup_ms=40.0)
    verdict = probe.verdict()
    assert verdict is not None and verdict.transport_slow
    assert verdict.reason == "offset lookup p95 40 ms > 25 ms"


def test_hysteresis_the_alarm_ends_only_below_the_clear_fraction() -> None:
    clock = FakeClock()
    probe = window(clock)
    feed(probe, clock, [80.0] * 30)
    assert probe.verdict() is not None and probe.alarm
    feed(probe, clock, [45.0] * 30)
    verdict = probe.verdict()
    assert verdict is not None and verdict.rtt_p95_ms == 45.0 and verdict.transport_slow, "45 ms > 0.8 x 50 ms"
    feed(probe, clock, [30.0] * 30)
    verdict = probe.verdict()
    assert verdict is not None and not verdict.transport_slow and not probe.alarm


def test_old_round_trips_leave_the_window_and_the_alarm_with_them() -> None:
    clock = FakeClock()
    probe = window(clock)
    feed(probe, clock, [200.0] * 20)
    assert probe.verdict() is not None and probe.alarm
    clock.advance(31.0)
    assert probe.round_trips() == []
    assert probe.verdict() is None and not probe.alarm


def test_a_heartbeat_still_out_counts_with_its_age_once_it_is_slow() -> None:
    """A broker that stops answering is slow, not silent."""
    clock = FakeClock()
    probe = window(clock)
    feed(probe, clock, [5.0] * 20)
    verdict = probe.verdict(outstanding_ms=[10.0, 30.0])
    assert verdict is not None and verdict.rtt_samples == 20, "young heartbeats are not judged yet"
    verdict = probe.verdict(outstanding_ms=[4000.0, 3000.0, 2000.0, 1000.0, 10.0])
    assert verdict is not None and verdict.rtt_samples == 24 and verdict.transport_slow


def test_judge_is_the_stateless_rule_for_a_whole_span() -> None:
    assert judge([5.0] * 5, [], SETTINGS) is None
    verdict = judge([5.0] * 20, [30.0] * 20, SETTINGS)
    assert verdict is not None and verdict.transport_slow and verdict.over
    calm = judge([45.0] * 20, [1.0] * 20, SETTINGS)
    assert calm is not None and not calm.transport_slow, "no hysteresis without a history: 45 <= 50"


def test_settings_bound_the_clear_fraction() -> None:
    with pytest.raises(ValueError):
        ProbeSettings(clear_fraction=1.0)
