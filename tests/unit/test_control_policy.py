"""The degradation controller's pure policy (pipeline/control/policy.py) under a fake clock."""

import math

import pytest

from pipeline import contracts
from pipeline.control.ladder import ladder
from pipeline.control.policy import ControlPolicy, WindowStats
from pipeline.observe.latency import MEASURES, percentile
from pipeline.observe.probe import ProbeVerdict, judge
from pipeline.settings import ControllerSettings, ProbeSettings, Settings
from tests.plugins.builders import latency_event
from tests.plugins.clock import FakeClock


def event(queue_wait_ms: float = 10.0, e2e_ms: float | None = None, level: int = 0) -> contracts.LatencyEvent:
    """A LatencyEvent whose components add up to e2e (the rest lands in gpu_infer)."""
    others = {"hop_buffer_ms": 160.0, "net_ms": 5.0, "batch_wait_ms": 5.0, "post_ms": 5.0}
    e2e = e2e_ms if e2e_ms is not None else sum(others.values()) + queue_wait_ms + 40.0
    gpu_infer_ms = e2e - sum(others.values()) - queue_wait_ms
    return latency_event(
        queue_wait_ms,
        e2e_ms=e2e,
        gpu_infer_ms=gpu_infer_ms,
        **others,
        hop_seq=0,
        event_ts_ms=0.0,
        batch_size=1,
        control_level=level,
    )


def make_policy(clock: FakeClock, level: int = 0, **controller: object) -> ControlPolicy:
    defaults: dict[str, object] = {"window_s": 10.0, "min_events": 20, "recover_hold_s": 5.0, "raise_hold_s": 2.0}
    settings = Settings(controller=ControllerSettings(**{**defaults, **controller}))  # type: ignore[arg-type]
    return ControlPolicy(settings, level=level, clock=clock)


def feed(policy: ControlPolicy, count: int, **kwargs: float) -> None:
    for _ in range(count):
        policy.observe(event(**kwargs))  # type: ignore[arg-type]


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 95) == 5.0
    assert percentile(list(map(float, range(101))), 95) == 95.0
    assert math.isnan(percentile([], 50))


def test_window_stats_cover_every_component() -> None:
    stats = WindowStats.of([])
    assert stats.events == 0
    metrics = ControlPolicy(Settings(), clock=FakeClock()).stats().as_metrics()
    assert set(metrics) == {"events"} | {f"{c}_ms_{q}" for c in MEASURES for q in ("p50", "p95")}


def test_defaults_carry_the_missions_thresholds() -> None:
    settings = Settings()
    steps = ladder(settings)
    policy = ControlPolicy(settings, clock=FakeClock())
    level_120, level_200 = steps[2], steps[3]
    assert policy.threshold_ms(2) == 120.0 and level_120.window_secs == 0.96
    assert policy.threshold_ms(3) == 200.0
    assert (level_200.emit_interval_ms, level_200.window_secs, level_200.beam) == (320, 0.96, 2)


def test_no_decision_below_min_events() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    feed(policy, 19, queue_wait_ms=900.0)
    assert policy.evaluate() is None
    feed(policy, 1, queue_wait_ms=900.0)
    decision = policy.evaluate()
    assert decision is not None and decision.level == policy.max_level


@pytest.mark.parametrize(
    ("queue_wait_ms", "level"),
    [(30.0, None), (70.0, 1), (130.0, 2), (210.0, 3), (260.0, 4), (400.0, 5)],
)
def test_queue_wait_thresholds_pick_the_level(queue_wait_ms: float, level: int | None) -> None:
    policy = make_policy(FakeClock())
    feed(policy, 40, queue_wait_ms=queue_wait_ms)
    decision = policy.evaluate()
    if level is None:
        assert decision is None and policy.level == 0
    else:
        assert decision is not None
        assert (decision.previous_level, decision.level, decision.direction) == (0, level, "raise")
        assert decision.metrics["queue_wait_ms_p95"] == pytest.approx(queue_wait_ms)
        assert decision.metrics["threshold_ms"] == policy.threshold_ms(level)
        assert f"{queue_wait_ms:.0f} ms" in decision.reason
        assert decision.knobs == ladder(Settings())[level]


