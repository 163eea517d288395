"""Run hopline services as real child processes in integration tests.

A service is ``python -m pipeline.cli <command>`` with the test's settings passed as
``HOPLINE_*`` variables. It counts as ready once its output matches ``ready_pattern``
(every service logs a line containing ``ready`` when it consumes). Stopping with SIGTERM
checks the clean-shutdown path; SIGKILL simulates a crash.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from types import TracebackType

from pipeline.settings import Settings


class ServiceProcess:
    def __init__(self, settings: Settings, *args: str, ready_pattern: str = r"\bready\b") -> None:
        self.args = args
        self.ready_pattern = re.compile(ready_pattern)
        self.lines: list[str] = []
        self._ready = threading.Event()
        env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.ready_pattern.search(line):
                self._ready.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout_s: float = 30.0) -> ServiceProcess:
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(0.05):
            if self.process.poll() is not None:
                raise AssertionError(f"{self.args} exited with {self.process.returncode}:\n{self.output[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.args} not ready within {timeout_s} s:\n{self.output[-3000:]}")
        return self

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait: the service must drain and exit on its own."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.args} ignored SIGTERM for {timeout_s} s:\n{self.output[-3000:]}") from None
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
