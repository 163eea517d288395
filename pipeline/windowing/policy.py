"""Stage A -> stage B: 20 ms frames in, one hop of rolling-window audio every 160 ms out.

Pure logic (no Kafka, injectable clock) so every rule is unit-tested:

* Frames are validated first; an invalid frame (bad rate, wrong payload size for its
  codec/rate, codec change mid-session, negative or absurd seq, frame after the session's end)
  comes back as a :class:`Rejection` with a one-line reason, never as an exception.
* Per session, frames are put in ``seq`` order. A duplicate (seq already taken) is dropped
  and counted. A frame that arrives early is held until the missing ones come; a missing
  frame is given up once the newest held frame is more than ``reorder_tolerance_frames``
  ahead of it, and replaced by 20 ms of silence (counted as a gap). A frame that arrives
  after it was given up is dropped (``late``).
* Audio is decoded to 16 kHz PCM16 (G.711 tables, :class:`pipeline.audio.Upsampler2x` for
  8 kHz, per-session state so hop boundaries are seamless). Every frame, real or
  gap-filled, adds exactly one frame of model-rate samples, so stream sample offsets are
  ``(seq - first_seq) * samples_per_frame``.
* Every ``frames_per_hop`` frames a :class:`Hop` is cut with the last ``window_secs`` of
  audio (shorter at the start). ``window_secs`` and the control level are passed in per
  frame (from the control topic's knobs). ``first_capture_ts_ms`` is the capture time of
  the hop's first frame; ``ready_ts_ms`` = the last frame's capture time + 20 ms.
* The end-of-stream frame flushes a final (possibly short) hop at once, giving up any
  frame still missing before it. A session with no frame for ``idle_timeout_s`` is expired
  with a final hop.

State survives restarts through :meth:`SessionWindow.snapshot` (small metadata written on
every frame) plus the per-frame audio slots in :attr:`Outcome.appended`; see
``pipeline.windower`` for how they are stored.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from pipeline import audio, contracts
from pipeline.clock import Clock, now_ms
from pipeline.settings import AudioSettings

#: A seq more than this far ahead of the next expected one is rejected, not gap-filled.
MAX_SEQ_JUMP_S = 60.0


@dataclass(frozen=True)
class Frame:
    """What the windowing needs of an ``AudioFrame`` record (see schemas/audio_frame.avsc)."""

    session_id: str
    seq: int
    capture_ts_ms: float
    codec: str
    sample_rate: int
    payload: bytes
    end_of_stream: bool = False

    @classmethod
    def from_record(cls, record: contracts.AudioFrame) -> Frame:
        return cls(
            record.session_id,
            record.seq,
            record.capture_ts_ms,
            record.codec,
            record.sample_rate,
            record.payload,
            record.end_of_stream,
        )


@dataclass(frozen=True)
class Rejection:
    session_id: str
    seq: int
    reason: str


@dataclass(frozen=True)
class Hop:
    """One inference trigger; :meth:`to_record` gives the ``Hop`` contract record."""

    session_id: str
    hop_seq: int
    first_capture_ts_ms: float
    ready_ts_ms: float
    audio: bytes
    window_start_sample: int
    window_secs: float
    gap_frames: int
    duplicate_frames: int
    is_final: bool
    control_level: int

    def to_record(self, published_ts_ms: float) -> contracts.Hop:
        return contracts.Hop(
            session_id=self.session_id,
            hop_seq=self.hop_seq,
            first_capture_ts_ms=self.first_capture_ts_ms,
            ready_ts_ms=self.ready_ts_ms,
            published_ts_ms=published_ts_ms,
            sample_rate=audio.MODEL_RATE,
            audio=self.audio,
            window_start_sample=self.window_start_sample,
            window_secs=self.window_secs,
            gap_frames=self.gap_frames,
            duplicate_frames=self.duplicate_frames,
            is_final=self.is_final,
            control_level=self.control_level,
        )


@dataclass
class Outcome:
    """What one frame (or an expiry) did to a session."""

    hops: list[Hop] = field(default_factory=list)
    rejection: Rejection | None = None
    #: (seq, model-rate PCM16 bytes) of every frame added to the stream, gap-filled ones included.
    appended: list[tuple[int, bytes]] = field(default_factory=list)
    duplicate: bool = False
    late: bool = False
    gaps: int = 0
    closed: bool = False


@dataclass(frozen=True)
class WindowShape:
    """The fixed numbers of the windowing, derived from :class:`AudioSettings`."""

    frame_ms: int
    frames_per_hop: int
    samples_per_frame: int
    max_window_secs: float
    reorder_tolerance_frames: int
    idle_timeout_ms: float

    @classmethod
    def from_settings(cls, settings: AudioSettings) -> WindowShape:
        return cls(
            frame_ms=settings.frame_ms,
            frames_per_hop=settings.frames_per_hop,
            samples_per_frame=audio.MODEL_RATE * settings.frame_ms // 1000,
            max_window_secs=settings.window_secs,
            reorder_tolerance_frames=settings.reorder_tolerance_frames,
            idle_timeout_ms=settings.idle_timeout_s * 1000.0,
        )

    @property
    def ring_frames(self) -> int:
        """Frames of audio a session keeps: the largest window."""
        return math.ceil(self.max_window_secs * 1000 / self.frame_ms)

    @property
    def max_seq_jump(self) -> int:
        return int(MAX_SEQ_JUMP_S * 1000 / self.frame_ms)

    def validate(self, frame: Frame) -> str | None:
        """The reason ``frame`` is invalid on its own, or None."""
        problem = audio.format_error(frame.codec, frame.sample_rate)
        if problem is not None:
            return problem
        if frame.seq < 0:
            return f"negative seq {frame.seq}"
        expected = audio.frame_bytes(frame.codec, frame.sample_rate, self.frame_ms)
        if len(frame.payload) != expected and not (frame.end_of_stream and not frame.payload):
            return (
                f"payload is {len(frame.payload)} bytes, one {self.frame_ms} ms frame of "
                f"{frame.codec} at {frame.sample_rate} Hz is {expected}"
            )
        return None


class SessionWindow:
    """One session's windowing state machine (see the module docstring for the rules)."""

    def __init__(self, session_id: str, codec: str, sample_rate: int, shape: WindowShape, first_seq: int = 0) -> None:
        self.session_id = session_id
        self.codec = codec
        self.sample_rate = sample_rate
        self.shape = shape
        self.first_seq = first_seq
        self.next_seq = first_seq
        self.hop_seq = 0
        self.pending: dict[int, Frame] = {}
        self.recent_gaps: list[int] = []
        self.end_seq: int | None = None
        self.closed = False
        self.last_seen_ms = 0.0
        self.partition = 0
        self.last_capture_ts_ms: float | None = None
        self.hop_frames = 0
        self.hop_first_capture_ts_ms = 0.0
        self.hop_gaps = 0
        self.hop_duplicates = 0
        self.audio_frames = 0
        self._audio = bytearray()
        self._upsampler = audio.Upsampler2x() if sample_rate == 8000 else None

    # -- frames in ------------------------------------------------------------------------

    def accept(self, frame: Frame, window_secs: float, control_level: int) -> Outcome:
        outcome = Outcome()
        if frame.codec != self.codec or frame.sample_rate != self.sample_rate:
            outcome.rejection = Rejection(
                self.session_id,
                frame.seq,
                f"codec/rate changed mid-session: {frame.codec}/{frame.sample_rate}, "
                f"session is {self.codec}/{self.sample_rate}",
            )
            return outcome
        if self.closed:
            if self.end_seq is not None and frame.seq <= self.end_seq:
                outcome.duplicate = True
            else:
                outcome.rejection = Rejection(self.session_id, frame.seq, "frame after the session's end of stream")
            return outcome
        if frame.seq - self.next_seq > self.shape.max_seq_jump:
            outcome.rejection = Rejection(
                self.session_id, frame.seq, f"seq {frame.seq} jumps more than {MAX_SEQ_JUMP_S:.0f} s ahead"
            )
            return outcome
        if frame.seq < self.next_seq or frame.seq in self.pending:
            if frame.seq in self.recent_gaps:
                outcome.late = True
            else:
                outcome.duplicate = True
                self.hop_duplicates += 1
            return outcome
        if self.end_seq is not None and frame.seq > self.end_seq:
            outcome.rejection = Rejection(self.session_id, frame.seq, "frame after the session's end of stream")
            return outcome
        self.pending[frame.seq] = frame
        if frame.end_of_stream:
            self.end_seq = frame.seq
        self._advance(outcome, window_secs, control_level, flush=frame.end_of_stream)
        return outcome

    def expire(self, window_secs: float, control_level: int) -> Outcome:
        """Idle: give up what is missing, emit the final hop, close."""
        outcome = Outcome()
        if not self.closed:
            self._advance(outcome, window_secs, control_level, flush=True)
            if not self.closed:
                self._cut_hop(outcome, window_secs, control_level, final=True)
        return outcome

    def _advance(self, outcome: Outcome, window_secs: float, control_level: int, flush: bool) -> None:
        """Append every frame that is in order now, filling gaps that are past tolerance."""
        while self.pending:
            if self.next_seq in self.pending:
                frame = self.pending.pop(self.next_seq)
                self._append(outcome, frame.seq, self._decode(frame.payload), frame.capture_ts_ms)
            elif flush or max(self.pending) - self.next_seq > self.shape.reorder_tolerance_frames:
                self._fill_gap(outcome)
            else:
                break
            if self.end_seq is not None and self.next_seq > self.end_seq:
                self._cut_hop(outcome, window_secs, control_level, final=True)
                return
            if self.hop_frames == self.shape.frames_per_hop:
                self._cut_hop(outcome, window_secs, control_level, final=False)

    def _decode(self, payload: bytes) -> bytes:
        if not payload:
            return b""
        samples = audio.decode(payload, self.codec)
        if self._upsampler is not None:
            samples = self._upsampler.process(samples)
        return audio.pcm16_to_bytes(samples)

    def _fill_gap(self, outcome: Outcome) -> None:
        seq = self.next_seq
        capture = (self.last_capture_ts_ms + self.shape.frame_ms) if self.last_capture_ts_ms is not None else 0.0
        silence = np.zeros(self.shape.samples_per_frame * self.sample_rate // audio.MODEL_RATE, dtype=np.int16)
        pcm = audio.pcm16_to_bytes(self._upsampler.process(silence) if self._upsampler else silence)
        self.recent_gaps = [*self.recent_gaps[-(self.shape.ring_frames - 1) :], seq]
        self.hop_gaps += 1
        outcome.gaps += 1
        self._append(outcome, seq, pcm, capture)

    def _append(self, outcome: Outcome, seq: int, pcm: bytes, capture_ts_ms: float) -> None:
        if pcm:
            if self.hop_frames == 0:
                self.hop_first_capture_ts_ms = capture_ts_ms
            self.hop_frames += 1
            self.audio_frames += 1
            self.last_capture_ts_ms = capture_ts_ms
            self._audio += pcm
            if len(self._audio) > 2 * self._ring_bytes:
                del self._audio[: len(self._audio) - self._ring_bytes]
            outcome.appended.append((seq, pcm))
        self.next_seq = seq + 1

    @property
    def _ring_bytes(self) -> int:
        return self.shape.ring_frames * self.shape.samples_per_frame * 2

    def _cut_hop(self, outcome: Outcome, window_secs: float, control_level: int, final: bool) -> None:
        window_secs = min(max(window_secs, 0.0), self.shape.max_window_secs)
        window_bytes = min(round(window_secs * audio.MODEL_RATE) * 2, len(self._audio))
        last_capture = self.last_capture_ts_ms if self.last_capture_ts_ms is not None else 0.0
        outcome.hops.append(
            Hop(
                session_id=self.session_id,
                hop_seq=self.hop_seq,
                first_capture_ts_ms=self.hop_first_capture_ts_ms if self.hop_frames else last_capture,
                ready_ts_ms=last_capture + self.shape.frame_ms,
                audio=bytes(self._audio[len(self._audio) - window_bytes :]),
                window_start_sample=self.audio_frames * self.shape.samples_per_frame - window_bytes // 2,
                window_secs=window_secs,
                gap_frames=self.hop_gaps,
                duplicate_frames=self.hop_duplicates,
                is_final=final,
                control_level=control_level,
            )
        )
        self.hop_seq += 1
        self.hop_frames = 0
        self.hop_gaps = 0
        self.hop_duplicates = 0
        if final:
            self.closed = True
            self.pending.clear()
            outcome.closed = True

    # -- persistence ----------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything but the audio (which is kept per frame): a few hundred bytes, JSON."""
        state = {
            "codec": self.codec,
            "sample_rate": self.sample_rate,
            "first_seq": self.first_seq,
            "next_seq": self.next_seq,
            "hop_seq": self.hop_seq,
            "end_seq": self.end_seq,
            "closed": self.closed,
            "last_seen_ms": self.last_seen_ms,
            "partition": self.partition,
            "last_capture_ts_ms": self.last_capture_ts_ms,
            "hop_frames": self.hop_frames,
            "hop_first_capture_ts_ms": self.hop_first_capture_ts_ms,
            "hop_gaps": self.hop_gaps,
            "hop_duplicates": self.hop_duplicates,
            "audio_frames": self.audio_frames,
            "recent_gaps": self.recent_gaps,
            "upsampler": self._upsampler.history.tolist() if self._upsampler else None,
            "pending": [
                [f.seq, f.capture_ts_ms, f.end_of_stream, base64.b64encode(f.payload).decode()]
                for f in self.pending.values()
            ],
        }
        return json.dumps(state, separators=(",", ":")).encode()

    @staticmethod
    def frames_needed(snapshot: bytes, shape: WindowShape) -> range:
        """The seqs whose audio :meth:`restore` needs with this snapshot: the last window's worth."""
        state = json.loads(snapshot)
        return range(max(state["next_seq"] - shape.ring_frames, state["first_seq"]), state["next_seq"])

    @classmethod
    def restore(
        cls, session_id: str, snapshot: bytes, frames: Mapping[int, bytes], shape: WindowShape
    ) -> SessionWindow:
        """Rebuild from :meth:`snapshot` and the model-rate audio of the last frames (seq -> PCM16)."""
        state = json.loads(snapshot)
        session = cls(session_id, state["codec"], state["sample_rate"], shape, state["first_seq"])
        for name in (
            "next_seq",
            "hop_seq",
            "end_seq",
            "closed",
            "last_seen_ms",
            "partition",
            "last_capture_ts_ms",
            "hop_frames",
            "hop_first_capture_ts_ms",
            "hop_gaps",
            "hop_duplicates",
            "audio_frames",
            "recent_gaps",
        ):
            setattr(session, name, state[name])
        if state["upsampler"] is not None:
            session._upsampler = audio.Upsampler2x(np.array(state["upsampler"], dtype=np.int16))
        session.pending = {
            seq: Frame(session_id, seq, capture, session.codec, session.sample_rate, base64.b64decode(data), eos)
            for seq, capture, eos, data in state["pending"]
        }
        first = max(session.next_seq - shape.ring_frames, session.first_seq)
        session._audio = bytearray(b"".join(frames[seq] for seq in range(first, session.next_seq) if seq in frames))
        return session


class Windower:
    """All sessions of one windower: validation, session creation, idle expiry."""

    def __init__(self, settings: AudioSettings, clock: Clock = now_ms) -> None:
        self.shape = WindowShape.from_settings(settings)
        self.clock = clock
        self.sessions: dict[str, SessionWindow] = {}

    def accept(self, frame: Frame, window_secs: float, control_level: int = 0, partition: int = 0) -> Outcome:
        reason = self.shape.validate(frame)
        if reason is not None:
            return Outcome(rejection=Rejection(frame.session_id, frame.seq, reason))
        session = self.sessions.get(frame.session_id)
        if session is None:
            # Sessions start at seq 0; one first seen further in (its start was lost) starts there.
            first_seq = 0 if frame.seq <= self.shape.reorder_tolerance_frames else frame.seq
            session = SessionWindow(frame.session_id, frame.codec, frame.sample_rate, self.shape, first_seq)
            self.sessions[frame.session_id] = session
        session.last_seen_ms = self.clock()
        session.partition = partition
        return session.accept(frame, window_secs, control_level)

    def expire_idle(self, window_secs: float, control_level: int = 0) -> list[tuple[SessionWindow, Outcome]]:
        """Sessions idle for ``idle_timeout_s``: open ones get their final hop; all are forgotten."""
        cutoff = self.clock() - self.shape.idle_timeout_ms
        expired = []
        for session_id, session in list(self.sessions.items()):
            if session.last_seen_ms <= cutoff:
                expired.append((session, session.expire(window_secs, control_level)))
                del self.sessions[session_id]
        return expired