def test_raise_jumps_levels_and_does_not_repeat() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 40, queue_wait_ms=210.0)
    first = policy.evaluate()
    assert first is not None and (first.previous_level, first.level) == (0, 3)
    assert policy.evaluate() is None
    assert policy.level == 3


def test_p95_not_the_mean_drives_the_raise() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 90, queue_wait_ms=5.0)
    feed(policy, 10, queue_wait_ms=500.0)
    decision = policy.evaluate()
    assert decision is not None and decision.level == policy.max_level


def test_old_events_leave_the_window() -> None:
    clock = FakeClock()
    policy = make_policy(clock, window_s=10.0)
    feed(policy, 40, queue_wait_ms=300.0)
    clock.advance(10.5)
    assert policy.stats().events == 0
    assert policy.evaluate() is None and policy.level == 0


def test_e2e_backstop_raises_one_level_at_a_time_on_hops_of_the_current_level() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=1)
    clock.advance(3.0)
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=600.0, level=0)
    assert policy.evaluate() is None, "hops cut before the current level say nothing about it"
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=600.0, level=1)
    decision = policy.evaluate()
    assert decision is not None and (decision.previous_level, decision.level) == (1, 2)
    assert "e2e p95 600 ms at level 1" in decision.reason
    assert decision.metrics["level_e2e_ms_p95"] == 600.0
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=600.0, level=2)
    assert policy.evaluate() is None, "raise_hold_s lets the last step take effect"
    clock.advance(2.5)
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=600.0, level=2)
    later = policy.evaluate()
    assert later is not None and later.level == 3


def test_e2e_just_under_its_target_keeps_the_level() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    clock.advance(3.0)
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=490.0)
    assert policy.evaluate() is None and policy.level == 0


def test_steps_down_one_level_only_after_sustained_recovery() -> None:
    clock = FakeClock()
    policy = make_policy(clock, window_s=10.0, recover_hold_s=5.0)
    feed(policy, 40, queue_wait_ms=210.0)
    assert policy.evaluate() is not None and policy.level == 3
    clock.advance(10.5)
    feed(policy, 40, queue_wait_ms=20.0, level=3)
    assert policy.evaluate() is None, "recovery starts its hold"
    clock.advance(4.0)
    assert policy.evaluate() is None, "not held long enough"
    clock.advance(1.5)
    feed(policy, 10, queue_wait_ms=20.0, level=3)
    decision = policy.evaluate()
    assert decision is not None
    assert (decision.previous_level, decision.level, decision.direction) == (3, 2, "lower")
    assert decision.metrics["recovered_s"] == pytest.approx(5.5)
    assert "recovered" in decision.reason
    assert policy.evaluate() is None, "every step down needs its own hold"
    clock.advance(5.1)
    feed(policy, 40, queue_wait_ms=20.0, level=2)
    assert policy.evaluate() is not None and policy.level == 1


def test_a_relapse_resets_the_recovery_hold() -> None:
    clock = FakeClock()
    policy = make_policy(clock, window_s=2.0, recover_hold_s=5.0)
    feed(policy, 40, queue_wait_ms=130.0)
    assert policy.evaluate() is not None and policy.level == 2
    clock.advance(2.5)
    feed(policy, 40, queue_wait_ms=20.0, level=2)
    assert policy.evaluate() is None
    clock.advance(3.0)
    feed(policy, 40, queue_wait_ms=100.0, level=2)
    assert policy.evaluate() is None, "between the recover bound (60 ms) and the threshold: hold resets"
    clock.advance(2.5)
    feed(policy, 40, queue_wait_ms=20.0, level=2)
    assert policy.evaluate() is None
    clock.advance(4.0)
    feed(policy, 40, queue_wait_ms=20.0, level=2)
    assert policy.evaluate() is None, "only 4 s since the relapse cleared"
    clock.advance(1.5)
    feed(policy, 40, queue_wait_ms=20.0, level=2)
    decision = policy.evaluate()
    assert decision is not None and decision.level == 1


def test_high_e2e_blocks_recovery() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=2, window_s=2.0, raise_hold_s=100.0)
    for _ in range(4):
        clock.advance(2.0)
        feed(policy, 40, queue_wait_ms=5.0, e2e_ms=420.0, level=2)
        assert policy.evaluate() is None
    assert policy.level == 2


