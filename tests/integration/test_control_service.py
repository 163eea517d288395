"""``hopline controller`` (pipeline/control/service.py) as a child process on the real broker."""

import json
import uuid

import pytest
from confluent_kafka import Producer

from pipeline import contracts
from pipeline.control.follower import ControlFollower
from pipeline.kafka.clients import make_producer
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess
from tests.plugins.broker import SettingsFactory
from tests.plugins.builders import control_command, latency_event
from tests.plugins.kafka import read_all, scrape_metrics, wait_for

pytestmark = pytest.mark.integration

#: The prober runs, but this shared test broker never counts as slow: these tests are about the latency rules.
HEALTHY_BROKER = {"slow_p95_ms": 10_000.0, "slow_lookup_p95_ms": 10_000.0}

#: Every level counts as worthwhile, so the queue-wait thresholds map to levels one to one.
QUEUE_WAIT_LADDER = {"window_s": 1.5, "tick_s": 0.1, "min_events": 10, "min_level_saving": 0.0}


def stream_until(producer: Producer, settings: Settings, follower: ControlFollower, queue_wait_ms: float, level: int):
    """Publish 100 events/s of the given queue wait until the follower sees ``level`` (or 20 s pass).

    Each hop's share of its batch's inference is 1 ms, so the worker load stays ~0.1: only queue_wait moves.
    """

    def published_and_seen() -> bool:
        for _ in range(10):
            event = latency_event(
                queue_wait_ms,
                session_id=f"s{uuid.uuid4().hex[:4]}",
                control_level=follower.knobs.level,
                gpu_infer_ms=8.0,
                batch_size=8,
            )
            producer.produce(settings.topics.latency, key=b"s", value=event.encode())
        producer.flush(5)
        return follower.knobs.level == level

    return wait_for(published_and_seen, 20.0, interval_s=0.1)


def test_controller_raises_under_queueing_then_steps_down_to_the_level_the_load_fits(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(
        controller={**QUEUE_WAIT_LADDER, "recover_hold_s": 0.5},
        probe=HEALTHY_BROKER,
        metrics={"enabled": True},
    )
    producer = make_producer(settings)
    previous = control_command(settings, 1, seq=7, reason="an earlier controller")
    producer.produce(settings.topics.control, key=b"global", value=previous.encode())
    producer.flush(5)
    follower = ControlFollower(settings).start()
    with ServiceProcess(settings, "controller") as controller:
        try:
            controller.wait_ready(30)
            assert stream_until(producer, settings, follower, queue_wait_ms=210.0, level=3), controller.output
            metrics = scrape_metrics(controller.output)
            assert "hopline_controller_level 3.0" in metrics
            assert 'hopline_controller_decisions_total{direction="raise"} 1.0' in metrics
            assert 'hopline_controller_component_p95_seconds{component="queue_wait"} 0.21' in metrics
            producer.produce(settings.topics.latency, key=b"s", value=b"not a latency event")
            assert stream_until(producer, settings, follower, queue_wait_ms=5.0, level=0), controller.output
        finally:
            follower.close()
        assert controller.terminate() == 0

    commands = read_all(settings, settings.topics.control, contracts.ControlCommand)
    ours = commands[1:]
    assert [c.seq for c in ours] == [8, 9], "continues the sequence found on the topic"
    assert [c.level for c in ours] == [3, 0], "raised straight to 3; the light load fits level 0 straight away"
    assert ours[0].metrics["queue_wait_ms_p95"] == pytest.approx(210.0)
    assert ours[0].metrics["threshold_ms"] == 200.0
    assert (ours[0].emit_interval_ms, ours[0].window_secs, ours[0].beam) == (320, 0.96, 2)
    assert all("recovered" in c.reason for c in ours[1:])

    logged = [json.loads(line.split("decision ", 1)[1]) for line in controller.lines if "decision {" in line]
    assert [(d["from_level"], d["level"], d["direction"]) for d in logged] == [
        (1, 3, "raise"),
        (3, 0, "lower"),
    ]
    assert "queue_wait_ms_p95" in logged[0]["metrics"]

    dead_letter_topic = settings.topics.dead_letter(settings.topics.latency)
    dead = read_all(settings, dead_letter_topic, contracts.DeadLetter)
    assert len(dead) == 1 and dead[0].service == "controller" and dead[0].value == b"not a latency event"


def test_controller_holds_its_level_on_a_transport_alarm(make_settings: SettingsFactory) -> None:
    """Any round trip or lookup counts as slow here: queueing that would raise to 3 is held at 0, and said so."""
    settings = make_settings(
        controller=QUEUE_WAIT_LADDER,
        probe={"interval_ms": 100.0, "min_samples": 3, "slow_p95_ms": 0.001, "slow_lookup_p95_ms": 0.001},
        metrics={"enabled": True},
    )
    producer = make_producer(settings)
    with ServiceProcess(settings, "controller") as controller:
        controller.wait_ready(30)
        assert wait_for(lambda: "transport alarm start" in controller.output, 15.0), controller.output

        def held() -> bool:
            for _ in range(10):
                event = latency_event(210.0, session_id=f"s{uuid.uuid4().hex[:4]}", gpu_infer_ms=8.0, batch_size=8)
                producer.produce(settings.topics.latency, key=b"s", value=event.encode())
            producer.flush(5)
            return '"direction":"hold"' in controller.output

        assert wait_for(held, 20.0, interval_s=0.1), controller.output
        metrics = scrape_metrics(controller.output)
        assert "hopline_transport_alarm 1.0" in metrics
        assert "hopline_controller_transport_holds_total 1.0" in metrics
        assert "hopline_controller_transport_hold 1.0" in metrics
        assert "hopline_controller_level 0.0" in metrics
        assert controller.terminate() == 0

    logged = [json.loads(line.split("decision ", 1)[1]) for line in controller.lines if "decision {" in line]
    assert [(d["direction"], d["from_level"], d["level"], d["withheld_level"]) for d in logged] == [("hold", 0, 0, 3)]
    hold = logged[0]
    assert hold["metrics"]["queue_wait_ms_p95"] == pytest.approx(210.0), "the figures that would have raised"
    assert hold["metrics"]["withheld_level"] == 3.0 and hold["metrics"]["broker_lookup_slow_ms"] == 0.001
    assert hold["reason"].startswith("transport alarm (") and "queue_wait p95 210 ms" in hold["reason"]
    assert read_all(settings, settings.topics.control, contracts.ControlCommand) == [], "nothing published"
