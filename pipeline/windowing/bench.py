"""``hopline bench windower``: N real-time sessions through one real windower process.

The bench starts an embedded broker (or uses ``--bootstrap-servers``), fresh topics, a
``hopline windower`` child process and a hop reader; streams N paced sessions from this
process (every third one as 8 kHz mu-law, the rest 16 kHz PCM16); then reports:

* ``frames_per_s``: frames the sessions sent per second of streaming;
* ``hop_emit_ms_p50/p95``: ``published_ts_ms - ready_ts_ms`` of every hop after the first
  two seconds (warm-up: the first fetch of each partition), ``..._all`` over every hop. Both
  are the windower's clock (ready = when it received the hop's completing frame), so this is
  the windower's own time per hop, transport from the producer not included;
* ``frame_ingest_ms_p50/p95``: that transport, ``ready_ts_ms - first_capture_ts_ms - hop_ms``
  of the full hops after warm-up: the completing frame's receive time minus the end of its
  audio (the producer sends a frame when its audio ends, on this machine's clock);
* ``cpu_ms_per_s_per_session``: the windower's CPU time (from /proc) per second of
  streaming per session, and ``windower_cores`` (CPU seconds per wall second);
* ``changelog_bytes_per_s_per_session``: bytes written to the windower's table changelogs;
* ``restart_to_ready_s``: a new windower process started on the same topics until it prints
  ``HOPLINE-READY windower`` (interpreter start, group join, faust recovery and the changelog catch-up).

The producer and reader share the machine with the windower, so figures on a busy
machine are pessimistic.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

from pipeline import contracts
from pipeline.errors import CliError
from pipeline.ingress.service import AudioProducer, AudioStream
from pipeline.kafka.broker import broker_for
from pipeline.kafka.clients import make_admin
from pipeline.kafka.readers import open_reader, read_to_end
from pipeline.kafka.topics import fresh_topics
from pipeline.observe.latency import percentile
from pipeline.ready import ready_service
from pipeline.settings import Settings

WARM_UP_MS = 2000.0


class _Windower:
    """``hopline windower`` as a child process with the bench's settings."""

    def __init__(self, settings: Settings) -> None:
        env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "windower"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.saw_ready = False
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if ready_service(line) == "windower":
                self.saw_ready = True
                self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        if not self.ready.wait(timeout_s) or not self.saw_ready:
            raise CliError("windower did not start: " + " | ".join(self.lines[-5:]))

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class _HopReader(threading.Thread):
    """Reads the hops topic from the beginning; keeps each hop's ready time, emit latency and frame ingest."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="hop-reader", daemon=True)
        self.consumer = open_reader(settings, "bench-reader", [settings.topics.hops])
        self.hop_ms = settings.audio.hop_ms
        #: (ready, published - ready, ready - first capture - hop_ms or None for a final hop), ms.
        self.hops: list[tuple[float, float, float | None]] = []
        self.finals = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            message = self.consumer.poll(0.05)
            if message is None or message.error():
                continue
            hop = contracts.Hop.decode(message.value())
            ingest = None if hop.is_final else hop.ready_ts_ms - hop.first_capture_ts_ms - self.hop_ms
            self.hops.append((hop.ready_ts_ms, hop.published_ts_ms - hop.ready_ts_ms, ingest))
            self.finals += int(hop.is_final)
        self.consumer.close()


def _changelog_bytes(settings: Settings) -> int:
    """Bytes (keys + values) in the windower's table changelog topics."""
    names = make_admin(settings).list_topics(timeout=10).topics
    changelogs = [t for t in names if t.startswith(settings.app_id) and "changelog" in t]
    return sum(
        len(message.key() or b"") + len(message.value() or b"")
        for message in read_to_end(settings, "bench-changelog", changelogs, timeout_s=60.0)
    )


def _streams(sessions: int, seconds: float) -> list[AudioStream]:
    rng = np.random.default_rng(0)
    streams = []
    for index in range(sessions):
        phone = index % 3 == 2
        rate = 8000 if phone else 16000
        samples = (rng.standard_normal(int(seconds * rate)) * 3000).astype(np.int16)
        streams.append(AudioStream(f"bench-{index}", samples, "mulaw" if phone else "pcm16", rate))
    return streams


def run_bench(settings: Settings, sessions: int, seconds: float, external_broker: bool = False) -> dict[str, Any]:
    with broker_for(settings, external_broker) as bootstrap:
        settings = fresh_topics(settings, bootstrap, metrics={"enabled": False})
        windower = _Windower(settings)
        try:
            windower.wait_ready()
            reader = _HopReader(settings)
            reader.start()
            streams = _streams(sessions, seconds)
            producer = AudioProducer(settings)
            cpu_before, started = windower.cpu_seconds(), time.monotonic()
            start_ms = time.time() * 1000.0
            producer.stream_many(streams, realtime=True)
            streamed_s = time.monotonic() - started
            report = producer.close()
            deadline = time.monotonic() + 30
            while reader.finals < sessions and time.monotonic() < deadline:
                time.sleep(0.05)
            cpu_used = windower.cpu_seconds() - cpu_before
            wall_s = time.monotonic() - started
            reader.stop.set()
            reader.join(5)
        finally:
            windower.stop()
        changelog = _changelog_bytes(settings)
        restarted_at = time.monotonic()
        restarted = _Windower(settings)
        try:
            restarted.wait_ready()
            recovery_s = time.monotonic() - restarted_at
        finally:
            restarted.stop()
    steady = [latency for ready, latency, _ in reader.hops if ready > start_ms + WARM_UP_MS]
    every = [latency for _, latency, _ in reader.hops]
    ingest = [late for ready, _, late in reader.hops if late is not None and ready > start_ms + WARM_UP_MS]
    return {
        "sessions": sessions,
        "seconds": seconds,
        "frames_sent": report.sent,
        "frames_failed": report.failed,
        "frames_per_s": round(report.sent / streamed_s, 1),
        "hops": len(every),
        "final_hops": reader.finals,
        "hop_emit_ms_p50": round(percentile(steady, 50), 2),
        "hop_emit_ms_p95": round(percentile(steady, 95), 2),
        "hop_emit_ms_p99": round(percentile(steady, 99), 2),
        "hop_emit_ms_p95_all": round(percentile(every, 95), 2),
        "hop_emit_ms_max_all": round(max(every), 2) if every else float("nan"),
        "frame_ingest_ms_p50": round(percentile(ingest, 50), 2),
        "frame_ingest_ms_p95": round(percentile(ingest, 95), 2),
        "windower_cpu_s": round(cpu_used, 2),
        "windower_cores": round(cpu_used / wall_s, 3),
        "cpu_ms_per_s_per_session": round(1000 * cpu_used / wall_s / sessions, 3),
        "changelog_bytes_per_s_per_session": round(changelog / seconds / sessions),
        "changelog_bytes": changelog,
        "restart_to_ready_s": round(recovery_s, 2),
        "hop_emit_ms_mean": round(statistics.fmean(steady), 2) if steady else float("nan"),
    }