def test_level_zero_never_steps_down_and_bad_levels_are_refused() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    feed(policy, 40, queue_wait_ms=1.0)
    clock.advance(30.0)
    feed(policy, 40, queue_wait_ms=1.0)
    assert policy.evaluate() is None and policy.level == 0
    with pytest.raises(ValueError, match="not on the ladder"):
        make_policy(clock, level=6)


def test_thresholds_must_increase() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        ControllerSettings(raise_queue_wait_ms=(120.0, 60.0))


def test_e2e_backstop_ignores_a_spike_that_has_passed() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=1)
    clock.advance(3.0)
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=900.0, level=1)
    clock.advance(2.5)
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=250.0, level=1)
    assert policy.stats().p95["e2e"] == 900.0, "the spike is still in the window"
    assert policy.evaluate() is None and policy.level == 1


def probe_verdict(rtt_ms: float = 5.0, lookup_ms: float = 1.0) -> ProbeVerdict:
    """The broker probe's verdict over 30 equal heartbeats and lookups (default thresholds 50 / 25 ms)."""
    verdict = judge([rtt_ms] * 30, [lookup_ms] * 30, ProbeSettings())
    assert verdict is not None
    return verdict


SLOW_BROKER = probe_verdict(rtt_ms=120.0)
HEALTHY_BROKER = probe_verdict()


def test_a_transport_alarm_holds_the_level_and_names_the_raise_withheld() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 40, queue_wait_ms=210.0)
    assert SLOW_BROKER.transport_slow
    assert policy.evaluate(SLOW_BROKER) is None and policy.level == 0
    hold = policy.hold
    assert hold is not None and (hold.level, hold.withheld.level) == (0, 3)
    assert hold.metrics["queue_wait_ms_p95"] == pytest.approx(210.0), "the figures that would have raised"
    assert hold.metrics["broker_probe_ms_p95"] == 120.0 and hold.metrics["withheld_level"] == 3.0
    assert "transport alarm (heartbeat round trip p95 120 ms > 50 ms)" in hold.reason
    assert "holding level 0 instead of raising to 3 on queue_wait p95 210 ms" in hold.reason


def test_without_an_alarm_the_same_figures_raise_as_before() -> None:
    for verdict in (None, HEALTHY_BROKER):
        policy = make_policy(FakeClock())
        feed(policy, 40, queue_wait_ms=210.0)
        decision = policy.evaluate(verdict)
        assert decision is not None and decision.level == 3 and policy.hold is None


def test_the_withheld_raise_happens_once_the_alarm_ends() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 40, queue_wait_ms=130.0)
    assert policy.evaluate(SLOW_BROKER) is None and policy.hold is not None
    decision = policy.evaluate(HEALTHY_BROKER)
    assert decision is not None and (decision.previous_level, decision.level) == (0, 2)
    assert policy.hold is None, "each evaluation says whether it held"


def test_a_slow_lookup_alone_is_a_transport_alarm() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 40, queue_wait_ms=70.0)
    assert policy.evaluate(probe_verdict(lookup_ms=60.0)) is None and policy.level == 0
    assert policy.hold is not None and "offset lookup p95 60 ms > 25 ms" in policy.hold.reason


def test_the_e2e_backstop_is_held_too() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=1)
    clock.advance(3.0)
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=600.0, level=1)
    assert policy.evaluate(SLOW_BROKER) is None and policy.level == 1
    assert policy.hold is not None and policy.hold.withheld.level == 2
    assert policy.hold.metrics["level_e2e_ms_p95"] == 600.0


def test_stepping_down_stays_allowed_under_a_transport_alarm() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=2, window_s=2.0, recover_hold_s=1.0)
    feed(policy, 40, queue_wait_ms=5.0, level=2)
    assert policy.evaluate(SLOW_BROKER) is None
    clock.advance(1.5)
    feed(policy, 40, queue_wait_ms=5.0, level=2)
    decision = policy.evaluate(SLOW_BROKER)
    assert decision is not None and (decision.direction, decision.level) == ("lower", 1)
    assert policy.hold is None, "nothing was withheld"


def test_nothing_is_held_on_thin_evidence() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 5, queue_wait_ms=400.0)
    assert policy.evaluate(SLOW_BROKER) is None and policy.hold is None
