"""Run hopline services as real child processes: the demo's supervisor and the tests' harness.

A service is ``python -m pipeline.cli <command>`` with the given settings passed as
``HOPLINE_*`` variables, so every child runs with exactly the parent's configuration. It
counts as ready once it prints its ready line, ``HOPLINE-READY <service>``
(:func:`pipeline.ready.announce_ready`, printed when it actually consumes); no log text is
matched. SIGTERM exercises the clean-shutdown path; SIGKILL simulates a crash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from pipeline.ready import ready_service, stats_of
from pipeline.settings import Settings


class ServiceFailed(RuntimeError):
    """A child service exited early, never became ready, or ignored SIGTERM; carries its output tail."""


class ServiceProcess:
    """One child service; its merged stdout/stderr is collected line by line in :attr:`lines`."""

    def __init__(
        self,
        settings: Settings,
        *args: str,
        service: str | None = None,
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self.args = args
        #: The name in the ready line this process waits for; the command's name unless given.
        self.service = service or (args[0] if args else "hopline")
        self.lines: list[str] = []
        #: The service's produce figures from its ``HOPLINE-STATS`` line, once it has exited.
        self.stats: dict[str, Any] = {}
        self._on_line = on_line
        self._ready = threading.Event()
        child_env = {**os.environ, **settings.to_env(), **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"read-{args[0] if args else 'hopline'}", daemon=True)
        self._reader.start()

    @property
    def name(self) -> str:
        return " ".join(self.args)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if self._on_line is not None:
                self._on_line(line)
            if ready_service(line) == self.service:
                self._ready.set()
            stats = stats_of(line)
            if stats is not None and stats[0] == self.service:
                self.stats = stats[1]

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, timeout_s: float = 30.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.05):
            if self.process.poll() is not None:
                raise ServiceFailed(f"{self.args} exited with {self.process.returncode}:\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                raise ServiceFailed(f"{self.args} not ready within {timeout_s} s:\n{self.output[-3000:]}")
        return self

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait: the service must drain and exit on its own."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 20.0) -> int:
        """Wait for the exit without signalling again (a second SIGTERM may hit a default handler)."""
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise ServiceFailed(f"{self.args} ignored SIGTERM for {timeout_s} s:\n{self.output[-3000:]}") from None
        self._reader.join(2.0)
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown path runs, as in a crash."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(2.0)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process.poll() is None:
            self.kill()


def stop_all(services: Sequence[ServiceProcess], timeout_s: float = 30.0) -> list[int]:
    """SIGTERM every service at once, then wait for each; returns their exit codes.

    A service that ignores SIGTERM for ``timeout_s`` is killed (its code is then negative). An
    interrupt while waiting (a second Ctrl-C or SIGTERM) kills the rest rather than leaving
    orphans, then propagates.
    """
    for service in services:
        if service.running:
            service.process.send_signal(signal.SIGTERM)
    codes = []
    try:
        for service in services:
            try:
                codes.append(service.wait(timeout_s))
            except ServiceFailed:
                codes.append(service.process.returncode)
    except BaseException:
        for service in services:
            service.kill()
        raise
    return codes
