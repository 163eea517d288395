"""Typed records: one frozen dataclass per topic schema in ``schemas/``, fields named as in the schema.

``to_avro()`` / ``from_avro()`` convert to and from the dict the Avro codec writes and reads;
``encode()`` / ``decode()`` go straight to and from the topic's single-object bytes and raise
the contract errors (:class:`~pipeline.contracts.codec.ContractError` and its subclasses).
Fields are keyword-only and in schema order; a schema default is the field's default. Avro
arrays are tuples here (the records are immutable), maps are dicts, enums are their symbol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from pipeline.contracts.codec import (
    CAPABILITIES,
    CONTROL,
    DEAD_LETTER,
    FRAME,
    HOP,
    HYPOTHESIS,
    LATENCY,
    PROBE,
    TRANSCRIPT,
    Contract,
    Record,
)


@dataclass(frozen=True, kw_only=True)
class _Avro:
    """Field-for-field conversion to and from the codec's dict."""

    def to_avro(self) -> Record:
        # A (slot-less) dataclass instance holds exactly its fields, in field order: a copy is the record.
        return dict(vars(self))

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Self:
        return cls(**record)


@dataclass(frozen=True, kw_only=True)
class _Message(_Avro):
    """A topic's record: encoded with that topic's contract."""

    contract: ClassVar[Contract]

    def encode(self) -> bytes:
        return self.contract.encode(self.to_avro())

    @classmethod
    def decode(cls, data: bytes | None) -> Self:
        return cls.from_avro(cls.contract.decode(data))


@dataclass(frozen=True, kw_only=True)
class AudioFrame(_Message):
    """``audio_frame.avsc``: one 20 ms frame of a session's audio. Key: session_id."""

    contract: ClassVar[Contract] = FRAME

    session_id: str
    seq: int
    capture_ts_ms: float
    codec: str
    sample_rate: int
    payload: bytes
    end_of_stream: bool = False
    sent_ts_ms: float


@dataclass(frozen=True, kw_only=True)
class Hop(_Message):
    """``hop.avsc``: one inference trigger, the rolling window ending at the hop. Key: session_id."""

    contract: ClassVar[Contract] = HOP

    session_id: str
    hop_seq: int
    first_capture_ts_ms: float
    ready_ts_ms: float
    published_ts_ms: float
    sample_rate: int
    audio: bytes
    window_start_sample: int
    window_secs: float
    gap_frames: int
    duplicate_frames: int
    is_final: bool
    control_level: int = 0


@dataclass(frozen=True, kw_only=True)
class Word(_Avro):
    """A recognized word with stream times (the ``Word`` of hypothesis.avsc and transcript.avsc)."""

    word: str
    start_ms: float
    end_ms: float
    confidence: float


@dataclass(frozen=True, kw_only=True)
class _WithWords(_Message):
    """A message carrying an Avro array of ``Word`` records (``words`` comes first among the fields)."""

    words: tuple[Word, ...]

    def to_avro(self) -> Record:
        return {**super().to_avro(), "words": [w.to_avro() for w in self.words]}

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Self:
        return cls(**{**record, "words": tuple(Word.from_avro(w) for w in record["words"])})


@dataclass(frozen=True, kw_only=True)
class Hypothesis(_WithWords):
    """``hypothesis.avsc``: the recognizer's output for one hop with its timestamps. Key: session_id."""

    contract: ClassVar[Contract] = HYPOTHESIS

    session_id: str
    hop_seq: int
    text: str
    words: tuple[Word, ...]
    confidence: float
    window_start_ms: float
    window_end_ms: float
    is_final: bool
    beam: int
    window_secs: float
    batch_size: int
    control_level: int = 0
    worker_id: str
    first_capture_ts_ms: float
    ready_ts_ms: float
    hop_published_ts_ms: float
    received_ts_ms: float
    batch_closed_ts_ms: float
    infer_start_ts_ms: float
    infer_end_ts_ms: float
    skipped_before: int = 0
    strided_before: int = 0


@dataclass(frozen=True, kw_only=True)
class Transcript(_WithWords):
    """``transcript.avsc``: a session's running partial or a closed final segment. Key: session_id."""

    contract: ClassVar[Contract] = TRANSCRIPT

    session_id: str
    kind: str
    segment: int
    text: str
    committed_text: str
    tail_text: str
    words: tuple[Word, ...]
    hop_seq: int
    first_capture_ts_ms: float
    published_ts_ms: float


@dataclass(frozen=True, kw_only=True)
class LatencyEvent(_Message):
    """``latency_event.avsc``: one hop's latency breakdown; the components add up to e2e_ms. Key: session_id."""

    contract: ClassVar[Contract] = LATENCY

    session_id: str
    hop_seq: int
    worker_id: str
    event_ts_ms: float
    hop_buffer_ms: float
    net_ms: float
    queue_wait_ms: float
    batch_wait_ms: float
    gpu_infer_ms: float
    post_ms: float
    e2e_ms: float
    batch_size: int
    beam: int
    window_secs: float
    control_level: int
    emitted: bool
    skipped_before: int = 0


@dataclass(frozen=True, kw_only=True)
class ControlCommand(_Message):
    """``control_command.avsc``: the controller's current degradation decision. Key: scope."""

    contract: ClassVar[Contract] = CONTROL

    scope: str
    seq: int
    level: int
    emit_interval_ms: int
    window_secs: float
    beam: int
    admit_new_sessions: bool
    reason: str
    metrics: dict[str, float]
    issued_ts_ms: float
    tier: str = "full"


@dataclass(frozen=True, kw_only=True)
class DeadLetter(_Message):
    """``dead_letter.avsc``: a message a service could not process, with the reason.

    Key and value are the original bytes up to a bound (:mod:`pipeline.kafka.dead_letters`): a cut one says
    so in the reason, with the original length and sha256, so a dead letter always fits the producer."""

    contract: ClassVar[Contract] = DEAD_LETTER

    source_topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    reason: str
    error_type: str
    service: str
    failed_ts_ms: float


@dataclass(frozen=True, kw_only=True)
class BrokerProbe(_Message):
    """``broker_probe.avsc``: a transport heartbeat, read back by the prober that sent it. Key: prober."""

    contract: ClassVar[Contract] = PROBE

    prober: str
    seq: int
    sent_ts_ms: float
    previous_rtt_ms: float
    lookup_ms: float


@dataclass(frozen=True, kw_only=True)
class WorkerCapabilities(_Message):
    """``worker_capabilities.avsc``: what each degradation knob saves on one worker. Key: worker_id."""

    contract: ClassVar[Contract] = CAPABILITIES

    worker_id: str
    device: str
    measured_ts_ms: float
    batch_size: int
    base_batch_ms: float
    savings: dict[str, float]
    tiers: tuple[str, ...]

    def to_avro(self) -> Record:
        return {**super().to_avro(), "savings": dict(self.savings), "tiers": list(self.tiers)}

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Self:
        return cls(**{**record, "tiers": tuple(record["tiers"])})
