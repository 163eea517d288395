"""The degradation controller's pure policy (pipeline/control/policy.py) under a fake clock."""

import math
from dataclasses import replace

import pytest

from pipeline import contracts
from pipeline.control.ladder import ladder
from pipeline.control.policy import ControlPolicy, Decision, WindowStats
from pipeline.observe.latency import MEASURES, percentile
from pipeline.observe.probe import ProbeVerdict, judge
from pipeline.settings import ControllerSettings, ProbeSettings, Settings
from tests.plugins.builders import latency_event
from tests.plugins.clock import FakeClock


def event(
    queue_wait_ms: float = 10.0, e2e_ms: float | None = None, level: int = 0, **fields: object
) -> contracts.LatencyEvent:
    """A LatencyEvent whose components add up to e2e (the rest lands in ``post``, which is not a load signal)."""
    components: dict[str, float] = {"hop_buffer_ms": 160.0, "net_ms": 5.0, "batch_wait_ms": 5.0, "gpu_infer_ms": 40.0}
    components.update({k: float(v) for k, v in fields.items() if k in components})  # type: ignore[arg-type]
    rest = {k: v for k, v in fields.items() if k not in components and k != "post_ms"}
    e2e = e2e_ms if e2e_ms is not None else sum(components.values()) + queue_wait_ms + 5.0
    post_ms = float(fields["post_ms"]) if "post_ms" in fields else e2e - sum(components.values()) - queue_wait_ms  # type: ignore[arg-type]
    values: dict[str, object] = {"hop_seq": 0, "event_ts_ms": 0.0, "batch_size": 8, "control_level": level, **rest}
    return latency_event(queue_wait_ms, e2e_ms=e2e, post_ms=post_ms, **components, **values)


def make_policy(clock: FakeClock, level: int = 0, **controller: object) -> ControlPolicy:
    defaults: dict[str, object] = {
        "window_s": 10.0,
        "min_events": 20,
        "recover_hold_s": 5.0,
        "raise_hold_s": 2.0,
        "min_level_saving": 0.0,
        # The rules under test, pinned (the defaults are tuned for the 2-core box; see test_defaults_...).
        "raise_queue_wait_ms": (60.0, 120.0, 200.0, 250.0, 300.0),
        "raise_load": 0.9,
        "target_load": 0.75,
        "recover_load": 0.7,
    }
    settings = Settings(controller=ControllerSettings(**{**defaults, **controller}))
    return ControlPolicy(settings, level=level, clock=clock)


def step(policy: ControlPolicy, transport: ProbeVerdict | None = None) -> Decision | None:
    """One controller tick whose command is delivered: evaluate, then commit what it proposes."""
    decision = policy.evaluate(transport)
    if decision is not None:
        policy.commit(decision)
    return decision


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
    level_200 = steps[3]
    assert policy.threshold_ms(3) == 200.0
    assert (level_200.emit_interval_ms, level_200.window_secs, level_200.beam) == (320, 0.96, 2)
    assert policy.threshold_ms(1) == 120.0, "the mission's first step; base-load queueing (<= ~115 ms) stays below it"
    assert steps[2].window_secs == 0.96 and policy.threshold_ms(2) == 160.0


def test_no_decision_below_min_events() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    feed(policy, 19, queue_wait_ms=900.0)
    assert step(policy) is None
    feed(policy, 1, queue_wait_ms=900.0)
    decision = step(policy)
    assert decision is not None and decision.level == policy.max_level - 1, "queueing never closes admission"


@pytest.mark.parametrize(
    ("queue_wait_ms", "level"),
    [(30.0, None), (110.0, 1), (130.0, 2), (210.0, 3), (260.0, 4), (400.0, 4)],
)
def test_queue_wait_thresholds_pick_the_level(queue_wait_ms: float, level: int | None) -> None:
    policy = make_policy(FakeClock())
    feed(policy, 40, queue_wait_ms=queue_wait_ms)
    decision = step(policy)
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
    first = step(policy)
    assert first is not None and (first.previous_level, first.level) == (0, 3)
    assert step(policy) is None
    assert policy.level == 3


def test_p95_not_the_mean_drives_the_raise() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 90, queue_wait_ms=5.0)
    feed(policy, 10, queue_wait_ms=500.0)
    decision = step(policy)
    assert decision is not None and decision.level == policy.max_level - 1


