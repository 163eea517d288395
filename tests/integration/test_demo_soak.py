"""``hopline soak`` end to end: a short soak of the main job on its own embedded broker."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SERVICES = {"windower", "worker", "assembler", "controller", "demo"}


def test_soak_reports_memory_state_growth_dead_letters_and_e2e_per_minute() -> None:
    command = [sys.executable, "-m", "pipeline.cli", "--log-level", "WARNING", "soak", "--sessions", "2"]
    done = subprocess.run([*command, "--minutes", "0.5", "--json"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    for sampled in ("rss_mb_start", "rss_mb_end"):
        assert set(figures[sampled]) == SERVICES
        assert all(mb > 0 for mb in figures[sampled].values()), figures[sampled]
    assert set(figures["rss_mb_per_minute"]) == SERVICES
    assert all(minutes and minutes[0] > 0 for minutes in figures["rss_mb_per_minute"].values())
    assert figures["changelog_bytes_per_session_per_minute"] > 0
    assert figures["dlq_counts"] and set(figures["dlq_counts"].values()) == {0}, figures["dlq_counts"]
    assert figures["e2e_ms_p95_per_minute"] and figures["e2e_ms_p95_per_minute"][0] > 0
    assert 0 <= figures["wer"] <= 0.10 and figures["max_level"] >= 0
