"""The readiness signal of a long-running service: one fixed-token line on stdout.

A service calls :func:`announce_ready` once it actually consumes (group joined, recovery done,
partitions assigned), which prints ``HOPLINE-READY <service>`` and flushes. Supervisors (the
demo, the benches, the tests' harness) wait for exactly that line instead of matching log text.
"""

from __future__ import annotations

import sys

READY_TOKEN = "HOPLINE-READY"


def ready_line(service: str) -> str:
    """The line ``service`` prints when it is ready."""
    return f"{READY_TOKEN} {service}"


def announce_ready(service: str) -> None:
    """Print the ready line of ``service`` on stdout and flush it."""
    print(ready_line(service), file=sys.stdout, flush=True)


def ready_service(line: str) -> str | None:
    """The service a ready line announces, or None when ``line`` is not a ready line."""
    token, _, service = line.strip().partition(" ")
    return service if token == READY_TOKEN and service and " " not in service else None
