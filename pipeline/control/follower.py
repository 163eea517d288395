"""The services' view of the control topic: the newest valid command's knobs, kept in memory.

The controller publishes ``ControlCommand`` records (key = scope). Every other service
follows the newest one: the windower takes ``window_secs``, the worker ``beam``, the
assembler ``emit_interval_ms``, producers and the gateway ``admit_new_sessions``.

Only a valid command with a higher ``seq`` than the one in force moves the knobs: an older or
replayed command is ignored (stale), and an unreadable or invalid one (see
:func:`~pipeline.control.ladder.validate_command`) leaves the last good knobs in force and goes to
``<control topic>.dlq`` with the reason. Each outcome counts in ``hopline_control_commands_total``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from confluent_kafka import Message
from prometheus_client import Counter

from pipeline import contracts
from pipeline.control.ladder import GLOBAL_SCOPE, InvalidCommand, Knobs, knobs_from_command, ladder
from pipeline.kafka.dead_letters import ReaderDeadLetters
from pipeline.kafka.readers import open_reader, poll_record
from pipeline.settings import Settings

log = logging.getLogger(__name__)

Outcome = Literal["applied", "stale", "invalid"]
#: Sends one rejected control message, whole, with the reason and the error, to the dead-letter topic.
DeadLetter = Callable[[Message, str, BaseException], None]

COMMANDS = Counter("hopline_control_commands_total", "Control commands of the followed scope, by outcome.", ["outcome"])


class CommandGate:
    """What one control message does to the knobs in force; no consumer, so it runs on any message.

    Thread-safe: :attr:`knobs` may be read while :meth:`apply` runs on another thread.
    """

    def __init__(self, settings: Settings, dead_letter: DeadLetter, scope: str = GLOBAL_SCOPE) -> None:
        self._settings = settings
        self._dead_letter = dead_letter
        self._scope = scope
        self._knobs = ladder(settings)[0]
        self._seq = 0
        self._reason = ""
        self._lock = threading.Lock()

    @property
    def knobs(self) -> Knobs:
        with self._lock:
            return self._knobs

    @property
    def seq(self) -> int:
        """The seq of the command in force; 0 before the first."""
        with self._lock:
            return self._seq

    @property
    def reason(self) -> str:
        """Why the controller issued the command in force (its ``reason``); empty before the first."""
        with self._lock:
            return self._reason

    def apply(self, message: Message) -> Outcome | None:
        """Take one control message; None when it belongs to another scope."""
        key = message.key()
        if key is not None and key.decode(errors="replace") != self._scope:
            return None
        try:
            command = contracts.ControlCommand.decode(message.value())
            knobs = knobs_from_command(command, self._settings)
        except (contracts.ContractError, InvalidCommand) as exc:
            COMMANDS.labels("invalid").inc()
            log.warning("rejected control command: %s; level %d stays in force", exc, self.knobs.level)
            self._dead_letter(message, str(exc), exc)
            return "invalid"
        with self._lock:
            previous, in_force = self._knobs, self._seq
            if command.seq > in_force:
                self._seq, self._knobs, self._reason = command.seq, knobs, command.reason
        if command.seq <= in_force:
            COMMANDS.labels("stale").inc()
            log.info("ignoring control command seq %d: seq %d is in force", command.seq, in_force)
            return "stale"
        COMMANDS.labels("applied").inc()
        if knobs != previous:
            log.info("control: level %d in force (seq %d: %s)", command.level, command.seq, command.reason)
        return "applied"


class ControlFollower:
    """Keeps the newest valid control command in memory, read from the compacted control topic.

    Uses ``assign()`` on every partition from the beginning instead of a consumer group:
    every instance must see every command, and assignment is immediate. Thread-safe reads
    via :attr:`knobs`; a background thread polls until :meth:`close`. The dead-letter producer
    is made on the first rejected command only: most followers never need one.
    """

    def __init__(self, settings: Settings, scope: str = GLOBAL_SCOPE) -> None:
        self._settings = settings
        self._dead_letters = ReaderDeadLetters(settings, "control-follower")
        self._gate = CommandGate(settings, self._dead_letters.publish, scope)
        self._stop = threading.Event()
        background: dict[str, Any] = {"fetch.wait.max.ms": settings.kafka.background_fetch_wait_max_ms}
        self._consumer = open_reader(settings, "control-follower", [settings.topics.control], **background)
        self._thread = threading.Thread(target=self._run, name="control-follower", daemon=True)

    @property
    def knobs(self) -> Knobs:
        return self._gate.knobs

    @property
    def reason(self) -> str:
        """The controller's reason for the knobs in force (the gateway quotes it when refusing a session)."""
        return self._gate.reason

    def start(self) -> ControlFollower:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            message = poll_record(self._consumer, 0.1, "control topic")
            if message is not None:
                self._gate.apply(message)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self._consumer.close()
        self._dead_letters.close()
