import json
import re
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Producer

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.control.follower import ControlFollower
from pipeline.control.ladder import command_record, ladder
from pipeline.kafka.clients import make_producer
from pipeline.kafka.history import read_history
from pipeline.settings import ControllerSettings, Settings
from pipeline.supervisor import ServiceProcess
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration


def latency_event(queue_wait_ms: float, level: int) -> bytes:
    fixed = {"hop_buffer_ms": 160.0, "net_ms": 3.0, "batch_wait_ms": 4.0, "gpu_infer_ms": 40.0, "post_ms": 2.0}
    return contracts.LATENCY.encode(
        {
            "session_id": f"s{uuid.uuid4().hex[:4]}",
            "hop_seq": 1,
            "worker_id": "w1",
            "event_ts_ms": now_ms(),
            **fixed,
            "queue_wait_ms": queue_wait_ms,
            "e2e_ms": sum(fixed.values()) + queue_wait_ms,
            "batch_size": 2,
            "beam": 4,
            "window_secs": 1.28,
            "control_level": level,
            "emitted": True,
        }
    )


def stream_until(producer: Producer, settings: Settings, follower: ControlFollower, queue_wait_ms: float, level: int):
    """Publish 100 events/s of the given queue wait until the follower sees ``level`` (or 20 s pass)."""
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        for _ in range(10):
            producer.produce(
                settings.topics.latency, key=b"s", value=latency_event(queue_wait_ms, follower.knobs.level)
            )
        producer.flush(5)
        if follower.knobs.level == level:
            return True
        time.sleep(0.1)
    return False


def scrape_metrics(service: ServiceProcess) -> str:
    match = re.search(r"metrics on (http://\S+/metrics)", service.output)
    assert match, service.output
    with urllib.request.urlopen(match.group(1), timeout=5) as response:
        return response.read().decode()


def test_controller_raises_under_queueing_then_steps_down_one_level_at_a_time(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(controller=ControllerSettings(window_s=1.5, tick_s=0.1, min_events=10, recover_hold_s=0.5))
    settings.metrics.enabled = True
    producer = make_producer(settings)
    previous = command_record(7, ladder(settings)[1], "an earlier controller", {}, "global")
    producer.produce(settings.topics.control, key=b"global", value=contracts.CONTROL.encode(previous))
    producer.flush(5)
    follower = ControlFollower(settings).start()
    with ServiceProcess(settings, "controller") as controller:
        try:
            controller.wait_ready(30)
            assert stream_until(producer, settings, follower, queue_wait_ms=210.0, level=3), controller.output
            metrics = scrape_metrics(controller)
            assert "hopline_controller_level 3.0" in metrics
            assert 'hopline_controller_decisions_total{direction="raise"} 1.0' in metrics
            assert 'hopline_controller_component_p95_seconds{component="queue_wait"} 0.21' in metrics
            producer.produce(settings.topics.latency, key=b"s", value=b"not a latency event")
            assert stream_until(producer, settings, follower, queue_wait_ms=5.0, level=0), controller.output
        finally:
            follower.close()
        assert controller.terminate() == 0

    commands = [contracts.CONTROL.decode(m.value()) for m in read_history(settings, settings.topics.control)]
    ours = commands[1:]
    assert [c["seq"] for c in ours] == [8, 9, 10, 11], "continues the sequence found on the topic"
    assert [c["level"] for c in ours] == [3, 2, 1, 0], "raised straight to 3, stepped down one at a time"
    assert ours[0]["metrics"]["queue_wait_ms_p95"] == pytest.approx(210.0)
    assert ours[0]["metrics"]["threshold_ms"] == 200.0
    assert (ours[0]["emit_interval_ms"], ours[0]["window_secs"], ours[0]["beam"]) == (320, 0.96, 2)
    assert all("recovered" in c["reason"] for c in ours[1:])

    logged = [json.loads(line.split("decision ", 1)[1]) for line in controller.lines if "decision {" in line]
    assert [(d["from_level"], d["level"], d["direction"]) for d in logged] == [
        (1, 3, "raise"),
        (3, 2, "lower"),
        (2, 1, "lower"),
        (1, 0, "lower"),
    ]
    assert "queue_wait_ms_p95" in logged[0]["metrics"]

    dead_letter_topic = settings.topics.dead_letter(settings.topics.latency)
    dead = [contracts.DEAD_LETTER.decode(m.value()) for m in read_history(settings, dead_letter_topic)]
    assert len(dead) == 1 and dead[0]["service"] == "controller" and dead[0]["value"] == b"not a latency event"
