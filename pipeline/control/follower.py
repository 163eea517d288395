"""The services' view of the control topic: the newest command's knobs, kept in memory.

The controller publishes ``ControlCommand`` records (key = scope). Every other service
follows the newest one: the windower takes ``window_secs``, the worker ``beam``, the
assembler ``emit_interval_ms``, producers and the gateway ``admit_new_sessions``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import KafkaError

from pipeline import contracts
from pipeline.control.ladder import GLOBAL_SCOPE, Knobs, knobs_from_command, ladder
from pipeline.kafka.readers import open_reader
from pipeline.settings import Settings

log = logging.getLogger(__name__)


class ControlFollower:
    """Keeps the newest control command in memory, read from the compacted control topic.

    Uses ``assign()`` on every partition from the beginning instead of a consumer group:
    every instance must see every command, and assignment is immediate. A scope's commands
    share one partition, so offset order is decision order and the last one read wins. Thread-safe reads
    via :attr:`knobs`; a background thread polls until :meth:`close`.
    """

    def __init__(self, settings: Settings, scope: str = GLOBAL_SCOPE) -> None:
        self._settings = settings
        self._scope = scope
        self._knobs = ladder(settings)[0]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        background: dict[str, Any] = {"fetch.wait.max.ms": settings.kafka.background_fetch_wait_max_ms}
        self._consumer = open_reader(settings, "control-follower", [settings.topics.control], **background)
        self._thread = threading.Thread(target=self._run, name="control-follower", daemon=True)

    @property
    def knobs(self) -> Knobs:
        with self._lock:
            return self._knobs

    def start(self) -> ControlFollower:
        self._thread.start()
        return self

    def apply(self, data: bytes | None, key: bytes | None) -> bool:
        """Take one control message; returns True when it changed the knobs in force."""
        if key is not None and key.decode(errors="replace") != self._scope:
            return False
        try:
            command = contracts.ControlCommand.decode(data)
        except contracts.ContractError as exc:
            log.warning("ignoring unreadable control message: %s", exc)
            return False
        knobs = knobs_from_command(command)
        with self._lock:
            changed = knobs != self._knobs
            self._knobs = knobs
        if changed:
            log.info("control: level %d in force (%s)", command.level, command.reason)
        return changed

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("control topic: %s", error)
                continue
            self.apply(message.value(), message.key())

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self._consumer.close()
