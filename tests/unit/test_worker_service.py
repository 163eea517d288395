"""What the worker makes of one hop and its recognition, without a broker."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.control.ladder import ladder
from pipeline.settings import Settings, TopicSettings
from tests.plugins.builders import hop as make_hop
from tests.plugins.clock import FakeClock
from workers.batching.policy import Batch, BatchPolicy, Pending
from workers.worker import service as worker_service
from workers.worker.service import (
    FaultSlowdown,
    HopJob,
    HopWorker,
    InvalidHop,
    build_hypothesis,
    hop_audio,
    infer_batch,
)


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Recognition:
    text: str
    words: tuple[Word, ...]
    confidence: float


def test_pcm16_becomes_float32_in_unit_range() -> None:
    audio = hop_audio(make_hop(), 16000, 20480)
    assert audio.dtype == np.float32
    assert audio.tolist() == [0.0, 0.5, -1.0, 32767 / 32768]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sample_rate": 8000}, "sample_rate 8000"),
        ({"audio": b"\x00\x01\x02"}, "3 bytes"),
        ({"audio": b""}, "0 bytes"),
        ({"audio": bytes(2 * 20481)}, "20481 samples is longer than the 20480-sample window"),
    ],
)
def test_hops_the_model_cannot_take_are_refused_with_a_reason(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidHop, match=message):
        hop_audio(make_hop(**overrides), 16000, 20480)


def test_hypothesis_moves_word_times_to_stream_time_and_carries_every_timestamp() -> None:
    hop = make_hop()
    audio = np.zeros(16000, dtype=np.float32)
    job = HopJob(hop=hop, audio=audio, received_ts_ms=1170.0, message=None)  # type: ignore[arg-type]
    recognition = Recognition("two pizzas", (Word("two", 0.1, 0.3, 0.9), Word("pizzas", 0.35, 0.8, 0.7)), 0.8)
    record = build_hypothesis(
        job,
        recognition,
        beam=2,
        batch_size=3,
        control_level=3,
        worker_id="w1",
        batch_closed_ts_ms=1180.0,
        infer_start_ts_ms=1181.0,
        infer_end_ts_ms=1230.0,
        skipped_before=1,
    )
    assert record.window_start_ms == 2000.0
    assert record.window_end_ms == 3000.0
    assert [(w.word, w.start_ms, w.end_ms) for w in record.words] == [
        ("two", 2100.0, 2300.0),
        ("pizzas", 2350.0, 2800.0),
    ]
    assert record.hop_published_ts_ms == 1162.0
    assert record.received_ts_ms == 1170.0
    assert (record.beam, record.batch_size, record.control_level, record.skipped_before) == (2, 3, 3, 1)
    decoded = contracts.Hypothesis.decode(record.encode())
    assert (decoded.text, decoded.words[1].start_ms, decoded.is_final) == ("two pizzas", 2350.0, False)


class TimedRecognizer:
    """Sleeps like a model would and remembers the beam it was asked for and how long it took."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.beams: list[int] = []
        self.tiers: list[str] = []
        self.took_ms: list[float] = []

    def transcribe(self, windows: Sequence[np.ndarray], beam: int, tier: str) -> list[Recognition]:
        started = time.perf_counter()
        time.sleep(self.seconds)
        self.beams.append(beam)
        self.tiers.append(tier)
        self.took_ms.append((time.perf_counter() - started) * 1000.0)
        return [Recognition("hi", (Word("hi", 0.0, 0.1, 1.0),), 1.0) for _ in windows]


def closed_batch(sessions: str) -> Batch[HopJob]:
    policy: BatchPolicy[HopJob] = BatchPolicy(max_batch_size=8, max_latency_s=0.0, clock=lambda: now_ms() / 1000.0)
    for session in sessions:
        received = now_ms()
        job = HopJob(make_hop(session), np.zeros(1600, np.float32), received, None)  # type: ignore[arg-type]
        policy.offer(Pending(session, 0, False, job, received_at=received / 1000.0))
    batch = policy.take(force=True)
    assert batch is not None
    return batch


def test_a_batch_runs_at_the_beam_and_level_in_force_with_ordered_timestamps() -> None:
    recognizer = TimedRecognizer(0.001)
    knobs = ladder(Settings())[3]
    records = infer_batch(recognizer, closed_batch("abc"), knobs, "w1")
    assert recognizer.beams == [2] and recognizer.tiers == ["full"]
    infer_batch(recognizer, closed_batch("a"), ladder(Settings())[4], "w1")
    assert recognizer.beams[-1] == 1 and recognizer.tiers[-1] == "int8", "greedy runs on the int8 tier"
    assert [r.session_id for r in records] == ["a", "b", "c"]
    for r in records:
        assert (r.beam, r.control_level, r.batch_size, r.worker_id) == (2, 3, 3, "w1")
        stamps = [r.received_ts_ms, r.batch_closed_ts_ms, r.infer_start_ts_ms, r.infer_end_ts_ms]
        assert stamps == sorted(stamps)


