"""``hopline bench gateway``: short runs, the figures' keys and sane values.

One run starts everything itself (broker, services, a gateway); the other (``--url``) streams through
a gateway and pipeline started here, as for a deployment.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest

from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess
from tests.plugins.broker import SettingsFactory

pytestmark = pytest.mark.integration

#: The engine's documented WER bound on held-out speech (as in test_pipeline.py).
ENGINE_HELD_OUT_WER = 0.10
CLIENT_FIGURES = (
    "word_emission_ms_p50",
    "word_emission_ms_p95",
    "final_ms_p50",
    "final_ms_p95",
    "wer",
    "sessions_refused",
    "errors",
)


def bench(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    command = [sys.executable, "-m", "pipeline.cli", "--log-level", "WARNING", "bench", "gateway", *args, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def assert_client_figures(figures: dict[str, Any], sessions: int) -> None:
    assert set(CLIENT_FIGURES) <= figures.keys()
    assert figures["sessions"] == sessions and figures["sessions_refused"] == 0, figures
    assert figures["errors"] == 0, figures["error_examples"]
    assert figures["wer"] <= ENGINE_HELD_OUT_WER
    assert figures["word_emission_words"] > 0 and figures["finals"] >= sessions
    assert -300 <= figures["word_emission_ms_p50"] <= figures["word_emission_ms_p95"] <= 3000
    # A final waits for the endpoint's silence (600 ms) after the end of speech.
    assert 400 <= figures["final_ms_p50"] <= figures["final_ms_p95"] <= 5000
    assert 0 <= figures["egress_ms_p50"] <= figures["egress_ms_p95"] <= 2000


def test_the_bench_streams_through_a_gateway_it_starts() -> None:
    figures = bench("--sessions", "2", "--duration", "5")
    assert_client_figures(figures, 2)
    assert figures["gateway"] == "started"
    assert 0 < figures["e2e_ms_p50"] <= figures["e2e_ms_p95"] <= 5000
    # Capture times are the gateway's receive times (never later), so on a loaded machine a burst of
    # client chunks can make a hop's span shorter than its 160 ms of audio: only its sign is asserted.
    assert 0 < figures["hop_buffer_ms_p50"] <= figures["hop_buffer_ms_p95"]


@contextmanager
def pipeline_with_gateway(settings: Settings) -> Iterator[str]:
    """Windower, worker, assembler and a gateway as child services; yields the gateway's ws://host:port."""
    with ExitStack() as stack:
        roles = ("windower", "worker", "assembler")
        services = [stack.enter_context(ServiceProcess(settings, role)) for role in roles]
        gateway = stack.enter_context(ServiceProcess(settings, "gateway", "--port", "0"))
        for service in [*services, gateway]:
            service.wait_ready(120)
        match = re.search(r"gateway on (ws://127\.0\.0\.1:\d+)", gateway.output)
        assert match, gateway.output
        yield match.group(1)


def test_the_bench_streams_through_a_running_gateway_with_url(make_settings: SettingsFactory) -> None:
    settings = make_settings(partitions=1, gateway={"tokens": {"acme": "bench-token"}})
    with pipeline_with_gateway(settings) as url:
        figures = bench("--sessions", "2", "--duration", "4", "--url", url, env={**os.environ, **settings.to_env()})
    assert_client_figures(figures, 2)
    assert figures["gateway"] == url
    assert figures["e2e_ms_p50"] is None, "no latency topic read through a gateway URL"
