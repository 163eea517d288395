"""The analyst report's figures (the pure part of pipeline/observe/report.py)."""

import pytest

from pipeline import contracts
from pipeline.errors import CliError
from pipeline.observe.latency import MEASURES
from pipeline.observe.report import build_report, format_groups, format_report, group_reports, parse_span
from pipeline.settings import ProbeSettings, Settings
from tests.plugins.builders import broker_probe, control_command, latency_event

SETTINGS = Settings()


def event(
    session: str, ts_ms: float, queue_wait_ms: float, gpu_ms: float = 40.0, batch_size: int = 1, worker: str = "w1"
) -> contracts.LatencyEvent:
    return latency_event(
        queue_wait_ms,
        session_id=session,
        hop_seq=0,
        worker_id=worker,
        event_ts_ms=ts_ms,
        net_ms=4.0,
        batch_wait_ms=6.0,
        gpu_infer_ms=gpu_ms,
        post_ms=3.0,
        batch_size=batch_size,
    )


def command(seq: int, level: int, ts_ms: float) -> contracts.ControlCommand:
    metrics = {"queue_wait_ms_p95": 250.0}
    return control_command(SETTINGS, level, seq=seq, reason=f"reason {seq}", metrics=metrics, issued_ts_ms=ts_ms)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0)])
def test_parse_span(text: str, seconds: float) -> None:
    assert parse_span(text) == seconds


@pytest.mark.parametrize("text", ["", "10x", "-5m", "0s", "m"])
def test_parse_span_refuses_nonsense_in_one_line(text: str) -> None:
    with pytest.raises(CliError, match="--since"):
        parse_span(text)


def test_queueing_tail_is_named_the_driver_though_gpu_dominates_the_median() -> None:
    events = [event(f"s{i % 5}", 1000.0 + i, queue_wait_ms=5.0, gpu_ms=120.0, batch_size=1 + i % 2) for i in range(95)]
    events += [event("s9", 2000.0 + i, queue_wait_ms=400.0, gpu_ms=120.0, batch_size=4) for i in range(5)]
    report = build_report(events, [command(2, 3, 1500.0), command(1, 2, 1400.0)])
    assert report.events == 100 and report.sessions == 6
    assert report.driver is not None and report.driver.component == "queue_wait"
    assert report.driver.excess_ms["queue_wait"] > report.driver.excess_ms["gpu_infer"]
    assert report.batch_sizes == {1: 48, 2: 47, 4: 5}
    assert report.batch_size_mean == pytest.approx((48 + 94 + 20) / 100)
    figures = report.figures()
    for name in MEASURES:
        assert figures[f"{name}_ms_p50"] <= figures[f"{name}_ms_p95"]
    assert figures["gpu_infer_ms_p50"] == 120.0
    assert figures["p95_driver"] == "queue_wait"
    assert [d["seq"] for d in figures["decisions"]] == [1, 2], "in the order they were issued"
    text = format_report(report)
    assert "e2e p95 driver: queue_wait" in text
    assert "seq 2 -> level 3" in text and "reason 2" in text


def test_empty_span_reports_nulls_not_nan() -> None:
    report = build_report([])
    figures = report.figures()
    assert figures["events"] == 0 and figures["e2e_ms_p95"] is None and figures["p95_driver"] is None
    assert "no latency events" in format_report(report)


def test_groups_show_which_worker_makes_the_p95() -> None:
    events = [event("s1", 1000.0 + i, queue_wait_ms=5.0, worker="fast") for i in range(30)]
    events += [event("s2", 1000.0 + i, queue_wait_ms=300.0, worker="slow") for i in range(10)]
    groups = group_reports(events, "worker")
    assert list(groups) == ["fast", "slow"]
    assert groups["slow"].p95["e2e"] > groups["fast"].p95["e2e"]
    assert groups["slow"].events == 10
    text = format_groups("worker", groups)
    assert text.splitlines()[0] == "by worker:" and "slow" in text.splitlines()[-1]