def test_old_events_leave_the_window() -> None:
    clock = FakeClock()
    policy = make_policy(clock, window_s=10.0)
    feed(policy, 40, queue_wait_ms=300.0)
    clock.advance(10.5)
    assert policy.stats().events == 0
    assert step(policy) is None and policy.level == 0


def test_e2e_backstop_raises_one_level_at_a_time_on_hops_of_the_current_level() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=1)
    clock.advance(3.0)
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=600.0, level=0)
    assert step(policy) is None, "hops cut before the current level say nothing about it"
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=600.0, level=1)
    decision = step(policy)
    assert decision is not None and (decision.previous_level, decision.level) == (1, 2)
    assert "e2e p95 600 ms at level 1" in decision.reason
    assert decision.metrics["level_e2e_ms_p95"] == 600.0
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=600.0, level=2)
    assert step(policy) is None, "raise_hold_s lets the last step take effect"
    clock.advance(2.5)
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=600.0, level=2)
    later = step(policy)
    assert later is not None and later.level == 3


def test_e2e_just_under_its_target_keeps_the_level() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    clock.advance(3.0)
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=490.0)
    assert step(policy) is None and policy.level == 0


def test_without_a_load_measurement_steps_down_one_level_at_a_time_after_sustained_recovery() -> None:
    clock = FakeClock()
    policy = make_policy(clock, window_s=10.0, recover_hold_s=5.0)
    feed(policy, 40, queue_wait_ms=210.0)
    assert step(policy) is not None and policy.level == 3
    clock.advance(10.5)
    feed(policy, 40, queue_wait_ms=20.0, level=3)
    clock.advance(3.5)
    assert policy.load() is None, "nothing cut in the last 3 s"
    assert step(policy) is None, "recovery starts its hold"
    clock.advance(4.0)
    assert step(policy) is None, "not held long enough"
    clock.advance(1.5)
    decision = step(policy)
    assert decision is not None
    assert (decision.previous_level, decision.level, decision.direction) == (3, 2, "lower")
    assert decision.metrics["recovered_s"] == pytest.approx(5.5)
    assert "recovered" in decision.reason and "predicts" not in decision.reason
    assert step(policy) is None, "every step down needs its own hold"


def test_with_a_light_load_measured_recovery_goes_straight_to_the_level_that_fits() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=4, window_s=10.0, recover_hold_s=1.0)
    busy_worker(policy, clock, busy=0.1, level=4)
    assert step(policy) is None, "recovery starts its hold"
    busy_worker(policy, clock, busy=0.1, level=4)
    decision = step(policy)
    assert decision is not None and (decision.previous_level, decision.level) == (4, 0)
    assert decision.metrics["predicted_load"] < 0.7
    clock = FakeClock()
    policy_busier = make_policy(clock, level=4, window_s=10.0, recover_hold_s=1.0)
    busy_worker(policy_busier, clock, busy=0.25, level=4)
    step(policy_busier)
    busy_worker(policy_busier, clock, busy=0.25, level=4)
    decision = step(policy_busier)
    assert decision is not None and decision.level == 1, "level 0 would carry 0.25 / 0.356 = 0.70, level 1 0.35"


def test_a_relapse_resets_the_recovery_hold() -> None:
    clock = FakeClock()
    policy = make_policy(clock, window_s=2.0, recover_hold_s=5.0)
    feed(policy, 40, queue_wait_ms=130.0)
    assert step(policy) is not None and policy.level == 2
    clock.advance(2.5)
    feed(policy, 40, queue_wait_ms=20.0, level=2)
    assert step(policy) is None
    clock.advance(3.0)
    feed(policy, 40, queue_wait_ms=100.0, level=2)
    assert step(policy) is None, "between the recover bound (60 ms) and the threshold: hold resets"
    clock.advance(2.5)
    feed(policy, 40, queue_wait_ms=20.0, level=2)
    assert step(policy) is None
    clock.advance(4.0)
    feed(policy, 40, queue_wait_ms=20.0, level=2)
    assert step(policy) is None, "only 4 s since the relapse cleared"
    clock.advance(1.5)
    feed(policy, 40, queue_wait_ms=20.0, level=2)
    decision = step(policy)
    assert decision is not None and decision.level == 0, "the light load fits level 0"


