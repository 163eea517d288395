import pytest

from pipeline.kafka.broker import free_port
from pipeline.kafka.topics import pipeline_topics
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess

pytestmark = pytest.mark.integration


def test_broker_command_serves_then_stops_on_sigterm() -> None:
    settings = Settings()
    port = free_port()
    with ServiceProcess(settings, "broker", "--port", str(port), "--create-topics") as broker:
        broker.wait_ready(15)
        assert broker.terminate() == 0
    assert f"127.0.0.1:{port}" in broker.output
    assert f"created {len(pipeline_topics(settings))} topics" in broker.output
