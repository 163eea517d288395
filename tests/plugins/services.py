"""hopline services as child processes for a test: started, awaited ready, and required to exit 0 on SIGTERM."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess


@contextmanager
def running_services(
    settings: Settings, *roles: str, ready_timeout_s: float = 120.0
) -> Iterator[dict[str, ServiceProcess]]:
    """Start each role, wait until every one is ready, yield them; on exit SIGTERM all and assert clean exits."""
    services = {role: ServiceProcess(settings, role) for role in roles}
    try:
        for service in services.values():
            service.wait_ready(ready_timeout_s)
        yield services
    finally:
        codes = {role: service.terminate(30) for role, service in services.items()}
    assert codes == dict.fromkeys(services, 0), {role: s.output[-2000:] for role, s in services.items()}