def test_high_e2e_blocks_recovery() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=2, window_s=2.0, raise_hold_s=100.0)
    for _ in range(4):
        clock.advance(2.0)
        feed(policy, 40, queue_wait_ms=5.0, e2e_ms=420.0, level=2)
        assert step(policy) is None
    assert policy.level == 2


def test_level_zero_never_steps_down_and_bad_levels_are_refused() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    feed(policy, 40, queue_wait_ms=1.0)
    clock.advance(30.0)
    feed(policy, 40, queue_wait_ms=1.0)
    assert step(policy) is None and policy.level == 0
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
    assert step(policy) is None and policy.level == 1


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
    assert step(policy, SLOW_BROKER) is None and policy.level == 0
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
        decision = step(policy, verdict)
        assert decision is not None and decision.level == 3 and policy.hold is None


def test_the_withheld_raise_happens_once_the_alarm_ends() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 40, queue_wait_ms=130.0)
    assert step(policy, SLOW_BROKER) is None and policy.hold is not None
    decision = step(policy, HEALTHY_BROKER)
    assert decision is not None and (decision.previous_level, decision.level) == (0, 2)
    assert policy.hold is None, "each evaluation says whether it held"


def test_a_slow_lookup_alone_is_a_transport_alarm() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 40, queue_wait_ms=110.0)
    assert step(policy, probe_verdict(lookup_ms=60.0)) is None and policy.level == 0
    assert policy.hold is not None and "offset lookup p95 60 ms > 25 ms" in policy.hold.reason


def test_the_e2e_backstop_is_held_too() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=1)
    clock.advance(3.0)
    feed(policy, 40, queue_wait_ms=10.0, e2e_ms=600.0, level=1)
    assert step(policy, SLOW_BROKER) is None and policy.level == 1
    assert policy.hold is not None and policy.hold.withheld.level == 2
    assert policy.hold.metrics["level_e2e_ms_p95"] == 600.0


def test_stepping_down_stays_allowed_under_a_transport_alarm() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=2, window_s=2.0, recover_hold_s=1.0)
    feed(policy, 40, queue_wait_ms=5.0, level=2)
    assert step(policy, SLOW_BROKER) is None
    clock.advance(1.5)
    feed(policy, 40, queue_wait_ms=5.0, level=2)
    decision = step(policy, SLOW_BROKER)
    assert decision is not None and (decision.direction, decision.level) == ("lower", 0)
    assert policy.hold is None, "nothing was withheld"


def test_nothing_is_held_on_thin_evidence() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 5, queue_wait_ms=400.0)
    assert step(policy, SLOW_BROKER) is None and policy.hold is None


def busy_worker(policy: ControlPolicy, clock: FakeClock, busy: float, skipped_per_hop: int = 0, level: int = 0) -> None:
    """3 s of one worker's hops, 20 per second, whose inference shares add up to ``busy`` of the time."""
    for _ in range(60):
        clock.advance(0.05)
        share_ms = busy * 50.0
        policy.observe(event(gpu_infer_ms=share_ms * 8, level=level, skipped_before=skipped_per_hop))


def test_evaluate_only_proposes_and_commit_moves_the_level() -> None:
    policy = make_policy(FakeClock())
    feed(policy, 40, queue_wait_ms=130.0)
    proposed = policy.evaluate()
    assert proposed is not None and proposed.level == 2
    assert policy.level == 0 and policy.evaluate() == proposed, "an undelivered command is proposed again"
    policy.commit(proposed)
    assert policy.level == 2 and policy.knobs == proposed.knobs
    with pytest.raises(ValueError, match="level 2 is in force"):
        policy.commit(proposed)


def test_offered_load_raises_straight_to_the_level_predicted_to_fit() -> None:
    clock = FakeClock()
    policy = make_policy(clock, min_level_saving=0.05)
    busy_worker(policy, clock, busy=0.95, skipped_per_hop=1)
    load = policy.load()
    assert load is not None and load.busy == pytest.approx(0.95, rel=0.05) and load.skip_ratio == 1.0
    decision = step(policy)
    # offered 1.9: emit 320 (0.5) predicts 0.95, + window 0.96 (0.375) predicts 0.71 <= 0.75
    assert decision is not None and decision.level == 2
    assert decision.metrics["offered_load"] == pytest.approx(1.9, rel=0.05)
    assert decision.metrics["predicted_load"] == pytest.approx(0.71, abs=0.03)
    assert "offered load 1.9" in decision.reason


