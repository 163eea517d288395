"""Stage A ingress: audio streams -> 20 ms ``AudioFrame`` records on the frames topic.

:class:`AudioProducer` is the library a gateway (or ``hopline produce``) uses:

* any PCM16 / mu-law / A-law stream at 8 or 16 kHz is cut into 20 ms frames keyed by
  session id (``murmur2_random`` partitioner, so the session has one partition number in
  every topic), numbered from 0, ending with an end-of-stream frame;
* paced in real time (``capture_ts_ms`` = wall time the frame's audio starts; the frame is
  sent when its audio ends, as a live gateway would) or as fast as possible (capture times
  still advance 20 ms per frame from the start);
* several sessions at once from one thread (:meth:`AudioProducer.stream_many`) on one shared
  20 ms tick: the frames due in a tick are produced back to back, so librdkafka's linger puts
  each partition's frames of the tick in one record batch (the embedded broker's cost follows
  the number of stored batches; ``hopline demo`` reports batches/s per service);
* idempotent confluent-kafka producer; every delivery is confirmed by callback, failures
  are counted and logged, :meth:`AudioProducer.close` flushes and reports what is still
  undelivered, so nothing is lost silently;
* admission control: before a NEW session starts, the control topic's
  ``admit_new_sessions`` is checked (when a :class:`~pipeline.control.ControlFollower` is
  given) and the session is refused with :class:`SessionRefused`.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from pipeline import audio, contracts
from pipeline.clock import Clock
from pipeline.control.follower import ControlFollower
from pipeline.control.ladder import admission_refusal
from pipeline.kafka.clients import make_producer
from pipeline.settings import Settings

log = logging.getLogger(__name__)


class SessionRefused(Exception):
    """Admission control is closed: the controller refuses new sessions (degradation level 5)."""


@dataclass
class DeliveryReport:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return self.sent - self.delivered - self.failed


@dataclass
class AudioStream:
    """One session's audio: int16 mono ``samples`` at ``source_rate`` (default: ``sample_rate``),
    sent as ``codec`` at ``sample_rate``; the producer resamples and encodes."""

    session_id: str
    samples: audio.Int16Array
    codec: str = "pcm16"
    sample_rate: int = 16000
    source_rate: int | None = None
    #: Seconds after the others start that this session joins (admission is checked then).
    start_offset_s: float = 0.0


@dataclass
class _Session:
    stream: AudioStream
    payloads: list[bytes]
    start_ms: float
    next_seq: int = 0


class AudioProducer:
    """Frames audio streams onto the frames topic; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        producer: Producer | None = None,
        control: ControlFollower | None = None,
        clock: Clock = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._producer = producer or make_producer(settings)
        self._control = control
        self._clock = clock
        self._sleep = sleep
        self._frame_ms = settings.audio.frame_ms
        self._topic = settings.topics.frames
        self._lock = threading.Lock()
        self.report = DeliveryReport()

    # -- framing --------------------------------------------------------------------------

    def frames_of(self, stream: AudioStream) -> list[bytes]:
        """The stream's 20 ms payloads in its codec (last one padded with silence)."""
        problem = audio.format_error(stream.codec, stream.sample_rate)
        if problem is not None:
            raise ValueError(problem)
        if len(stream.session_id.encode()) > contracts.MAX_SESSION_ID_BYTES:
            raise ValueError(f"session id longer than {contracts.MAX_SESSION_ID_BYTES} bytes")
        samples = audio.resample_to(stream.samples, stream.source_rate or stream.sample_rate, stream.sample_rate)
        per_frame = stream.sample_rate * self._frame_ms // 1000
        return [audio.encode(frame, stream.codec) for frame in audio.frames_of(samples, per_frame)]

    def frame_record(self, stream: AudioStream, seq: int, payload: bytes, capture_ts_ms: float, eos: bool) -> bytes:
        return contracts.AudioFrame(
            session_id=stream.session_id,
            seq=seq,
            capture_ts_ms=capture_ts_ms,
            codec=stream.codec,
            sample_rate=stream.sample_rate,
            payload=payload,
            end_of_stream=eos,
            sent_ts_ms=self._clock() * 1000.0,
        ).encode()

    # -- sending --------------------------------------------------------------------------

    def admit(self, session_id: str) -> None:
        """Raise :class:`SessionRefused` when the controller has closed admission."""
        refusal = None if self._control is None else admission_refusal(self._control.knobs, self._control.reason)
        if refusal is not None:
            raise SessionRefused(f"session {session_id} refused: {refusal}")

    def stream(self, stream: AudioStream, realtime: bool = False) -> int:
        """Send one whole session; returns the frames sent (the end-of-stream frame included).

        Raises :class:`SessionRefused` when admission is closed.
        """
        self.admit(stream.session_id)
        return self.stream_many([stream], realtime).get(stream.session_id, 0)

    def stream_many(
        self, streams: Sequence[AudioStream], realtime: bool = False, stop: threading.Event | None = None
    ) -> dict[str, int]:
        """Send several sessions interleaved in capture order; returns frames sent per admitted session.

        Refused sessions (admission closed when they would start) are logged and left out.
        ``stop`` ends every session early with its end-of-stream frame.
        """
        # Frame (resample, encode) everything before the clock starts: done after, it delayed the
        # first frames of every session by the framing time (~0.3 s for 10 x 20 s on 2 busy cores).
        payloads = [self.frames_of(stream) for stream in streams]
        start_ms = self._clock() * 1000.0
        queue: list[tuple[float, int, _Session]] = []
        for index, (stream, frames) in enumerate(zip(streams, payloads, strict=True)):
            offset_ms = round(stream.start_offset_s * 1000.0 / self._frame_ms) * self._frame_ms
            session = _Session(stream, frames, start_ms + offset_ms)
            heapq.heappush(queue, (session.start_ms + self._frame_ms, index, session))
        sent: dict[str, int] = {}
        refused: set[str] = set()
        while queue:
            due_ms, index, session = heapq.heappop(queue)
            session_id = session.stream.session_id
            if session.next_seq == 0:
                try:
                    self.admit(session_id)
                except SessionRefused as exc:
                    log.warning("%s", exc)
                    refused.add(session_id)
                    continue
            if realtime:
                self._wait_until(due_ms)
            seq = session.next_seq
            last = seq == len(session.payloads) or (stop is not None and stop.is_set())
            payload = b"" if last else session.payloads[seq]
            capture_ms = session.start_ms + seq * self._frame_ms
            self.send_frame(session.stream, seq, payload, capture_ms, eos=last)
            sent[session_id] = seq + 1
            session.next_seq += 1
            if not last:
                heapq.heappush(queue, (due_ms + self._frame_ms, index, session))
        return sent

    def _wait_until(self, due_ms: float) -> None:
        while True:
            remaining = due_ms / 1000.0 - self._clock()
            if remaining <= 0:
                return
            self._producer.poll(0)
            self._sleep(min(remaining, 0.005))

    def send_frame(self, stream: AudioStream, seq: int, payload: bytes, capture_ms: float, eos: bool = False) -> None:
        """Send one frame as it is (for live sources that frame themselves, and tests)."""
        value = self.frame_record(stream, seq, payload, capture_ms, eos)
        key = stream.session_id.encode()
        while True:
            try:
                self._producer.produce(self._topic, key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.01)
        with self._lock:
            self.report.sent += 1
        self._producer.poll(0)

    def _on_delivery(self, error: KafkaError | None, message: Message) -> None:
        with self._lock:
            if error is None:
                self.report.delivered += 1
                return
            self.report.failed += 1
            if len(self.report.errors) < 20:
                self.report.errors.append(str(error))
        log.error("frame delivery failed (%s[%s]): %s", message.topic(), message.key(), error)

    def flush(self, timeout_s: float = 10.0) -> int:
        """Wait for every frame sent so far to be delivered; returns how many are still pending."""
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 10.0) -> DeliveryReport:
        """Flush; the report says how many frames were delivered, failed, or are still pending."""
        remaining = self.flush(timeout_s)
        if remaining:
            log.error("%d frames still undelivered after %.0f s", remaining, timeout_s)
        return self.report
