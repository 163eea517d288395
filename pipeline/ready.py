"""What a long-running service tells its supervisor: fixed-token lines, never free log text.

* ``HOPLINE-READY <service>`` on stdout once it actually consumes (group joined, recovery done,
  partitions assigned): :func:`announce_ready`. Supervisors (the demo, the benches, the tests'
  harness) wait for exactly that line.
* ``HOPLINE-STATS <service> <json>`` on stderr when it exits: :func:`announce_stats`, its produce
  figures (record batches and records, totals and per second), which the demo reports.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

READY_TOKEN = "HOPLINE-READY"
STATS_TOKEN = "HOPLINE-STATS"


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


def announce_stats(service: str, figures: Mapping[str, Any]) -> None:
    """Print ``service``'s exit figures on stderr (stdout may carry a command's output)."""
    print(f"{STATS_TOKEN} {service} {json.dumps(dict(figures))}", file=sys.stderr, flush=True)


def stats_of(line: str) -> tuple[str, dict[str, Any]] | None:
    """(service, figures) of a stats line, or None when ``line`` is not one."""
    token, _, rest = line.strip().partition(" ")
    service, _, payload = rest.partition(" ")
    if token != STATS_TOKEN or not service:
        return None
    try:
        figures = json.loads(payload)
    except ValueError:
        return None
    return (service, figures) if isinstance(figures, dict) else None
