"""``hopline bench gateway``: N real-time WebSocket sessions through ``hopline gateway`` and the pipeline.

The run is the main job in gateway mode, ``hopline demo --gateway`` (or ``--gateway-url URL`` for a
gateway and pipeline already running), started as a child process: the demo already runs the broker,
the services and the gateway, plans the sample sessions whose word end times are known (half Twilio
calls, half ``/v1/stream``), streams them with :mod:`pipeline.gateway.client` and measures on the
clients' sockets. Run in this process instead, the gateway stage would import the demo, which imports
the gateway's client: a cycle between stages. The bench keeps the demo's figures that judge the gateway:

* ``word_emission_ms_p50/p95``: a correctly transcribed word's end in the audio -> the word first shown
  on the client's socket (the client's clock: it sent the audio);
* ``final_ms_p50/p95``: end of speech (a segment's last word's end) -> its final on the client, the
  endpoint's silence (600 ms) included;
* ``wer``, ``sessions_refused`` (closed 1013), ``errors`` (sessions that failed otherwise);
* ``egress_ms_p50/p95``: transcript published -> received by the client (the gateway's fan-out);
* the pipeline's latency components at p50/p95 from the latency topic (None with ``--url``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

from pipeline.errors import CliError
from pipeline.settings import Settings

COMPONENTS = ("hop_buffer", "net", "queue_wait", "batch_wait", "gpu_infer", "post", "e2e")
#: The demo's figures the bench reports, under the same names.
KEPT = (
    "word_emission_ms_p50",
    "word_emission_ms_p95",
    "word_emission_words",
    "final_ms_p50",
    "final_ms_p95",
    "finals",
    "wer",
    "errors",
    "error_examples",
    "egress_ms_p50",
    "egress_ms_p95",
    "delivered_e2e_ms_p50",
    "delivered_e2e_ms_p95",
    *(f"{name}_ms_{p}" for name in COMPONENTS for p in ("p50", "p95")),
    "p95_component",
    "max_level",
)


def demo_command(
    sessions: int, duration_s: float, url: str | None, bootstrap_servers: str | None, log_level: str
) -> list[str]:
    """The ``hopline demo`` run the bench is: gateway mode, JSON figures."""
    command = [sys.executable, "-m", "pipeline.cli", "--log-level", log_level]
    if bootstrap_servers is not None:
        command += ["--bootstrap-servers", bootstrap_servers]
    command += ["demo", "--sessions", str(sessions), "--duration", f"{duration_s:g}", "--json"]
    return command + (["--gateway-url", url] if url is not None else ["--gateway"])


def bench_figures(demo: dict[str, Any], duration_s: float, url: str | None) -> dict[str, Any]:
    """The bench's JSON object from the demo's figures."""
    figures: dict[str, Any] = {
        "sessions": demo["sessions"],
        "duration_s": duration_s,
        "gateway": url or "started",
        "sessions_refused": demo["refused_sessions"],
    }
    figures.update({key: demo.get(key) for key in KEPT})
    return figures


def run_bench(
    settings: Settings, sessions: int, duration_s: float, url: str | None, bootstrap_servers: str | None
) -> dict[str, Any]:
    """Run the demo in gateway mode as a child (its progress on stderr); its figures, as :func:`bench_figures`."""
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    command = demo_command(sessions, duration_s, url, bootstrap_servers, level)
    env = {**os.environ, **settings.to_env()}
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise CliError(f"the gateway run ({' '.join(command[3:])}) failed with exit code {done.returncode}")
    return bench_figures(json.loads(done.stdout.splitlines()[-1]), duration_s, url)