def test_fault_slowdown_makes_inference_take_x_times_as_long() -> None:
    recognizer = TimedRecognizer(0.01)
    records = infer_batch(recognizer, closed_batch("a"), ladder(Settings())[0], "w1", fault_slowdown=3.0)
    gpu_infer_ms = records[0].infer_end_ts_ms - records[0].infer_start_ts_ms
    assert gpu_infer_ms >= 3.0 * recognizer.took_ms[0]


def test_fault_slowdown_follows_its_file_and_falls_back_when_it_is_gone(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "slowdown"
    slowdown = FaultSlowdown(1.0, str(path), clock=clock)
    assert slowdown.factor() == 1.0, "no file yet"
    path.write_text("3\n")
    assert slowdown.factor() == 1.0, "re-read only every half second"
    clock.advance(0.5)
    assert slowdown.factor() == 3.0
    for text in ("0.5", "nan", "fast"):
        path.write_text(text)
        clock.advance(0.5)
        assert slowdown.factor() == 1.0, f"{text!r} is not a slowdown"
    assert FaultSlowdown(2.0, None).factor() == 2.0


class FakeMessage:
    """A consumed hop as confluent-kafka hands it over."""

    def __init__(self, value: bytes, offset: int, topic: str = "unit.hops", partition: int = 0) -> None:
        self._value, self._offset, self._topic, self._partition = value, offset, topic, partition

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"s1"

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


class FakeProducer:
    """Refuses records for ``refuse`` at produce time; reports failed delivery for ``fail`` (on poll)."""

    def __init__(
        self,
        refuse: tuple[str, ...] = (),
        fail: tuple[str, ...] = (),
        error: KafkaError | None = None,
    ) -> None:
        self.refuse, self.fail = refuse, fail
        self.error = error or KafkaError(KafkaError._MSG_TIMED_OUT)
        self.sent: list[tuple[str, bytes]] = []
        self._reports: list[tuple[Any, KafkaError | None]] = []

    def produce(self, topic: str, key: Any = None, value: bytes = b"", on_delivery: Any = None) -> None:
        if topic in self.refuse:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.sent.append((topic, value))
        error = self.error if topic in self.fail else None
        if on_delivery is not None:
            self._reports.append((on_delivery, error))

    def poll(self, timeout: float = 0.0) -> int:
        reports, self._reports = self._reports, []
        for on_delivery, error in reports:
            on_delivery(error, None)
        return len(reports)

    def flush(self, timeout: float = 0.0) -> int:
        self.poll()
        return 0

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.sent]


class FakeConsumer:
    """Hands out ``messages`` once, assigning their partition on subscribe; records commits."""

    def __init__(self, messages: list[FakeMessage]) -> None:
        self.messages = list(messages)
        self.commits: list[list[tuple[int, int]]] = []

    def subscribe(self, topics: list[str], on_assign: Any, **callbacks: Any) -> None:
        on_assign(self, [TopicPartition(topics[0], 0)])

    def poll(self, timeout: float) -> FakeMessage | None:
        if self.messages:
            return self.messages.pop(0)
        time.sleep(timeout)
        return None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append([(tp.partition, tp.offset) for tp in offsets])

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool) -> tuple[int, int]:
        return 0, 0

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return partitions

    def close(self) -> None:
        pass


class StillControl:
    knobs = ladder(Settings())[0]

    def start(self) -> StillControl:
        return self

    def close(self) -> None:
        pass


UNIT_SETTINGS = Settings(topics=TopicSettings(prefix="unit"))


def hop_worker(
    monkeypatch: pytest.MonkeyPatch,
    producer: FakeProducer,
    messages: list[FakeMessage] = (),  # type: ignore[assignment]
) -> tuple[HopWorker, FakeConsumer]:
    consumer = FakeConsumer(list(messages))
    monkeypatch.setattr(worker_service, "make_producer", lambda settings, **overrides: producer)
    monkeypatch.setattr(worker_service, "make_consumer", lambda settings, group: consumer)
    monkeypatch.setattr(worker_service, "ControlFollower", lambda settings: StillControl())
    monkeypatch.setattr(worker_service, "DEAD_LETTER_BACKOFF_S", 0.001)
    return HopWorker(UNIT_SETTINGS, TimedRecognizer(0.0)), consumer


