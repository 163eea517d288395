"""The whole pipeline on the real broker: windower, worker, assembler, controller as child processes."""

import itertools
import json
import subprocess
import sys
import threading

import pytest

from pipeline import contracts
from pipeline.control.follower import ControlFollower
from pipeline.demo.service import load_samples, plan_sessions, stream_sessions
from pipeline.ingress.service import AudioProducer
from pipeline.settings import ControllerSettings, WorkerSettings
from pipeline.supervisor import ServiceProcess
from tests.plugins.broker import SettingsFactory
from tests.plugins.kafka import read_all, wait_for
from tests.plugins.services import running_services

pytestmark = pytest.mark.integration

#: The engine's documented WER bound on held-out speech (issue 3: <= 10 % at beam 4; docs/asr/eval_cpu.json
#: measures 0.65 % on whole utterances and 3.1 % on rolling windows).
ENGINE_HELD_OUT_WER = 0.10


def test_main_job_turns_spoken_samples_into_transcripts_within_the_engines_wer() -> None:
    """``hopline demo`` end to end: its own broker, every service, a PCM and a mu-law session, the report."""
    command = [sys.executable, "-m", "pipeline.cli", "--log-level", "WARNING", "demo", "--sessions", "2"]
    done = subprocess.run([*command, "--duration", "8", "--json"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout)
    assert figures["sessions"] == 2 and figures["refused_sessions"] == 0
    assert figures["wer"] <= ENGINE_HELD_OUT_WER, done.stderr[-3000:]
    assert figures["exit_codes"] == {"windower": 0, "worker": 0, "assembler": 0, "controller": 0}
    assert figures["events"] > 0 and figures["word_emission_words"] > 0
    for component in ("hop_buffer", "net", "queue_wait", "batch_wait", "gpu_infer", "post", "e2e"):
        assert 0 <= figures[f"{component}_ms_p50"] <= figures[f"{component}_ms_p95"]
    assert 160.0 <= figures["hop_buffer_ms_p50"] <= 260.0, "160 ms of audio + the frames' ingest transport"
    assert "warm-up session done" in done.stderr and " t=" in done.stderr, "progress while it runs"


def test_slowed_worker_makes_the_controller_degrade_then_recover(make_settings: SettingsFactory) -> None:
    """A worker slowed 4x under 10 sessions raises the level; a healthy replacement lets it step back down.

    The e2e target is loosened because this machine is shared: the test checks the ladder's
    dynamics on queue_wait, not how fast this box is; for the same reason the broker probe's
    alarm thresholds are out of reach (a slow worker, not a slow broker, is under test).
    """
    settings = make_settings(
        partitions=2,
        worker=WorkerSettings(fault_slowdown=4.0),
        controller=ControllerSettings(
            window_s=3.0, tick_s=0.2, min_events=10, recover_hold_s=1.0, recover_fraction=0.8, e2e_p95_target_ms=1500.0
        ),
        probe={"slow_p95_ms": 10_000.0, "slow_lookup_p95_ms": 10_000.0},
    )
    samples = load_samples()
    spike = plan_sessions(samples, sessions=8, duration_s=5.0, run_id="spike")
    steady = plan_sessions(samples, sessions=2, duration_s=40.0, run_id="steady")
    stop = threading.Event()
    with running_services(settings, "windower", "worker", "assembler", "controller") as services:
        control = ControlFollower(settings).start()
        producer = AudioProducer(settings, control=control)
        streamer = threading.Thread(target=stream_sessions, args=(producer, spike + steady, stop), daemon=True)
        streamer.start()
        try:
            assert wait_for(lambda: control.knobs.level >= 1, 20), services["controller"].output[-3000:]
            raised = control.knobs.level
            assert services.pop("worker").terminate(30) == 0
            with ServiceProcess(settings, "worker", env={"HOPLINE_WORKER__FAULT_SLOWDOWN": "1.0"}) as healthy:
                healthy.wait_ready(120)
                assert wait_for(lambda: control.knobs.level == 0, 40), services["controller"].output[-3000:]
                stop.set()
                streamer.join(10)
                assert healthy.terminate(30) == 0
        finally:
            stop.set()
            control.close()
    commands = read_all(settings, settings.topics.control, contracts.ControlCommand)
    levels = [c.level for c in commands]
    assert max(levels) >= raised >= 1 and levels[-1] == 0
    assert [c.seq for c in commands] == list(range(1, len(commands) + 1))
    downs = [(a.level, b.level) for a, b in itertools.pairwise(commands) if b.level < a.level]
    assert downs and all(
        b.metrics["predicted_load"] < 0.7 for a, b in itertools.pairwise(commands) if b.level < a.level
    ), "each step down goes to a level predicted to carry the measured load"
    assert all("queue_wait_ms_p95" in c.metrics and c.reason for c in commands)
