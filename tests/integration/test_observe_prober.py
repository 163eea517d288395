"""The broker prober (pipeline/observe/prober.py) against the real embedded broker."""

import json
import logging

import pytest
from prometheus_client import REGISTRY

from pipeline import contracts
from pipeline.observe.prober import BrokerProber
from pipeline.observe.report import collect_report
from tests.plugins.broker import SettingsFactory
from tests.plugins.kafka import read_keyed, wait_for

pytestmark = pytest.mark.integration

#: Ten heartbeats and lookups a second, so a few seconds give a verdict.
FAST = {"interval_ms": 100.0, "min_samples": 5}


def test_prober_reads_its_own_heartbeats_back_and_finds_the_broker_healthy(make_settings: SettingsFactory) -> None:
    settings = make_settings(probe=FAST)
    with BrokerProber(settings, "test") as prober, BrokerProber(settings, "neighbour") as neighbour:

        def judged() -> bool:
            verdict = prober.verdict()
            return verdict is not None and verdict.rtt_samples >= 20 and verdict.lookup_samples >= 20

        assert wait_for(judged, 15.0)
        verdict = prober.verdict()
    assert verdict is not None and not verdict.transport_slow, verdict
    assert 0 < verdict.rtt_p50_ms <= verdict.rtt_p95_ms < settings.probe.slow_p95_ms
    assert 0 < verdict.lookup_p50_ms <= verdict.lookup_p95_ms < settings.probe.slow_lookup_p95_ms

    beats = read_keyed(settings, settings.topics.probe, contracts.BrokerProbe)
    ours = [beat for key, beat in beats if key == prober.id.encode()]
    theirs = [beat for key, beat in beats if key == neighbour.id.encode()]
    assert len(ours) + len(theirs) == len(beats) and theirs, "two probers, each keyed by its id"
    assert all(beat.prober == prober.id for beat in ours)
    assert [beat.seq for beat in ours] == list(range(1, len(ours) + 1))
    rtts = [beat.previous_rtt_ms for beat in ours if beat.previous_rtt_ms >= 0]
    assert len(rtts) >= verdict.rtt_samples - 1, "each round trip counted travels in the next heartbeat"
    assert len(rtts) < len(ours), "the first heartbeats, sent while the clients connect, carry none"
    assert len([beat for beat in ours if beat.lookup_ms >= 0]) >= 10

    report, _events = collect_report(settings)
    figures = report.figures()
    assert report.heartbeats == len(beats) and figures["broker_probe_ms_p95"] is not None
    assert figures["transport_alarm"] is False


def test_a_slow_verdict_raises_the_alarm_in_the_log_and_the_metrics(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(probe={**FAST, "slow_p95_ms": 0.001, "slow_lookup_p95_ms": 0.001})
    caplog.set_level(logging.INFO, logger="pipeline.observe.prober")
    with BrokerProber(settings, "test") as prober:

        def both_judged() -> bool:
            verdict = prober.verdict()
            return verdict is not None and verdict.rtt_samples >= 5 and verdict.lookup_samples >= 5

        assert wait_for(both_judged, 15.0) and prober.alarm
        assert REGISTRY.get_sample_value("hopline_transport_alarm") == 1.0
        assert (REGISTRY.get_sample_value("hopline_broker_probe_rtt_seconds", {"stat": "p95"}) or 0.0) > 0
    starts = [r for r in caplog.records if r.getMessage().startswith("transport alarm start")]
    assert len(starts) == 1 and starts[0].levelno == logging.WARNING
    line = json.loads(starts[0].getMessage().removeprefix("transport alarm start "))
    assert line["prober"] == prober.id and line["broker_probe_slow_ms"] == 0.001
    assert "p95" in line["reason"] and ("broker_probe_ms_p95" in line or "broker_lookup_ms_p95" in line)
