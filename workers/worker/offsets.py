"""At-least-once bookkeeping: which consumed offsets may be committed.

A hop's offset is *done* when its outcome is durable: its hypothesis (or its dead letter)
was acknowledged by the broker, or it was skipped as superseded. A partition's commit
position is the first offset that is not done yet, so a crash replays every hop whose
outcome might be lost and nothing else is ever committed past it.

Skipped hops are done at once, and that is still safe: the hop that superseded a skipped
one is of the same session, so it sits on the same partition, is registered already and
is not done yet; the commit position cannot pass it until its own hypothesis is acked.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass
class _PartitionState:
    pending: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    position: int | None = None
    committed: int | None = None


class OffsetTracker:
    """Per-partition contiguous completion; thread-safe (delivery reports and skips come from two threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._partitions: dict[tuple[str, int], _PartitionState] = {}

    def register(self, topic: str, partition: int, offset: int) -> None:
        """A message was consumed. An offset at or below the last one means the consumer was rewound
        (offset reset, replay): the partition starts over from there, since everything after it comes again."""
        with self._lock:
            state = self._partitions.setdefault((topic, partition), _PartitionState())
            if state.pending and offset <= state.pending[-1]:
                state = self._partitions[(topic, partition)] = _PartitionState(committed=state.committed)
            state.pending.append(offset)

    def done(self, topic: str, partition: int, offset: int) -> None:
        """The message's outcome is durable. Unknown partitions (revoked meanwhile) are ignored."""
        with self._lock:
            state = self._partitions.get((topic, partition))
            if state is None:
                return
            state.done.add(offset)
            while state.pending and state.pending[0] in state.done:
                finished = state.pending.popleft()
                state.done.discard(finished)
                state.position = finished + 1

    def outstanding(self, topic: str, partition: int) -> int:
        """Consumed but not yet done."""
        with self._lock:
            state = self._partitions.get((topic, partition))
            return len(state.pending) if state else 0

    def to_commit(self) -> dict[tuple[str, int], int]:
        """Positions that advanced since the last :meth:`committed` call: (topic, partition) -> next offset."""
        with self._lock:
            return {
                key: state.position
                for key, state in self._partitions.items()
                if state.position is not None and state.position != state.committed
            }

    def committed(self, positions: dict[tuple[str, int], int]) -> None:
        with self._lock:
            for key, position in positions.items():
                state = self._partitions.get(key)
                if state is not None:
                    state.committed = position

    def forget(self, topic: str, partition: int) -> None:
        """The partition was revoked: whatever is still in flight for it belongs to its next owner."""
        with self._lock:
            self._partitions.pop((topic, partition), None)
