"""Stage A -> stage B: 20 ms frames in, one hop of rolling-window audio every 160 ms out.

Pure logic (no Kafka, and no clock: times come in as arguments) so every rule is unit-tested:

* Frames are validated first; an invalid frame (bad rate, wrong payload size for its
  codec/rate, codec change mid-session, negative or absurd seq, frame after the session's end)
  comes back as a :class:`Rejection` with a one-line reason, never as an exception.
* Per session, frames are put in ``seq`` order. A duplicate (seq already taken) is dropped
  and counted. A frame that arrives early is held until the missing ones come; a missing
  frame is given up once the newest held frame is more than ``reorder_tolerance_frames``
  ahead of it, and replaced by 20 ms of silence (counted as a gap). A frame that arrives
  after it was given up is dropped (``late``). A session first seen at seq n (its start
  lost, or overtaken) starts at n - ``reorder_tolerance_frames``, so the frames it overtook
  are kept; one older than that is ``late``.
* A seq more than ``max_gap_frames`` ahead of the next expected one is an outage, not a
  network gap: the frames held are flushed, then the session skips ahead to the new frame
  without filling (:attr:`Outcome.skipped`), its window starting again there. Skipping
  rather than rejecting, because a real producer that lost a stretch goes on from the new
  seq, and rejecting would dead-letter the rest of its call; filling is what let one frame
  with a wild seq make megabytes of silent hops. A seq more than ``MAX_SEQ_JUMP_S`` ahead is still rejected as absurd.
* Audio is decoded to 16 kHz PCM16 (G.711 tables, :class:`pipeline.audio.Upsampler2x` for
  8 kHz, per-session state so hop boundaries are seamless). Every frame, real or
  gap-filled, adds exactly one frame of model-rate samples, so stream sample offsets count
  the frames added (skipped stretches add none).
* Every ``frames_per_hop`` frames a :class:`Hop` is cut with the last ``window_secs`` of
  audio (shorter at the start). ``window_secs`` and the control level are passed in per
  frame (from the control topic's knobs).
* Timing is measured on the pipeline's clock, never the producer's: every frame comes with
  the windower's receive time (the caller reads the clock; this module never does), and a
  hop's ``ready_ts_ms`` is the receive time of the event that cut it: the frame that
  completed it, or the end-of-stream frame, the frame whose arrival gave up a missing one,
  the idle-expiry check. ``first_capture_ts_ms`` is the capture time of the hop's first
  frame, kept for reporting but never later than ``ready_ts_ms``.
* A frame's ``capture_ts_ms`` (producer clock) is checked when the session takes the frame:
  NaN, more than ``max_capture_age_ms`` before or ``max_capture_lead_ms`` after its receive
  time is a clock error, so the capture is clamped to "captured just now" (received - 20 ms)
  and the reason reported in :attr:`Outcome.clamped_capture`; the audio is kept. Otherwise
  :attr:`Outcome.capture_skew_ms` reports received - capture end (transport plus clock
  offset). A gap-filled frame's capture follows the frame before it (at a session's start:
  extrapolated back from the first frame held).
* The end-of-stream frame flushes a final (possibly short) hop at once, giving up any
  frame still missing before it.
* Idleness is measured in each partition's *active time*: the receive-time gaps between
  successive frames of that partition, a gap longer than ``PARTITION_STALL_MS`` counting
  as nothing. An outage (broker, gateway or windower down) stops every frame of a partition
  at once, so it ages no session, and neither does the backlog replayed after it; a session
  whose own frames stop while its partition flows is expired with a final hop after
  ``idle_timeout_s``. An ended (or expired) session stays as a small record, its audio
  dropped, for ``ended_retention_s`` more: a frame for an expired session reopens it with
  ``hop_seq`` and sample offsets going on (skipping ahead without fill), never at 0.

State survives restarts through :meth:`SessionWindow.snapshot` (small metadata written on
every frame) plus the per-frame audio slots in :attr:`Outcome.appended`; see
``pipeline.windower`` for how they are stored.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline import audio, contracts
from pipeline.settings import AudioSettings

#: A seq more than this far ahead of the next expected one is rejected, not skipped to.
MAX_SEQ_JUMP_S = 60.0

#: A partition silent this long is in an outage (or has no live session): the silence ages no session.
PARTITION_STALL_MS = 1000.0


@dataclass(frozen=True)
class DeliveryRetry:
    """How often a failed hop, state or dead-letter delivery is sent again before the windower gives up.

    Resending is safe: the records are deterministic and consumers take (session, hop_seq) as a
    hop's identity. Giving up means exiting non-zero, with the frames behind the failed output
    still uncommitted, so the restart replays them: at-least-once instead of a commit stuck for good.
    """

    attempts: int = 5
    first_delay_s: float = 0.25
    max_delay_s: float = 4.0

    def delay_s(self, failures: int) -> float | None:
        """Seconds to wait before resending after ``failures`` failed deliveries in a row; None: give up."""
        if failures > self.attempts:
            return None
        return min(self.first_delay_s * 2 ** (failures - 1), self.max_delay_s)


#: The producer label of sessions whose id names no tenant (no "/").
DEFAULT_PRODUCER = "default"
#: The producer label shared by every tenant past :data:`MAX_PRODUCER_LABELS`.
OTHER_PRODUCERS = "other"
#: Distinct producer labels one windower gives out.
MAX_PRODUCER_LABELS = 64


class ProducerLabels:
    """A metrics label per producer: the session id's tenant prefix ("acme/call-7" -> "acme").

    The ``AudioFrame`` record names no gateway, and the session id itself would be a label per
    call; tenant prefixes are client input too, so past ``limit`` of them the rest share one label.
    """

    def __init__(self, limit: int = MAX_PRODUCER_LABELS) -> None:
        self.limit = limit
        self._given: set[str] = set()

    def __call__(self, session_id: str) -> str:
        tenant, slash, _ = session_id.partition("/")
        label = tenant if slash and tenant else DEFAULT_PRODUCER
        if label not in self._given:
            if len(self._given) >= self.limit:
                return OTHER_PRODUCERS
            self._given.add(label)
        return label


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
    #: Frames passed over without fill: a jump past ``max_gap_frames``, or a gap before a reopened session's frame.
    skipped: int = 0
    closed: bool = False
    #: Why the frame's capture time was replaced by "captured just now": "nan", "future" or "too_old".
    clamped_capture: str | None = None
    #: Received - (capture + frame length) of a frame taken with its own capture time, ms.
    capture_skew_ms: float | None = None


@dataclass(frozen=True)
class WindowShape:
    """The fixed numbers of the windowing, derived from :class:`AudioSettings`."""

    frame_ms: int
    frames_per_hop: int
    samples_per_frame: int
    max_window_secs: float
    reorder_tolerance_frames: int
    max_gap_frames: int
    idle_timeout_ms: float
    ended_retention_ms: float
    max_capture_age_ms: float
    max_capture_lead_ms: float

    @classmethod
    def from_settings(cls, settings: AudioSettings) -> WindowShape:
        return cls(
            frame_ms=settings.frame_ms,
            frames_per_hop=settings.frames_per_hop,
            samples_per_frame=audio.MODEL_RATE * settings.frame_ms // 1000,
            max_window_secs=settings.window_secs,
            reorder_tolerance_frames=settings.reorder_tolerance_frames,
            max_gap_frames=settings.max_gap_frames,
            idle_timeout_ms=settings.idle_timeout_s * 1000.0,
            ended_retention_ms=settings.ended_retention_s * 1000.0,
            max_capture_age_ms=settings.max_capture_age_ms,
            max_capture_lead_ms=settings.max_capture_lead_ms,
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

    def capture_error(self, capture_ts_ms: float, received_ts_ms: float) -> str | None:
        """Why a capture time cannot be the producer's clock for a frame received at ``received_ts_ms``, or None."""
        if math.isnan(capture_ts_ms):
            return "nan"
        if capture_ts_ms > received_ts_ms + self.max_capture_lead_ms:
            return "future"
        if capture_ts_ms < received_ts_ms - self.max_capture_age_ms:
            return "too_old"
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
        #: Its partition's active time (see :class:`Windower`) at the last frame; not persisted.
        self.active_at = 0.0
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

    def accept(self, frame: Frame, window_secs: float, control_level: int, received_ts_ms: float) -> Outcome:
        """Take one frame received (pipeline clock) at ``received_ts_ms``."""
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
            if self.end_seq is not None and frame.seq > self.end_seq:
                outcome.rejection = Rejection(self.session_id, frame.seq, "frame after the session's end of stream")
                return outcome
            if self.end_seq is not None or frame.seq < self.next_seq:
                outcome.duplicate = True
                return outcome
            self.closed = False  # expired for idleness, and its caller is back
            self._skip_to(outcome, frame.seq, window_secs, control_level, received_ts_ms)
        if frame.seq - self.next_seq > self.shape.max_seq_jump:
            outcome.rejection = Rejection(
                self.session_id, frame.seq, f"seq {frame.seq} jumps more than {MAX_SEQ_JUMP_S:.0f} s ahead"
            )
            return outcome
        if frame.seq < self.next_seq or frame.seq in self.pending:
            if frame.seq in self.recent_gaps or frame.seq < self.first_seq:
                outcome.late = True
            else:
                outcome.duplicate = True
                self.hop_duplicates += 1
            return outcome
        if self.end_seq is not None and frame.seq > self.end_seq:
            outcome.rejection = Rejection(self.session_id, frame.seq, "frame after the session's end of stream")
            return outcome
        if frame.seq - self.next_seq > self.shape.max_gap_frames:
            self._skip_to(outcome, frame.seq, window_secs, control_level, received_ts_ms)
        self.pending[frame.seq] = self._trusted_capture(outcome, frame, received_ts_ms)
        if frame.end_of_stream:
            self.end_seq = frame.seq
        self._advance(outcome, window_secs, control_level, received_ts_ms, flush=frame.end_of_stream)
        return outcome

    def _trusted_capture(self, outcome: Outcome, frame: Frame, received_ts_ms: float) -> Frame:
        """The frame with a capture time fit for latency figures; a broken one is reported, the audio kept."""
        reason = self.shape.capture_error(frame.capture_ts_ms, received_ts_ms)
        if reason is None:
            outcome.capture_skew_ms = received_ts_ms - (frame.capture_ts_ms + self.shape.frame_ms)
            return frame
        outcome.clamped_capture = reason
        return replace(frame, capture_ts_ms=received_ts_ms - self.shape.frame_ms)

    def _skip_to(self, outcome: Outcome, seq: int, window_secs: float, control_level: int, now_ms: float) -> None:
        """Take in the frames held (their gaps are within ``max_gap_frames``), then go on at ``seq`` without fill.

        The audio before is not contiguous with what follows, so the window starts again at
        ``seq``, and so does what :meth:`restore` reads back.
        """
        self._advance(outcome, window_secs, control_level, now_ms, flush=True)
        outcome.skipped += seq - self.next_seq
        self.next_seq = self.first_seq = seq
        self._audio.clear()

    def expire(self, window_secs: float, control_level: int, now_ms: float) -> Outcome:
        """Idle: give up what is missing, emit the final hop (ready at ``now_ms``), close."""
        outcome = Outcome()
        if not self.closed:
            self._advance(outcome, window_secs, control_level, now_ms, flush=True)
            if not self.closed:
                self._cut_hop(outcome, window_secs, control_level, now_ms, final=True)
        return outcome

    def _advance(self, outcome: Outcome, window_secs: float, control_level: int, now_ms: float, flush: bool) -> None:
        """Append every frame that is in order now, filling gaps past tolerance; hops cut are ready at ``now_ms``."""
        while self.pending:
            if self.next_seq in self.pending:
                frame = self.pending.pop(self.next_seq)
                self._append(outcome, frame.seq, self._decode(frame.payload), frame.capture_ts_ms)
            elif flush or max(self.pending) - self.next_seq > self.shape.reorder_tolerance_frames:
                self._fill_gap(outcome)
            else:
                break
            if self.end_seq is not None and self.next_seq > self.end_seq:
                self._cut_hop(outcome, window_secs, control_level, now_ms, final=True)
                return
            if self.hop_frames == self.shape.frames_per_hop:
                self._cut_hop(outcome, window_secs, control_level, now_ms, final=False)

    def _decode(self, payload: bytes) -> bytes:
        if not payload:
            return b""
        samples = audio.decode(payload, self.codec)
        if self._upsampler is not None:
            samples = self._upsampler.process(samples)
        return audio.pcm16_to_bytes(samples)

    def _fill_gap(self, outcome: Outcome) -> None:
        """Silence for the missing ``next_seq``; called only while a later frame is held."""
        seq = self.next_seq
        if self.last_capture_ts_ms is not None:
            capture = self.last_capture_ts_ms + self.shape.frame_ms
        else:
            held = min(self.pending)
            capture = self.pending[held].capture_ts_ms - (held - seq) * self.shape.frame_ms
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

    def _cut_hop(
        self, outcome: Outcome, window_secs: float, control_level: int, ready_ts_ms: float, final: bool
    ) -> None:
        window_secs = min(max(window_secs, 0.0), self.shape.max_window_secs)
        window_bytes = min(round(window_secs * audio.MODEL_RATE) * 2, len(self._audio))
        if self.hop_frames:
            first_capture = self.hop_first_capture_ts_ms
        else:  # a final hop with no new audio: it waited since the last frame
            first_capture = self.last_capture_ts_ms if self.last_capture_ts_ms is not None else ready_ts_ms
        outcome.hops.append(
            Hop(
                session_id=self.session_id,
                hop_seq=self.hop_seq,
                # Captures within the lead tolerance may still lie ahead of the receive time.
                first_capture_ts_ms=min(first_capture, ready_ts_ms),
                ready_ts_ms=ready_ts_ms,
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
            self._audio.clear()  # a reopened session starts a new window
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
        """Rebuild from :meth:`snapshot` and the model-rate audio of the last frames (seq -> PCM16).

        Snapshots written before captures were checked on arrival may hold NaN or infinite ones:
        those become "captured just before the session was last seen", so no hop carries them.
        """
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
        fallback = session.last_seen_ms - shape.frame_ms
        session.hop_first_capture_ts_ms = _finite_or(session.hop_first_capture_ts_ms, fallback)
        if session.last_capture_ts_ms is not None:
            session.last_capture_ts_ms = _finite_or(session.last_capture_ts_ms, fallback)
        if state["upsampler"] is not None:
            session._upsampler = audio.Upsampler2x(np.array(state["upsampler"], dtype=np.int16))
        session.pending = {
            seq: Frame(
                session_id,
                seq,
                _finite_or(capture, fallback),
                session.codec,
                session.sample_rate,
                base64.b64decode(data),
                eos,
            )
            for seq, capture, eos, data in state["pending"]
        }
        if not session.closed:
            first = max(session.next_seq - shape.ring_frames, session.first_seq)
            session._audio = bytearray(b"".join(frames[seq] for seq in range(first, session.next_seq) if seq in frames))
        return session


def _finite_or(value: float, fallback: float) -> float:
    return value if math.isfinite(value) else fallback


class Windower:
    """All sessions of one windower: validation, session creation, idle expiry.

    Time comes in as arguments (pipeline clock, ms): the receive time of each frame, the
    time of each expiry check. Idleness is counted in each partition's active time (see the
    module docstring), kept here per partition and never persisted: a session restored or
    a partition newly assigned starts its idle count at zero.
    """

    def __init__(self, settings: AudioSettings) -> None:
        self.shape = WindowShape.from_settings(settings)
        self.sessions: dict[str, SessionWindow] = {}
        self._active_ms: dict[int, float] = {}
        self._received_ms: dict[int, float] = {}

    def active_ms(self, partition: int) -> float:
        """How long ``partition`` has been receiving frames, stalls left out."""
        return self._active_ms.get(partition, 0.0)

    def _tick(self, partition: int, received_ts_ms: float) -> float:
        last = self._received_ms.get(partition)
        active = self.active_ms(partition)
        if last is not None and 0 < received_ts_ms - last <= PARTITION_STALL_MS:
            active += received_ts_ms - last
        self._received_ms[partition] = received_ts_ms
        self._active_ms[partition] = active
        return active

    def adopt(self, session: SessionWindow) -> None:
        """Take a restored session in; its idle count starts now."""
        session.active_at = self.active_ms(session.partition)
        self.sessions[session.session_id] = session

    def accept(
        self, frame: Frame, window_secs: float, control_level: int = 0, partition: int = 0, *, received_ts_ms: float
    ) -> Outcome:
        """Window one frame that the windower received at ``received_ts_ms``."""
        active = self._tick(partition, received_ts_ms)
        reason = self.shape.validate(frame)
        if reason is not None:
            return Outcome(rejection=Rejection(frame.session_id, frame.seq, reason))
        session = self.sessions.get(frame.session_id)
        if session is None:
            # Sessions start at seq 0. One first seen further in (its start was lost, or the frame overtook the
            # ones before it) starts the reorder tolerance before it: those frames are kept if they come in time,
            # and given up as gaps like any missing frame if they do not.
            first_seq = max(0, frame.seq - self.shape.reorder_tolerance_frames)
            session = SessionWindow(frame.session_id, frame.codec, frame.sample_rate, self.shape, first_seq)
            self.sessions[frame.session_id] = session
        session.last_seen_ms = received_ts_ms
        session.active_at = active
        session.partition = partition
        return session.accept(frame, window_secs, control_level, received_ts_ms)

    def _idle_ms(self, session: SessionWindow) -> float:
        return self.active_ms(session.partition) - session.active_at

    def expire_idle(
        self, window_secs: float, control_level: int = 0, *, now_ms: float
    ) -> list[tuple[SessionWindow, Outcome]]:
        """Open sessions idle ``idle_timeout_s``: each gets a final hop ready at ``now_ms``, closed, not forgotten."""
        return [
            (session, session.expire(window_secs, control_level, now_ms))
            for session in self.sessions.values()
            if not session.closed and self._idle_ms(session) >= self.shape.idle_timeout_ms
        ]

    def forget_ended(self) -> list[SessionWindow]:
        """Ended or expired sessions idle ``ended_retention_s`` past the idle timeout: dropped, returned."""
        limit = self.shape.idle_timeout_ms + self.shape.ended_retention_ms
        return self._drop([s for s in self.sessions.values() if s.closed and self._idle_ms(s) >= limit])

    def forget_partitions(self, partitions: set[int]) -> list[SessionWindow]:
        """Drop the sessions (and idle counts) of partitions this windower no longer owns; returns them.

        Their state is the new owner's to restore, so nothing here expires or deletes it.
        """
        for partition in partitions:
            self._active_ms.pop(partition, None)
            self._received_ms.pop(partition, None)
        return self._drop([s for s in self.sessions.values() if s.partition in partitions])

    def _drop(self, sessions: list[SessionWindow]) -> list[SessionWindow]:
        for session in sessions:
            del self.sessions[session.session_id]
        return sessions
