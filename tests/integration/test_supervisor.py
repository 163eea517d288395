import pytest

from pipeline.kafka.broker import free_port
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess, stop_all

pytestmark = pytest.mark.integration


def test_stop_all_sigterms_every_service_and_collects_exit_codes() -> None:
    services = [ServiceProcess(Settings(), "broker", "--port", str(free_port())) for _ in range(2)]
    try:
        for service in services:
            service.wait_ready(15)
        assert stop_all(services) == [0, 0]
        assert not any(service.running for service in services)
    finally:
        for service in services:
            service.kill()