def published_hypothesis(worker: HopWorker, offset: int) -> None:
    """A hop at ``offset`` whose inference is done, handed to the worker to publish."""
    topics = UNIT_SETTINGS.topics
    worker.tracker.register(topics.hops, 0, offset)
    message = FakeMessage(make_hop().encode(), offset=offset)
    job = HopJob(make_hop(), np.zeros(1600, np.float32), now_ms(), message)  # type: ignore[arg-type]
    future: Future[contracts.Hypothesis] = Future()
    future.set_result(infer_batch(TimedRecognizer(0.0), closed_batch("s"), ladder(Settings())[0], "w1")[0])
    worker._on_done(job, future)


def test_a_hypothesis_the_producer_refuses_is_dead_lettered_and_its_hop_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = UNIT_SETTINGS.topics
    producer = FakeProducer(refuse=(topics.hypotheses,))
    worker, _ = hop_worker(monkeypatch, producer)
    published_hypothesis(worker, 7)  # the produce raised KafkaException: no crash
    assert producer.topics() == [topics.dead_letter(topics.hops)]
    letter = contracts.DeadLetter.decode(producer.sent[0][1])
    assert "Broker: Message size too large" in letter.reason and letter.offset == 7
    producer.poll()
    assert worker.tracker.to_commit() == {(topics.hops, 0): 8}


def test_a_dead_letter_that_keeps_failing_is_retried_then_the_worker_exits_non_zero_uncommitted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = UNIT_SETTINGS.topics
    dead_letter_topic = topics.dead_letter(topics.hops)
    producer = FakeProducer(fail=(dead_letter_topic,))
    worker, consumer = hop_worker(monkeypatch, producer, [FakeMessage(b"not avro", offset=3)])
    assert worker.run() != 0
    assert producer.topics() == [dead_letter_topic] * worker_service.DEAD_LETTER_ATTEMPTS
    assert all(offset <= 3 for commit in consumer.commits for _, offset in commit)


def test_a_dead_letter_delivered_on_a_retry_commits_its_hop(monkeypatch: pytest.MonkeyPatch) -> None:
    topics = UNIT_SETTINGS.topics
    dead_letter_topic = topics.dead_letter(topics.hops)
    producer = FakeProducer(fail=(dead_letter_topic,))
    worker, _ = hop_worker(monkeypatch, producer)
    worker.tracker.register(topics.hops, 0, 3)
    worker._dead_letter(FakeMessage(b"not avro", offset=3), "undecodable", None)  # type: ignore[arg-type]
    producer.poll()
    producer.fail = ()
    time.sleep(0.01)
    worker._retry_dead_letters()
    producer.poll()
    assert producer.topics() == [dead_letter_topic] * 2
    assert worker.tracker.to_commit() == {(topics.hops, 0): 4}


def test_a_hypothesis_whose_delivery_timed_out_is_sent_again_and_then_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = UNIT_SETTINGS.topics
    producer = FakeProducer(fail=(topics.hypotheses,))
    worker, _ = hop_worker(monkeypatch, producer)
    published_hypothesis(worker, 5)
    producer.poll()
    assert producer.topics() == [topics.hypotheses] * 2 and not worker.tracker.to_commit()
    producer.fail = ()
    producer.poll()  # the second attempt's failure: a third, which goes through
    producer.poll()
    assert producer.topics() == [topics.hypotheses] * 3
    assert worker.tracker.to_commit() == {(topics.hops, 0): 6}
    assert worker._gave_up is None


@pytest.mark.parametrize("code", [KafkaError.PRODUCER_FENCED, KafkaError._FATAL])
def test_a_fatal_delivery_error_stops_the_worker_with_the_hop_uncommitted(
    monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    topics = UNIT_SETTINGS.topics
    producer = FakeProducer(fail=(topics.hypotheses,), error=KafkaError(code))
    worker, _ = hop_worker(monkeypatch, producer)
    published_hypothesis(worker, 5)
    producer.poll()
    assert producer.topics() == [topics.hypotheses], "neither sent again nor dead-lettered"
    assert worker._gave_up is not None and "failed fatally" in worker._gave_up
    assert not worker.tracker.to_commit()


def test_a_hypothesis_the_broker_refuses_for_good_is_dead_lettered_and_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topics = UNIT_SETTINGS.topics
    producer = FakeProducer(fail=(topics.hypotheses,), error=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    worker, _ = hop_worker(monkeypatch, producer)
    published_hypothesis(worker, 5)
    producer.poll()
    producer.poll()
    assert producer.topics() == [topics.hypotheses, topics.dead_letter(topics.hops)]
    letter = contracts.DeadLetter.decode(producer.sent[1][1])
    assert "hypothesis not delivered" in letter.reason and "authorization failed" in letter.reason
    assert worker.tracker.to_commit() == {(topics.hops, 0): 6}
