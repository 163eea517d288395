"""The controller's view of the capabilities topic: what each degradation knob saves on the workers.

Every worker measures at start-up what the shorter window, beam 2, greedy decoding and the cheaper
model tier save on its own engine and device, and publishes a ``WorkerCapabilities`` record
(key = worker id). The controller prices its levels with them (:mod:`pipeline.control.costs`).
With several workers a knob is worth only what it saves on the worker where it saves least: a
level must pay for itself everywhere it is put in force. Records measured more than ``max_age_s``
before the newest one are left out (workers that have since gone).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from pipeline import contracts
from pipeline.kafka.dead_letters import ReaderDeadLetters
from pipeline.kafka.readers import open_reader, poll_record
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: Told why a record was not taken: the reason, and the decoding error if that was it.
Refused = Callable[[str, BaseException | None], None]


def combined_savings(records: Mapping[str, contracts.WorkerCapabilities], max_age_s: float) -> dict[str, float]:
    """Per knob, the smallest saving over the workers measured within ``max_age_s`` of the newest."""
    if not records:
        return {}
    newest = max(record.measured_ts_ms for record in records.values())
    current = [record for record in records.values() if record.measured_ts_ms >= newest - max_age_s * 1000.0]
    knobs = set.intersection(*(set(record.savings) for record in current))
    return {knob: min(record.savings[knob] for record in current) for knob in sorted(knobs)}


class CapabilityBook:
    """The newest readable, plausible record per worker, and the savings they add up to (thread-safe)."""

    def __init__(self, max_age_s: float = 3600.0) -> None:
        self._max_age_s = max_age_s
        self._records: dict[str, contracts.WorkerCapabilities] = {}
        self._lock = threading.Lock()
        #: Increases whenever a record is taken, so a reader knows to re-price.
        self.version = 0

    def apply(self, data: bytes | None, refused: Refused | None = None) -> bool:
        """Take one record; False when it is unreadable, implausible (both logged, and handed to ``refused``
        with the reason) or older than the worker's last (a compacted topic read again: not an error)."""
        try:
            record = contracts.WorkerCapabilities.decode(data)
        except contracts.ContractError as exc:
            log.warning("ignoring unreadable capabilities record: %s", exc)
            if refused is not None:
                refused(f"unreadable capabilities record: {exc}", exc)
            return False
        if any(not 0.0 <= saving < 1.0 for saving in record.savings.values()):
            reason = f"capabilities of {record.worker_id}: a saving outside [0, 1): {record.savings}"
            log.warning("ignoring %s", reason)
            if refused is not None:
                refused(reason, None)
            return False
        with self._lock:
            previous = self._records.get(record.worker_id)
            if previous is not None and previous.measured_ts_ms > record.measured_ts_ms:
                return False
            self._records[record.worker_id] = record
            self.version += 1
        return True

    def savings(self) -> dict[str, float]:
        with self._lock:
            return combined_savings(self._records, self._max_age_s)


class CapabilityFollower(CapabilityBook):
    """A :class:`CapabilityBook` fed from the beginning of the capabilities topic on a thread; records it
    refuses go to ``capabilities.dlq`` (again at each start while the compacted topic still holds them)."""

    def __init__(self, settings: Settings, max_age_s: float = 3600.0) -> None:
        super().__init__(max_age_s)
        self._stop = threading.Event()
        background: dict[str, Any] = {"fetch.wait.max.ms": settings.kafka.background_fetch_wait_max_ms}
        self._consumer = open_reader(settings, "capabilities", [settings.topics.capabilities], **background)
        self._dead_letters = ReaderDeadLetters(settings, "controller")
        self._thread = threading.Thread(target=self._run, name="capabilities", daemon=True)

    def start(self) -> CapabilityFollower:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            message = poll_record(self._consumer, 0.1, "capabilities topic")
            if message is not None:
                self.apply(message.value(), partial(self._dead_letters.publish, message))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        self._consumer.close()
        self._dead_letters.close()