def test_load_is_taken_per_worker_and_only_at_the_current_level() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    for index in range(60):
        clock.advance(0.05)
        policy.observe(event(gpu_infer_ms=8 * 25.0, worker_id=f"w{index % 2}"))
    load = policy.load()
    assert load is not None and load.busy == pytest.approx(0.25, rel=0.05), "two workers each half as busy"
    busy_worker(policy, clock, busy=0.95, level=3)
    assert policy.load() is None, "hops cut at another level say nothing about this one"


def test_a_level_that_saves_too_little_is_skipped() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=2, min_level_saving=0.05)
    policy.set_savings({"beam2": 0.01, "greedy": 0.2, "int8": 0.1})
    assert 3 not in policy.worthwhile and 4 in policy.worthwhile
    feed(policy, 40, queue_wait_ms=210.0, level=2)
    decision = step(policy)
    assert decision is not None and decision.level == 4, "beam 2 saves 1%: straight to greedy + int8"
    policy.set_savings({"beam2": 0.2})
    assert 3 in policy.worthwhile


def test_forged_capture_times_do_not_move_the_policy() -> None:
    """hop_buffer comes from the client's capture clock: e2e is rebuilt from the pipeline's components."""
    policy = make_policy(FakeClock())
    for index in range(45):
        forged = index % 15 == 0
        policy.observe(event(hop_buffer_ms=1.7e12 if forged else 160.0, e2e_ms=1.7e12 + 60 if forged else None))
    stats = policy.stats()
    assert stats.p95["e2e"] < 300.0
    assert step(policy) is None and policy.level == 0


@pytest.mark.parametrize("figure", ["net_ms", "queue_wait_ms", "gpu_infer_ms", "post_ms", "batch_wait_ms"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -5_000.0, 1e9])
def test_events_with_untrustworthy_figures_are_refused(figure: str, value: float) -> None:
    policy = make_policy(FakeClock())
    forged = replace(event(), **{figure: value})  # type: ignore[arg-type]
    assert policy.observe(forged) is False
    assert policy.refused == 1 and policy.stats().events == 0
    assert policy.observe(event()) is True


def test_stepping_down_waits_until_the_lower_level_is_predicted_to_fit() -> None:
    clock = FakeClock()
    policy = make_policy(clock, level=1, window_s=3.0, recover_hold_s=1.0)
    clock.advance(5.0)
    busy_worker(policy, clock, busy=0.4, level=1)
    assert step(policy) is None
    clock.advance(0.05)
    busy_worker(policy, clock, busy=0.4, level=1)
    assert step(policy) is None and policy.level == 1, "level 0 would carry 0.8 > recover_load 0.7"
    busy_worker(policy, clock, busy=0.2, level=1)
    assert step(policy) is None, "recovery starts its hold"
    busy_worker(policy, clock, busy=0.2, level=1)
    decision = step(policy)
    assert decision is not None and decision.direction == "lower" and decision.level == 0
    assert decision.metrics["predicted_load"] == pytest.approx(0.4, rel=0.05)


def test_recovery_is_judged_on_the_hops_cut_at_the_current_level() -> None:
    """A burst that raised the level is still in the window; it must not hold the recovery back."""
    clock = FakeClock()
    policy = make_policy(clock, window_s=10.0, recover_hold_s=2.0)
    feed(policy, 40, queue_wait_ms=130.0)
    burst_at = clock()
    assert step(policy) is not None and policy.level == 2
    decisions = []
    for _ in range(3):
        busy_worker(policy, clock, busy=0.1, level=policy.level)
        decisions.append(step(policy))
    assert clock() - burst_at < 10.0, "the burst is still in the 10 s window"
    assert policy.stats().p95["queue_wait"] > 100.0
    assert [(d.direction, d.level) for d in decisions if d is not None] == [("lower", 0)], "and no raise back"
