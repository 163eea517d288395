"""Prometheus plumbing shared by every service: one /metrics port each, common buckets.

Each role declares its own counters and histograms next to its code; this module only
holds what they share.
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: Seconds; fine enough to tell 1 ms from 5 ms and 200 ms from 500 ms.
LATENCY_BUCKETS_S = (
    0.001,
    0.002,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.0,
    5.0,
)

BATCH_SIZE_BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 12, 16)


def serve_metrics(settings: Settings, service: str) -> int | None:
    """Start the /metrics HTTP endpoint for this process; returns the port, or None if disabled."""
    if not settings.metrics.enabled:
        return None
    server, _thread = start_http_server(settings.metrics.port, addr=settings.metrics.host)
    port: int = server.server_port
    log.info("%s metrics on http://%s:%d/metrics", service, settings.metrics.host, port)
    return port