def queueing_tail() -> list[contracts.LatencyEvent]:
    """100 hops over 1000..2004 ms whose slowest 5 spend their time in queue_wait (time in Kafka included)."""
    events = [event(f"s{i % 5}", 1000.0 + i, queue_wait_ms=5.0, gpu_ms=120.0) for i in range(95)]
    return events + [event("s9", 2000.0 + i, queue_wait_ms=400.0, gpu_ms=120.0) for i in range(5)]


def heartbeats(
    rtt_ms: float, lookup_ms: float = 1.0, count: int = 30, start_ms: float = 1000.0
) -> list[contracts.BrokerProbe]:
    """One heartbeat per 30 ms inside the span, the first without a previous round trip."""
    return [
        broker_probe(-1.0 if i == 0 else rtt_ms, lookup_ms=lookup_ms, seq=i + 1, sent_ts_ms=start_ms + 30.0 * i)
        for i in range(count)
    ]


def test_the_broker_is_named_the_driver_when_its_probe_was_slow_in_the_span() -> None:
    report = build_report(queueing_tail(), probes=heartbeats(rtt_ms=90.0))
    assert report.driver is not None and report.driver.component == "queue_wait"
    assert report.driver_name == "broker" and report.transport_alarm
    figures = report.figures()
    assert figures["p95_driver"] == "broker" and figures["p95_component"] == "queue_wait"
    assert figures["broker_probe_ms_p50"] == 90.0 and figures["broker_probe_ms_p95"] == 90.0
    assert figures["broker_lookup_ms_p95"] == 1.0 and figures["broker_heartbeats"] == 30
    assert figures["transport_alarm"] is True
    text = format_report(report)
    assert "e2e p95 driver: broker — heartbeat round trip p95 90 ms > 50 ms; in the slowest 5 hops queue_wait" in text
    assert "broker probe: 30 heartbeats, round trip p50 90.0 / p95 90.0 ms (alarm > 50)" in text
    assert "transport alarm: heartbeat round trip p95 90 ms > 50 ms" in text


def test_slow_lookups_name_the_broker_too() -> None:
    report = build_report(queueing_tail(), probes=heartbeats(rtt_ms=6.0, lookup_ms=80.0))
    assert report.figures()["p95_driver"] == "broker"
    assert "offset lookup p95 80 ms > 25 ms" in format_report(report)


def test_a_healthy_broker_leaves_the_component_as_the_driver() -> None:
    report = build_report(queueing_tail(), probes=heartbeats(rtt_ms=6.0))
    figures = report.figures()
    assert figures["p95_driver"] == "queue_wait" and figures["transport_alarm"] is False
    assert figures["broker_probe_ms_p95"] == 6.0
    text = format_report(report)
    assert "e2e p95 driver: queue_wait" in text and "broker probe: 30 heartbeats" in text
    assert "transport alarm" not in text


def test_a_slow_broker_does_not_take_a_tail_spent_computing() -> None:
    events = [event(f"s{i % 5}", 1000.0 + i, queue_wait_ms=5.0, gpu_ms=40.0) for i in range(95)]
    events += [event("s9", 2000.0 + i, queue_wait_ms=5.0, gpu_ms=600.0) for i in range(5)]
    report = build_report(events, probes=heartbeats(rtt_ms=90.0))
    figures = report.figures()
    assert figures["p95_driver"] == "gpu_infer" and figures["transport_alarm"] is True
    assert "transport alarm:" in format_report(report)


def test_only_heartbeats_inside_the_span_count_and_the_threshold_is_the_settings() -> None:
    before = heartbeats(rtt_ms=500.0, start_ms=0.0)
    report = build_report(queueing_tail(), probes=before + heartbeats(rtt_ms=30.0))
    assert report.heartbeats == 30 and report.figures()["p95_driver"] == "queue_wait"
    strict = build_report(queueing_tail(), probes=heartbeats(rtt_ms=30.0), probe_settings=ProbeSettings(slow_p95_ms=20))
    assert strict.figures()["p95_driver"] == "broker"


def test_without_heartbeats_the_probe_figures_are_null() -> None:
    figures = build_report(queueing_tail()).figures()
    assert figures["broker_probe_ms_p95"] is None and figures["broker_heartbeats"] == 0
    assert figures["p95_driver"] == "queue_wait" and figures["transport_alarm"] is False
