"""Per-hop hypotheses -> one running transcript per session (pure logic, injectable clock).

Every hop re-decodes a rolling window (0.96–1.28 s) that overlaps the previous one by all
but 160 ms, so the same word shows up in several hypotheses, and words near the window's
end are guesses that the next hop may revise. A word is **committed** (never changes,
never repeats) when it is stable:

* two consecutive hypotheses agree on it (same word, start within
  ``agreement_tolerance_ms``) as part of the same leading run of uncommitted words, and
  in the newer one another word follows it and it ends before the window's last
  ``end_guard_ms`` (a word cut by the window's end is often misheard the same way twice,
  e.g. the start of "open" as "oh"), or
* it ended at least ``stable_after_ms`` before the newest window's end (enough right
  context heard), or
* it starts in the first ``start_guard_ms`` of a window that moved on (from there on it
  is not heard reliably again), or
* the segment closes.

A word that starts in a window's first ``start_guard_ms`` is ignored unless one of the last
``heard_hops`` hypotheses heard it too: there the window cuts through the previous word,
and the model hears its rest as a word of its own (the end of "Sunday" as "eight"). A
real word that early in the window was heard by the hops before, whose windows reached
further back.

Everything after the committed words is the **tail**: the newest hypothesis' guess, shown
in partials and free to change. Committed words carry stream times; the stream time of
the last committed word's end is the *horizon*, and only words beyond it are ever
considered again, which is what makes a word impossible to commit twice (the last
committed word decoded again with shifted timing is recognised and skipped too).

A **final** closes a segment: at an endpoint (the newest window ends at least
``endpoint_silence_ms`` after the last word heard), at the session's final hop, or when a
session goes idle. Every session gets at least one final (empty for a silent stream), so
a client always learns that its stream was closed.
**Partials** (committed + tail) go out at most every ``emit_interval_ms`` of stream time
(160, or 320 when the controller throttles) and never closer than half that in wall time,
so a backlog drained at once does not flood clients; a partial with nothing to show is
not sent.

At-least-once delivery upstream means a hop may arrive twice (worker restart) or late
(after a newer one): a hypothesis whose ``hop_seq`` is not newer than the last one applied
is ignored; the newer window already covers its audio. A hypothesis at or before the input
offset of the last one applied (``offset``, recorded in the state) is the assembler's own
replay after a crash: its outputs went out before, so it yields nothing (status ``replayed``).
The state also keeps the offsets of the last ``RECENT_OFFSETS`` hypotheses applied: an offset inside
that span but not among them was never applied (its record skipped by the consumer and read again at
a rebalance), so it is taken like any late hop, latency event included, instead of as a replay.

A segment is closed early, its committed words as a final and its tail kept for the next,
once it holds ``max_segment_words`` committed words: long speech without a pause would
otherwise make every state write (the whole segment) grow without bound. At most
``max_sessions`` sessions are open: a new one closes the least recently heard, with its final.
Problems come back as data (:class:`Outcome`), never as exceptions. State per session is a plain JSON-able dict
(:meth:`Stitcher.snapshot` / :meth:`Stitcher.restore`) so a service can keep it durable.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pipeline import contracts
from pipeline.clock import Clock, now_ms

Record = dict[str, Any]

Status = Literal["applied", "duplicate", "stale", "closed", "invalid", "replayed"]

_PUNCTUATION = re.compile(r"[^\w']+")
#: Input offsets of applied hypotheses a session's state keeps: 32 hops are ~5 s of one session's stream,
#: longer than a replay after a crash reaches back (the commit interval, ~3 s), for ~200 bytes of state.
RECENT_OFFSETS = 32
#: Forgotten sessions whose next segment number is kept in memory (~100 bytes each). Not persisted: after an
#: assembler restart a session id heard again more than ``closed_retention_ms`` after its close starts over.
RETIRED_SESSIONS = 50_000


def _key(word: contracts.Word) -> str:
    """What two decodes of a word must share to count as the same word: case and punctuation ignored."""
    return _PUNCTUATION.sub("", word.word.lower())


def _mid_ms(word: contracts.Word) -> float:
    return (word.start_ms + word.end_ms) / 2.0


@dataclass(frozen=True)
class StitchingPolicy:
    """When words count as stable and when segments close.

    The endpoint is the mission's 600 ms; the guards and thresholds were tuned on the
    shipped model's hypotheses of held-out speech (``hopline bench stitching``).
    """

    endpoint_silence_ms: float = 600.0
    agreement_tolerance_ms: float = 200.0
    stable_after_ms: float = 640.0
    start_guard_ms: float = 160.0
    heard_hops: int = 3
    end_guard_ms: float = 320.0
    idle_timeout_ms: float = 30_000.0
    closed_retention_ms: float = 60_000.0
    min_emit_spacing: float = 0.5
    max_segment_words: int = 100
    max_sessions: int = 10_000


@dataclass
class SessionState:
    """Everything stitching remembers about one session."""

    session_id: str
    last_hop_seq: int = -1
    segment: int = 0
    committed: list[contracts.Word] = field(default_factory=list)
    tail: list[contracts.Word] = field(default_factory=list)
    horizon_ms: float = -math.inf
    last_word: contracts.Word | None = None
    last_window_end_ms: float = -math.inf
    heard: list[list[contracts.Word]] = field(default_factory=list)
    last_emit_stream_ms: float = -math.inf
    last_emit_wall_ms: float = -math.inf
    last_first_capture_ts_ms: float = 0.0
    last_seen_wall_ms: float = 0.0
    closed: bool = False
    last_offset: int = -1
    recent_offsets: list[int] = field(default_factory=list)

    def applied_before(self, offset: int) -> bool:
        """Whether the hypothesis at input ``offset`` was applied already (its outputs went out)."""
        if not 0 <= offset <= self.last_offset:
            return False
        if not self.recent_offsets or offset < self.recent_offsets[0]:
            return True  # older than the offsets kept (or a state from before they were): as before
        return offset in self.recent_offsets

    def to_record(self) -> Record:
        return {
            "session_id": self.session_id,
            "last_hop_seq": self.last_hop_seq,
            "segment": self.segment,
            "committed": [w.to_avro() for w in self.committed],
            "tail": [w.to_avro() for w in self.tail],
            "horizon_ms": _finite_or_none(self.horizon_ms),
            "last_word": self.last_word.to_avro() if self.last_word else None,
            "last_window_end_ms": _finite_or_none(self.last_window_end_ms),
            "heard": [[w.to_avro() for w in words] for words in self.heard],
            "last_emit_stream_ms": _finite_or_none(self.last_emit_stream_ms),
            "last_emit_wall_ms": _finite_or_none(self.last_emit_wall_ms),
            "last_first_capture_ts_ms": self.last_first_capture_ts_ms,
            "last_seen_wall_ms": self.last_seen_wall_ms,
            "closed": self.closed,
            "last_offset": self.last_offset,
            "recent_offsets": self.recent_offsets,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SessionState:
        return cls(
            session_id=str(record["session_id"]),
            last_hop_seq=int(record["last_hop_seq"]),
            segment=int(record["segment"]),
            committed=[contracts.Word.from_avro(w) for w in record["committed"]],
            tail=[contracts.Word.from_avro(w) for w in record["tail"]],
            horizon_ms=_none_to_minus_inf(record["horizon_ms"]),
            last_word=contracts.Word.from_avro(record["last_word"]) if record.get("last_word") else None,
            last_window_end_ms=_none_to_minus_inf(record.get("last_window_end_ms")),
            heard=[[contracts.Word.from_avro(w) for w in words] for words in record.get("heard", [])],
            last_emit_stream_ms=_none_to_minus_inf(record["last_emit_stream_ms"]),
            last_emit_wall_ms=_none_to_minus_inf(record["last_emit_wall_ms"]),
            last_first_capture_ts_ms=float(record["last_first_capture_ts_ms"]),
            last_seen_wall_ms=float(record["last_seen_wall_ms"]),
            closed=bool(record["closed"]),
            last_offset=int(record.get("last_offset", -1)),
            recent_offsets=[int(o) for o in record.get("recent_offsets", [])][-RECENT_OFFSETS:],
        )


@dataclass(frozen=True)
class Outcome:
    """What one hypothesis did: its status, the transcripts to publish, and why if nothing."""

    status: Status
    transcripts: tuple[contracts.Transcript, ...] = ()
    reason: str = ""
    dropped_words: int = 0
    evicted: tuple[str, ...] = ()

    @property
    def emitted(self) -> bool:
        return bool(self.transcripts)


@dataclass
class Expiry:
    """What :meth:`Stitcher.expire` did: finals of idle sessions, sessions closed, sessions dropped."""

    finals: list[contracts.Transcript] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)


class Stitcher:
    """All sessions' stitching state; feed it hypotheses in arrival order."""

    def __init__(self, policy: StitchingPolicy | None = None, clock: Clock = now_ms) -> None:
        self.policy = policy or StitchingPolicy()
        self._clock = clock
        self._sessions: dict[str, SessionState] = {}
        # Next segment number of sessions forgotten after their close, newest last: a session id heard again
        # (a hop redelivered after the retention, or an id reused) never numbers a final it already sent.
        self._retired: OrderedDict[str, int] = OrderedDict()

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def __len__(self) -> int:
        return len(self._sessions)

    def snapshot(self, session_id: str) -> Record | None:
        state = self._sessions.get(session_id)
        return state.to_record() if state else None

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        state = SessionState.from_record(snapshot)
        self._sessions[state.session_id] = state

    def forget(self, session_id: str | None = None) -> None:
        """Drop one session's state (or all) from memory, e.g. when its partition moves away."""
        if session_id is None:
            self._sessions.clear()
        else:
            self._sessions.pop(session_id, None)

    def accept(self, hypothesis: contracts.Hypothesis, emit_interval_ms: float, offset: int = -1) -> Outcome:
        """Apply one hypothesis; returns the partial and/or final transcripts it causes.

        ``offset``: the hypothesis' input offset (-1 when unknown), which tells a replay apart.
        Transcripts of sessions closed to make room come first, listed in ``evicted``.
        """
        session_id = hypothesis.session_id
        problem = _check(hypothesis)
        if problem:
            return Outcome("invalid", reason=problem)
        hop_seq = hypothesis.hop_seq
        state = self._sessions.get(session_id)
        evicted: list[contracts.Transcript] = []
        if state is None:
            evicted = self._make_room()
            # A session first heard at hop n > 0 (its state forgotten after closed_retention_ms, or its first
            # hops skipped) numbers its segments from n, so a late hop never reopens segment 0: a segment ends
            # at an endpoint (600 ms of silence, 4 hops) or at max_segment_words, so its earlier life had far
            # fewer than n segments and none of its finals can have that number.
            segment = max(0, hop_seq, self._retired.pop(session_id, 0))
            state = self._sessions[session_id] = SessionState(session_id, segment=segment)
        if state.applied_before(offset):
            return Outcome("replayed", reason=f"offset {offset} already applied (hop {state.last_hop_seq})")
        if state.closed:
            return Outcome("closed", reason=f"hop {hop_seq} after the session's final hop {state.last_hop_seq}")
        if hop_seq == state.last_hop_seq:
            return Outcome("duplicate", reason=f"hop {hop_seq} already applied")
        if hop_seq < state.last_hop_seq:
            return Outcome("stale", reason=f"hop {hop_seq} arrived after hop {state.last_hop_seq}")

        now = self._clock()
        state.last_hop_seq = hop_seq
        state.last_offset = max(state.last_offset, offset)
        if offset >= 0:
            state.recent_offsets = sorted([*state.recent_offsets, offset])[-RECENT_OFFSETS:]
        state.last_first_capture_ts_ms = hypothesis.first_capture_ts_ms
        state.last_seen_wall_ms = now
        window_start = hypothesis.window_start_ms
        window_end = hypothesis.window_end_ms
        words, dropped = _valid_words(hypothesis.words)

        # Tail words at the start of a window that moved on are not heard reliably again: keep them.
        if window_start > 0:
            self._commit(state, [w for w in state.tail if w.start_ms < window_start + self.policy.start_guard_ms])
        candidates = self._uncommitted(state, words, window_start)
        state.last_window_end_ms = window_end
        state.heard = [*state.heard, candidates][-self.policy.heard_hops :]
        stable = max(self._agreed(state.tail, candidates, window_end), self._old(candidates, window_end))
        self._commit(state, candidates[:stable])
        state.tail = candidates[stable:]

        transcripts = list(evicted)
        if len(state.committed) >= self.policy.max_segment_words and not hypothesis.is_final:
            transcripts.append(self._close(state, now, state.last_emit_stream_ms, keep_tail=True))
        if hypothesis.is_final:
            if self._has_words(state) or state.segment == 0:
                transcripts.append(self._close(state, now, window_end))
            state.closed = True
        elif self._has_words(state) and window_end - self._speech_end(state) >= self.policy.endpoint_silence_ms:
            transcripts.append(self._close(state, now, window_end))
        elif self._partial_due(state, now, window_end, emit_interval_ms) and self._has_words(state):
            transcripts.append(self._transcript(state, "partial", now))
            state.last_emit_stream_ms = window_end
            state.last_emit_wall_ms = now
        return Outcome(
            "applied",
            tuple(transcripts),
            dropped_words=dropped,
            evicted=tuple(t.session_id for t in evicted),
        )

    def _make_room(self) -> list[contracts.Transcript]:
        """Close the least recently heard open session if ``max_sessions`` are open; its final."""
        open_sessions = [state for state in self._sessions.values() if not state.closed]
        if len(open_sessions) < self.policy.max_sessions:
            return []
        oldest = min(open_sessions, key=lambda state: state.last_seen_wall_ms)
        oldest.closed = True
        if self._has_words(oldest) or oldest.segment == 0:
            return [self._close(oldest, self._clock(), oldest.last_emit_stream_ms)]
        return []

    def session_ids(self) -> list[str]:
        """The sessions in memory, open or closed."""
        return list(self._sessions)

    def expire(self) -> Expiry:
        """Close sessions idle for ``idle_timeout_ms`` (their final) and forget long-closed ones.

        A closed session is remembered for ``closed_retention_ms`` after it closed, so that late
        duplicates of its hops are still recognised and ignored instead of opening segment 0 again.
        """
        now = self._clock()
        expiry = Expiry()
        for session_id, state in list(self._sessions.items()):
            idle = now - state.last_seen_wall_ms
            if state.closed:
                if idle >= self.policy.closed_retention_ms:
                    del self._sessions[session_id]
                    self._retire(session_id, state.segment)
                    expiry.forgotten.append(session_id)
            elif idle >= self.policy.idle_timeout_ms:
                if self._has_words(state) or state.segment == 0:
                    expiry.finals.append(self._close(state, now, state.last_emit_stream_ms))
                state.closed = True
                state.last_seen_wall_ms = now  # retention counts from the close: a late hop stays a late hop
                expiry.closed.append(session_id)
        return expiry

    def _retire(self, session_id: str, next_segment: int) -> None:
        """Remember a forgotten session's next segment number, for the last ``RETIRED_SESSIONS`` of them."""
        self._retired[session_id] = next_segment
        self._retired.move_to_end(session_id)
        while len(self._retired) > RETIRED_SESSIONS:
            self._retired.popitem(last=False)

    def _uncommitted(
        self, state: SessionState, words: list[contracts.Word], window_start: float
    ) -> list[contracts.Word]:
        """The hypothesis' words beyond the horizon, minus fragments cut by the window's start."""
        last = state.last_word
        fresh = []
        for word in words:
            if _mid_ms(word) <= state.horizon_ms:
                continue
            if last is not None and word.start_ms < last.end_ms and _key(word) == _key(last):
                continue  # the last committed word again (maybe of the closed segment), with shifted timing
            if self._rest_of_cut_word(state, word, window_start):
                continue  # the model hearing the rest of a word the window cut as a word of its own
            fresh.append(word)
        return fresh

    def _rest_of_cut_word(self, state: SessionState, word: contracts.Word, window_start: float) -> bool:
        """A word in the window's first ``start_guard_ms`` that the previous window covered
        but none of the last ``heard_hops`` hypotheses heard there."""
        if window_start <= 0 or word.start_ms >= window_start + self.policy.start_guard_ms:
            return False
        if word.start_ms >= state.last_window_end_ms:
            return False  # hops were skipped: nothing to compare with
        tolerance = self.policy.agreement_tolerance_ms
        return not any(
            _key(heard) == _key(word) and abs(heard.start_ms - word.start_ms) <= tolerance
            for hypothesis in state.heard
            for heard in hypothesis
        )

    def _agreed(self, previous: list[contracts.Word], current: list[contracts.Word], window_end: float) -> int:
        """Length of the leading run the previous and current hypotheses agree on.

        The window's last word, or one reaching into its last ``end_guard_ms``, may be cut
        off, and a cut word can be misheard the same way twice, so it never counts as agreed.
        """
        count = 0
        for index, (before, now) in enumerate(zip(previous, current, strict=False)):
            if _key(before) != _key(now) or abs(before.start_ms - now.start_ms) > self.policy.agreement_tolerance_ms:
                break
            if index == len(current) - 1 or now.end_ms > window_end - self.policy.end_guard_ms:
                break
            count += 1
        return count

    def _old(self, words: list[contracts.Word], window_end: float) -> int:
        """Length of the leading run that ended long enough before the window's end."""
        count = 0
        for word in words:
            if word.end_ms > window_end - self.policy.stable_after_ms:
                break
            count += 1
        return count

    @staticmethod
    def _commit(state: SessionState, words: Iterable[contracts.Word]) -> None:
        for word in words:
            state.committed.append(word)
            state.last_word = word
            state.horizon_ms = max(state.horizon_ms, word.end_ms)
        state.tail = [w for w in state.tail if _mid_ms(w) > state.horizon_ms]

    @staticmethod
    def _speech_end(state: SessionState) -> float:
        """Stream time the newest evidence says speech last ended."""
        return max(state.horizon_ms, state.tail[-1].end_ms) if state.tail else state.horizon_ms

    @staticmethod
    def _has_words(state: SessionState) -> bool:
        return bool(state.committed or state.tail)

    def _partial_due(self, state: SessionState, now: float, window_end: float, emit_interval_ms: float) -> bool:
        stream_due = window_end - state.last_emit_stream_ms >= emit_interval_ms - 1.0
        wall_due = now - state.last_emit_wall_ms >= emit_interval_ms * self.policy.min_emit_spacing
        return stream_due and wall_due

    def _close(
        self, state: SessionState, now: float, stream_ms: float, keep_tail: bool = False
    ) -> contracts.Transcript:
        """Commit the tail (or, with ``keep_tail``, leave it to the next segment), emit the
        segment's final, start the next segment."""
        tail = state.tail
        if keep_tail:
            state.tail = []
        else:
            self._commit(state, tail)
        final = self._transcript(state, "final", now)
        state.segment += 1
        state.committed = []
        state.tail = tail if keep_tail else []
        state.last_emit_stream_ms = stream_ms
        state.last_emit_wall_ms = now
        return final

    @staticmethod
    def _transcript(state: SessionState, kind: str, now: float) -> contracts.Transcript:
        """The session's transcript; ``published_ts_ms`` is ``now`` until the service stamps the send."""
        committed_text = " ".join(w.word for w in state.committed)
        tail_text = " ".join(w.word for w in state.tail)
        return contracts.Transcript(
            session_id=state.session_id,
            kind=kind,
            segment=state.segment,
            text=" ".join(t for t in (committed_text, tail_text) if t),
            committed_text=committed_text,
            tail_text=tail_text,
            words=tuple(state.committed),
            hop_seq=state.last_hop_seq,
            first_capture_ts_ms=state.last_first_capture_ts_ms,
            published_ts_ms=now,
        )


def _check(hypothesis: contracts.Hypothesis) -> str:
    """Why a hypothesis cannot be stitched, or '' when it can."""
    if not hypothesis.session_id:
        return "no session_id"
    window_start, window_end = hypothesis.window_start_ms, hypothesis.window_end_ms
    if not (math.isfinite(window_start) and math.isfinite(window_end)) or window_end < window_start:
        return f"bad window [{window_start}, {window_end}] ms"
    return ""


def _valid_words(heard: Iterable[contracts.Word]) -> tuple[list[contracts.Word], int]:
    """Usable words in time order, and how many were dropped (empty, bad or reversed times)."""
    words = []
    dropped = 0
    for word in heard:
        if word.word != word.word.strip():
            word = replace(word, word=word.word.strip())
        times_ok = math.isfinite(word.start_ms) and math.isfinite(word.end_ms) and word.start_ms <= word.end_ms
        if _key(word) and times_ok:
            words.append(word)
        else:
            dropped += 1
    words.sort(key=lambda w: (w.start_ms, w.end_ms))
    return words, dropped


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _none_to_minus_inf(value: float | None) -> float:
    return -math.inf if value is None else float(value)
