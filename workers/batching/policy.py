"""The micro-batch policy: batching protects p95, it is not for throughput.

Four rules, all in :class:`BatchPolicy` (plain Python, clock injected, no threads):

* A batch closes when it is full (``max_batch_size`` sessions) or when its FIRST hop has
  waited ``max_latency_s``, whichever comes first. That bounds ``batch_wait``.
* It also closes as soon as no hop that could join it is coming before its deadline. A
  session sends one hop per ``hop_period_s`` (160 ms) and a batch takes one hop per session,
  so a session outside the batch can only join if its next hop is due (its last hop +
  the hop period − ``arrival_slack_s`` for jitter) before the deadline. Waiting for the cap
  when no such hop is due only added the full cap to every hop. A session is active while
  its latest hop arrived within ``active_horizon_s``; its final hop ends it at once.
* Exactly one batch is in flight (a single GPU stream). While it runs, the next batch keeps
  filling; if its deadline passes meanwhile, it is closed at the deadline and the rest of
  its wait is for the GPU, i.e. ``queue_wait``, not ``batch_wait``. A hop that joins a batch
  after that logical close had no batching delay at all: its close time is its arrival.
* A batch never holds two hops of one session. With coalescing on, a waiting non-final hop
  is skipped as soon as a newer hop of its session waits too, but only while the newer hop's
  rolling window still holds the audio of every hop it then stands for (``cover_hops``: the
  window in hops). After a backlog (a broker outage, say) a chain of skips would otherwise run
  the newest hop only and never recognise the audio before its window: words lost. Final hops
  are never skipped.

:class:`MicroBatcher` wraps the policy in the sherpa-onnx streaming-server shape: callers
``submit`` items and get futures; one inference thread takes closed batches, runs them
and resolves the futures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pipeline.clock import Clock

T = TypeVar("T")
R = TypeVar("R")


class InferenceStride:
    """Which hops the worker runs at an inference stride n (1 = every hop).

    At stride n a session's non-final hop runs only every n-th time: its partial goes out only that
    often anyway (emit 320 ms = two hops), and the next rolling window covers the audio of the hops
    in between. Sessions get their slot round robin as they first appear, so each hop period
    carries 1/n of them and batches stay even (10 sessions at stride 2: 5 + 5, where a hash split
    gave 6 + 4 and the 6 set the pace). Final hops always run: they close the session.
    """

    def __init__(self) -> None:
        self._slots: dict[str, int] = {}
        self._next_slot = 0
        self._strided: dict[str, int] = {}

    def runs(self, session_id: str, hop_seq: int, is_final: bool, stride: int) -> bool:
        if is_final:
            self._slots.pop(session_id, None)
            return True
        slot = self._slots.get(session_id)
        if slot is None:
            slot = self._slots[session_id] = self._next_slot
            self._next_slot += 1
        if stride <= 1 or (hop_seq + slot) % stride == 0:
            return True
        self._strided[session_id] = self._strided.get(session_id, 0) + 1
        return False

    def take_strided(self, session_id: str) -> int:
        """Hops of the session not run since the last call: the next hop run accounts for them."""
        return self._strided.pop(session_id, 0)

    def carry(self, session_id: str, strided: int) -> None:
        """Give back the count of a hop that will not be run after all (skipped as stale) to the next one."""
        if strided and session_id in self._slots:
            self._strided[session_id] = self._strided.get(session_id, 0) + strided

    @property
    def sessions(self) -> int:
        """Sessions holding a slot (forgotten at their final hop)."""
        return len(self._slots)


class Superseded(Exception):
    """The hop was skipped: a newer hop of its session was waiting and covers its audio."""


@dataclass
class Pending(Generic[T]):
    """One hop waiting for a batch, with what the policy needs to know about it."""

    session_id: str
    seq: int
    is_final: bool
    item: T
    received_at: float | None = None
    skipped_before: int = 0
    #: The oldest hop whose audio this one stands for (itself, or hops it superseded); None = its own seq.
    covers_from: int | None = None

    @property
    def first_covered(self) -> int:
        return self.seq if self.covers_from is None else self.covers_from

    future: Future[Any] = field(default_factory=Future, repr=False)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One hop of a closed batch."""

    item: T
    session_id: str
    seq: int
    received_at: float
    closed_at: float
    skipped_before: int
    future: Future[Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Batch(Generic[T]):
    """A closed batch: at most one hop per session, oldest arrivals first."""

    entries: tuple[Entry[T], ...]
    closed_at: float
    taken_at: float

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def items(self) -> list[T]:
        return [entry.item for entry in self.entries]


def _received(pending: Pending[T]) -> float:
    if pending.received_at is None:
        raise ValueError("hop was never offered")
    return pending.received_at


class BatchPolicy(Generic[T]):
    """Decides what waits, what is skipped, and when a batch closes. Not thread-safe on its own."""

    def __init__(
        self,
        max_batch_size: int,
        max_latency_s: float,
        coalesce_stale: bool = True,
        clock: Clock = time.monotonic,
        active_horizon_s: float = 0.32,
        hop_period_s: float = 0.16,
        arrival_slack_s: float = 0.02,
        cover_hops: int | None = None,
    ) -> None:
        """``active_horizon_s`` defaults to two 160 ms hop periods: one late hop does not end a session.

        ``hop_period_s`` 0 turns the next-hop prediction off: every active session may still join.
        """
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_latency_s < 0:
            raise ValueError("max_latency_s must not be negative")
        if active_horizon_s < 0:
            raise ValueError("active_horizon_s must not be negative")
        if hop_period_s < 0 or arrival_slack_s < 0:
            raise ValueError("hop_period_s and arrival_slack_s must not be negative")
        self.max_batch_size = max_batch_size
        self.max_latency_s = max_latency_s
        self.coalesce_stale = coalesce_stale
        self.clock = clock
        self.active_horizon_s = active_horizon_s
        self.hop_period_s = hop_period_s
        self.arrival_slack_s = arrival_slack_s
        self.cover_hops = cover_hops
        self._waiting: list[Pending[T]] = []
        self._last_seen: dict[str, float] = {}
        self._in_flight: Batch[T] | None = None
        self.skipped = 0

    @property
    def depth(self) -> int:
        """Hops waiting for a batch (the in-flight batch not included)."""
        return len(self._waiting)

    @property
    def in_flight(self) -> Batch[T] | None:
        return self._in_flight

    def offer(self, pending: Pending[T]) -> list[Pending[T]]:
        """Queue a hop (stamped now unless it carries its receipt time); returns the hops it made superseded."""
        if pending.received_at is None:
            pending.received_at = self.clock()
        self._track_activity(pending)
        if not self.coalesce_stale:
            self._waiting.append(pending)
            return []
        same_session = [p for p in self._waiting if p.session_id == pending.session_id]
        newest = max(same_session, key=lambda p: p.seq, default=None)
        if (
            newest is not None
            and newest.seq >= pending.seq
            and not pending.is_final
            and self._covers(newest.seq, pending.first_covered)
        ):
            newest.skipped_before += 1 + pending.skipped_before
            newest.covers_from = min(newest.first_covered, pending.first_covered)
            self.skipped += 1
            return [pending]
        superseded = [
            p
            for p in same_session
            if not p.is_final and p.seq < pending.seq and self._covers(pending.seq, p.first_covered)
        ]
        for old in superseded:
            self._waiting.remove(old)
            pending.skipped_before += 1 + old.skipped_before
            pending.covers_from = min(pending.first_covered, old.first_covered)
        self.skipped += len(superseded)
        self._waiting.append(pending)
        return superseded

    def _covers(self, seq: int, first_covered: int) -> bool:
        """Whether hop ``seq``'s rolling window still holds the audio of hop ``first_covered``."""
        return self.cover_hops is None or seq - first_covered < self.cover_hops

    def _track_activity(self, pending: Pending[T]) -> None:
        """Note when the hop's session was last heard from; forget sessions that can no longer matter.

        A session whose activity ended before every waiting hop arrived cannot hold any
        batch open, now or later (hops arrive in time order).
        """
        received = _received(pending)
        if pending.is_final:
            self._last_seen.pop(pending.session_id, None)
        else:
            self._last_seen[pending.session_id] = max(received, self._last_seen.get(pending.session_id, received))
        oldest = min((_received(p) for p in self._waiting), default=received)
        forget_before = min(oldest, received) - self.active_horizon_s
        self._last_seen = {s: seen for s, seen in self._last_seen.items() if seen >= forget_before}

    def _candidates(self) -> list[Pending[T]]:
        """The next batch if it closed now: the oldest waiting hop of each session, in arrival order."""
        chosen: list[Pending[T]] = []
        sessions: set[str] = set()
        for pending in self._waiting:
            if pending.session_id not in sessions:
                sessions.add(pending.session_id)
                chosen.append(pending)
                if len(chosen) == self.max_batch_size:
                    break
        return chosen

    def _close_time(self, chosen: Sequence[Pending[T]]) -> float:
        """When the forming batch closes by policy: its first hop's deadline, or once no other hop can join it.

        No other hop can join once the batch is full, or once every active session outside it
        either has gone silent or has its next hop due only after the deadline.
        """
        deadline = _received(chosen[0]) + self.max_latency_s
        complete = max(_received(p) for p in chosen)
        if len(chosen) < self.max_batch_size:
            in_batch = {p.session_id for p in chosen}
            earliest_gap = max(0.0, self.hop_period_s - self.arrival_slack_s)
            silent_at = [
                seen + self.active_horizon_s
                for s, seen in self._last_seen.items()
                if s not in in_batch and seen + earliest_gap <= deadline
            ]
            complete = max([complete, *silent_at])
        return min(deadline, complete)

    def seconds_until_ready(self) -> float | None:
        """How long until :meth:`take` can return a batch; None when nothing waits or one is in flight."""
        if self._in_flight is not None or not self._waiting:
            return None
        return max(0.0, self._close_time(self._candidates()) - self.clock())

    def take(self, force: bool = False) -> Batch[T] | None:
        """Close and hand out the next batch if it is due (or ``force``) and the GPU is free."""
        if self._in_flight is not None or not self._waiting:
            return None
        now = self.clock()
        chosen = self._candidates()
        close_time = self._close_time(chosen)
        if now < close_time and not force:
            return None
        close_time = min(close_time, now)
        for pending in chosen:
            self._waiting.remove(pending)
        entries = tuple(
            Entry(
                item=p.item,
                session_id=p.session_id,
                seq=p.seq,
                received_at=_received(p),
                closed_at=max(_received(p), close_time),
                skipped_before=p.skipped_before,
                future=p.future,
            )
            for p in chosen
        )
        self._in_flight = Batch(entries=entries, closed_at=close_time, taken_at=now)
        return self._in_flight

    def finish(self, batch: Batch[T]) -> None:
        """The in-flight batch is done; the next one may start."""
        if batch is not self._in_flight:
            raise ValueError("finish() of a batch that is not in flight")
        self._in_flight = None


class MicroBatcher(Generic[T, R]):
    """The policy behind a lock, fed by ``submit`` from any thread, drained by one inference thread.

    ``run_batch`` gets each closed batch and returns one result per entry, in order; each
    entry's future then resolves with its result (callbacks run on the inference thread,
    right after inference). A skipped hop's future fails with :class:`Superseded` at once;
    if ``run_batch`` raises, every future of that batch fails with the error.
    """

    def __init__(
        self, policy: BatchPolicy[T], run_batch: Callable[[Batch[T]], Sequence[R]], name: str = "inference"
    ) -> None:
        self._policy = policy
        self._run_batch = run_batch
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> MicroBatcher[T, R]:
        self._thread.start()
        return self

    @property
    def depth(self) -> int:
        with self._cond:
            return self._policy.depth

    def submit(self, session_id: str, seq: int, is_final: bool, item: T, received_at: float | None = None) -> Future[R]:
        """Queue one hop; ``received_at`` (policy clock) is when it really arrived, if earlier than now."""
        pending: Pending[T] = Pending(
            session_id=session_id, seq=seq, is_final=is_final, item=item, received_at=received_at
        )
        with self._cond:
            if self._closing:
                raise RuntimeError("batcher is closed")
            skipped = self._policy.offer(pending)
            self._cond.notify_all()
        for old in skipped:
            old.future.set_exception(Superseded(f"{old.session_id}#{old.seq}"))
        return pending.future

    def _next_batch(self) -> Batch[T] | None:
        with self._cond:
            while True:
                if self._closing and self._policy.depth == 0 and self._policy.in_flight is None:
                    return None
                batch = self._policy.take(force=self._closing)
                if batch is not None:
                    return batch
                self._cond.wait(self._policy.seconds_until_ready())

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                results = self._run_batch(batch)
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} hops")
            except Exception as exc:
                for entry in batch.entries:
                    entry.future.set_exception(exc)
            else:
                for entry, result in zip(batch.entries, results, strict=True):
                    entry.future.set_result(result)
            finally:
                with self._cond:
                    self._policy.finish(batch)
                    self._cond.notify_all()

    def close(self, timeout_s: float | None = None) -> None:
        """Stop taking hops, run everything already queued (no deadline waits), and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
