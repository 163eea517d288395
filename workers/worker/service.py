"""``hopline worker``: hops in from Kafka, micro-batched inference, one hypothesis out per hop.

Two threads. The main thread owns the consumer: it polls hops, hands them to the
:class:`~workers.batching.MicroBatcher`, serves producer delivery reports and commits
offsets. The inference thread runs one batch at a time through the recognizer and
publishes each hypothesis straight away (confluent-kafka's producer is thread-safe), so
``post`` starts as soon as inference ends.

Delivery is at-least-once: an offset is committed only once the hypothesis (or dead
letter) of it and of every earlier hop of its partition is acknowledged by the broker
(:class:`~workers.offsets.OffsetTracker`). SIGTERM stops fetching, runs what was already
received, flushes, commits and leaves the group.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client import Counter, Gauge, Histogram

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.control.follower import ControlFollower
from pipeline.control.ladder import Knobs
from pipeline.errors import CliError
from pipeline.kafka.clients import make_consumer, make_producer
from pipeline.kafka.dead_letters import DeadLetters
from pipeline.kafka.produce_stats import PRODUCE_STATS
from pipeline.observe.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S
from pipeline.ready import announce_ready, announce_stats
from pipeline.settings import Settings
from workers.batching.policy import Batch, BatchPolicy, MicroBatcher, Superseded
from workers.worker.offsets import OffsetTracker

log = logging.getLogger(__name__)

SERVICE = "worker"
COMMIT_INTERVAL_S = 0.1
LAG_INTERVAL_S = 1.0
POLL_TIMEOUT_S = 0.02

BATCH_WAIT = Histogram(
    "hopline_worker_batch_wait_seconds", "Worker receipt -> batch closed, per hop.", buckets=LATENCY_BUCKETS_S
)
QUEUE_WAIT = Histogram(
    "hopline_worker_queue_wait_seconds",
    "Time in Kafka before the worker took the hop + closed batch waiting for the GPU, per hop.",
    buckets=LATENCY_BUCKETS_S,
)
GPU_INFER = Histogram("hopline_worker_gpu_infer_seconds", "Model + decode time, per batch.", buckets=LATENCY_BUCKETS_S)
BATCH_SIZE = Histogram("hopline_worker_batch_size", "Hops per batch.", buckets=BATCH_SIZE_BUCKETS)
QUEUE_DEPTH = Gauge("hopline_worker_queue_depth", "Hops received and waiting for a batch.")
CONSUMER_LAG = Gauge("hopline_worker_consumer_lag_messages", "Hops in Kafka not yet fetched.", ["partition"])
SKIPPED = Counter("hopline_worker_skipped_hops_total", "Hops skipped because a newer hop of the session covers them.")
PROCESSED = Counter("hopline_worker_hops_processed_total", "Hops run through the recognizer.")
DEAD_LETTERED = Counter("hopline_worker_dead_letters_total", "Hops sent to the dead-letter topic.")


class Recognition(Protocol):
    """What the worker reads of ``workers.asr.Recognition`` (words have word, start_s, end_s, confidence)."""

    @property
    def text(self) -> str: ...

    @property
    def words(self) -> Sequence[Any]: ...

    @property
    def confidence(self) -> float: ...


class Transcriber(Protocol):
    """What the worker needs of ``workers.asr.Recognizer``."""

    def transcribe(self, windows: Sequence[np.ndarray], beam: int) -> Sequence[Recognition]: ...


@dataclass(frozen=True)
class HopJob:
    """A decoded hop on its way through the batcher, with where it came from."""

    hop: contracts.Hop
    audio: np.ndarray
    received_ts_ms: float
    message: Message

    @property
    def coordinates(self) -> tuple[str, int, int]:
        return (self.message.topic() or "", self.message.partition() or 0, self.message.offset() or 0)


class InvalidHop(ValueError):
    """A hop that decodes but cannot be run (wrong rate, odd byte count)."""


def hop_audio(hop: contracts.Hop, sample_rate: int) -> np.ndarray:
    """The hop's pcm16 little-endian window as float32 in [-1, 1)."""
    if hop.sample_rate != sample_rate:
        raise InvalidHop(f"sample_rate {hop.sample_rate}, the model needs {sample_rate}")
    audio = hop.audio
    if not audio or len(audio) % 2:
        raise InvalidHop(f"audio of {len(audio)} bytes is not a non-empty pcm16 window")
    return np.frombuffer(audio, dtype="<i2").astype(np.float32) / 32768.0


def stream_words(recognition: Recognition, window_start_ms: float) -> tuple[contracts.Word, ...]:
    """The recognizer's words with their times moved from window time to stream time (ms)."""
    return tuple(
        contracts.Word(
            word=word.word,
            start_ms=window_start_ms + word.start_s * 1000.0,
            end_ms=window_start_ms + word.end_s * 1000.0,
            confidence=float(word.confidence),
        )
        for word in recognition.words
    )


def build_hypothesis(
    job: HopJob,
    recognition: Recognition,
    *,
    beam: int,
    batch_size: int,
    control_level: int,
    worker_id: str,
    batch_closed_ts_ms: float,
    infer_start_ts_ms: float,
    infer_end_ts_ms: float,
    skipped_before: int,
) -> contracts.Hypothesis:
    """One Hypothesis record: word times moved from window time to stream time."""
    hop = job.hop
    rate = hop.sample_rate
    window_start_ms = hop.window_start_sample * 1000.0 / rate
    return contracts.Hypothesis(
        session_id=hop.session_id,
        hop_seq=hop.hop_seq,
        text=recognition.text,
        words=stream_words(recognition, window_start_ms),
        confidence=float(recognition.confidence),
        window_start_ms=window_start_ms,
        window_end_ms=window_start_ms + len(job.audio) * 1000.0 / rate,
        is_final=hop.is_final,
        beam=beam,
        window_secs=hop.window_secs,
        batch_size=batch_size,
        control_level=control_level,
        worker_id=worker_id,
        first_capture_ts_ms=hop.first_capture_ts_ms,
        ready_ts_ms=hop.ready_ts_ms,
        hop_published_ts_ms=hop.published_ts_ms,
        received_ts_ms=job.received_ts_ms,
        batch_closed_ts_ms=batch_closed_ts_ms,
        infer_start_ts_ms=infer_start_ts_ms,
        infer_end_ts_ms=infer_end_ts_ms,
        skipped_before=skipped_before,
    )


def infer_batch(
    recognizer: Transcriber, batch: Batch[HopJob], knobs: Knobs, worker_id: str, fault_slowdown: float = 1.0
) -> list[contracts.Hypothesis]:
    """One recognizer call for a closed batch; one hypothesis per hop with every latency timestamp.

    ``fault_slowdown`` (a TEST KNOB, 1 = off) sleeps (X-1) x the inference time afterwards and
    counts the sleep as inference, so the worker behaves like a GPU X times slower.
    """
    infer_start = now_ms()
    recognitions = recognizer.transcribe([job.audio for job in batch.items], knobs.beam)
    infer_end = now_ms()
    if fault_slowdown > 1.0:
        time.sleep((fault_slowdown - 1.0) * (infer_end - infer_start) / 1000.0)
        infer_end = now_ms()
    return [
        build_hypothesis(
            entry.item,
            recognition,
            beam=knobs.beam,
            batch_size=len(batch),
            control_level=knobs.level,
            worker_id=worker_id,
            batch_closed_ts_ms=max(entry.closed_at * 1000.0, entry.item.received_ts_ms),
            infer_start_ts_ms=infer_start,
            infer_end_ts_ms=infer_end,
            skipped_before=entry.skipped_before,
        )
        for entry, recognition in zip(batch.entries, recognitions, strict=True)
    ]


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class HopWorker:
    """One worker in the ``<app>-worker`` consumer group on the hops topic."""

    def __init__(self, settings: Settings, recognizer: Transcriber) -> None:
        self.settings = settings
        self.recognizer = recognizer
        self.worker_id = settings.worker.worker_id or default_worker_id()
        self.group_id = f"{settings.app_id}-worker"
        self.tracker = OffsetTracker()
        self.producer: Producer = make_producer(settings)
        self.dead_letters = DeadLetters(settings, self.producer, SERVICE)
        self.consumer = make_consumer(settings, self.group_id)
        self.control = ControlFollower(settings)
        policy: BatchPolicy[HopJob] = BatchPolicy(
            max_batch_size=settings.worker.max_batch_size,
            max_latency_s=settings.worker.max_latency_ms / 1000.0,
            coalesce_stale=settings.worker.coalesce_stale_hops,
            clock=time.time,
            active_horizon_s=settings.worker.active_session_horizon_ms / 1000.0,
            hop_period_s=settings.audio.hop_ms / 1000.0,
            arrival_slack_s=settings.worker.hop_arrival_slack_ms / 1000.0,
        )
        self.batcher: MicroBatcher[HopJob, contracts.Hypothesis] = MicroBatcher(policy, self._run_batch)
        self._ready_logged = False
        self._assigned: set[tuple[str, int]] = set()

    def run(self) -> int:
        """Consume until SIGTERM/Ctrl-C, then drain, commit and close. Returns the exit code."""
        self.control.start()
        self.batcher.start()
        self.consumer.subscribe(
            [self.settings.topics.hops], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        last_commit = last_lag = time.monotonic()
        try:
            while True:
                message = self.consumer.poll(POLL_TIMEOUT_S)
                if message is not None:
                    self._handle(message)
                self.producer.poll(0)
                now = time.monotonic()
                if now - last_commit >= COMMIT_INTERVAL_S:
                    self._commit(asynchronous=True)
                    last_commit = now
                if now - last_lag >= LAG_INTERVAL_S:
                    self._update_lag()
                    last_lag = now
                QUEUE_DEPTH.set(self.batcher.depth)
        except KeyboardInterrupt:
            log.info("worker %s stopping: draining received hops", self.worker_id)
        finally:
            self._shutdown()
            announce_stats(SERVICE, PRODUCE_STATS.summary())
        return 0

    def _shutdown(self) -> None:
        self.batcher.close()
        remaining = self.producer.flush(10.0)
        if remaining:
            log.error("%d hypotheses not acknowledged at shutdown; their hops stay uncommitted", remaining)
        self._commit(asynchronous=False)
        self.consumer.close()
        self.control.close()
        log.info("worker %s stopped", self.worker_id)

    def _handle(self, message: Message) -> None:
        received_ts_ms = now_ms()
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("hops topic: %s", error)
            return
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        self.tracker.register(topic, partition, offset)
        try:
            hop = contracts.Hop.decode(message.value())
            job = HopJob(hop, hop_audio(hop, self.settings.audio.sample_rate), received_ts_ms, message)
        except (contracts.ContractError, InvalidHop) as exc:
            self._dead_letter(message, str(exc), exc)
            return
        future = self.batcher.submit(
            hop.session_id, hop.hop_seq, hop.is_final, job, received_at=received_ts_ms / 1000.0
        )
        future.add_done_callback(lambda done: self._on_done(job, done))

    def _run_batch(self, batch: Batch[HopJob]) -> list[contracts.Hypothesis]:
        """Runs on the inference thread: the batch through the recognizer at the beam in force, then metrics."""
        hypotheses = infer_batch(
            self.recognizer, batch, self.control.knobs, self.worker_id, self.settings.worker.fault_slowdown
        )
        for hypothesis in hypotheses:
            received, closed = hypothesis.received_ts_ms, hypothesis.batch_closed_ts_ms
            kafka_wait = max(0.0, received - hypothesis.hop_published_ts_ms)
            BATCH_WAIT.observe((closed - received) / 1000.0)
            QUEUE_WAIT.observe((kafka_wait + hypothesis.infer_start_ts_ms - closed) / 1000.0)
        if hypotheses:
            GPU_INFER.observe((hypotheses[0].infer_end_ts_ms - hypotheses[0].infer_start_ts_ms) / 1000.0)
        BATCH_SIZE.observe(len(batch))
        PROCESSED.inc(len(batch))
        return hypotheses

    def _on_done(self, job: HopJob, future: Future[contracts.Hypothesis]) -> None:
        """A hop's fate is known: publish its hypothesis, count its skip, or dead-letter it."""
        topic, partition, offset = job.coordinates
        error = future.exception()
        if isinstance(error, Superseded):
            SKIPPED.inc()
            self.tracker.done(topic, partition, offset)
            return
        if error is not None:
            log.error("inference failed for %s#%s: %s", job.hop.session_id, job.hop.hop_seq, error)
            self._dead_letter(job.message, f"inference failed: {error}", error)
            return
        try:
            value = future.result().encode()
        except contracts.ContractError as exc:
            self._dead_letter(job.message, str(exc), exc)
            return
        self._produce(job.hop.session_id, value, (topic, partition, offset))

    def _produce(self, session_id: str, value: bytes, source: tuple[str, int, int]) -> None:
        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.tracker.done(*source)
            else:
                log.warning("hypothesis for %s@%s not delivered (%s); retrying", source, session_id, error)
                self._produce(session_id, value, source)

        while True:
            try:
                self.producer.produce(
                    self.settings.topics.hypotheses, key=session_id, value=value, on_delivery=on_delivery
                )
                return
            except BufferError:
                self.producer.poll(0.05)

    def _dead_letter(self, message: Message, reason: str, error: BaseException | None) -> None:
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0

        def on_delivery(delivery_error: KafkaError | None, _message: Message) -> None:
            if delivery_error is None:
                self.tracker.done(topic, partition, offset)
            else:
                log.error("dead letter for %s[%d]@%d not delivered: %s", topic, partition, offset, delivery_error)

        DEAD_LETTERED.inc()
        self.dead_letters.publish(message, reason, error, on_delivery=on_delivery)

    def _commit(self, asynchronous: bool) -> None:
        positions = {key: pos for key, pos in self.tracker.to_commit().items() if key in self._assigned}
        if not positions:
            return
        offsets = [TopicPartition(topic, partition, position) for (topic, partition), position in positions.items()]
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            log.warning("offset commit failed (hops will be replayed): %s", exc)
            return
        self.tracker.committed(positions)

    def _update_lag(self) -> None:
        for topic, partition in list(self._assigned):
            try:
                _low, high = self.consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
                position = self.consumer.position([TopicPartition(topic, partition)])[0].offset
            except KafkaException:
                continue
            if high >= 0 and position >= 0:
                CONSUMER_LAG.labels(partition=str(partition)).set(max(0, high - position))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        log.info("assigned %s", sorted(tp.partition for tp in partitions))
        if not self._ready_logged:
            self._ready_logged = True
            log.info(
                "worker %s ready: consuming %s in group %s", self.worker_id, self.settings.topics.hops, self.group_id
            )
            announce_ready(SERVICE)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit(asynchronous=False)
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.discard((tp.topic, tp.partition))
            self.tracker.forget(tp.topic, tp.partition)
        log.info("revoked %s", sorted(tp.partition for tp in partitions))


def load_recognizer(settings: Settings) -> Transcriber:
    """The shipped recognizer on the configured device (CUDA with autocast when there, else CPU)."""
    from pathlib import Path

    from workers.asr import Recognizer

    worker = settings.worker
    checkpoint = Path(worker.checkpoint) if worker.checkpoint else None
    recognizer: Transcriber = Recognizer.load(checkpoint=checkpoint, device=worker.device, threads=worker.torch_threads)
    return recognizer


def warm_up(recognizer: Transcriber, settings: Settings) -> None:
    """One throwaway call so the first real batch does not pay for lazy initialisation."""
    silence = np.zeros(int(settings.audio.window_secs * settings.audio.sample_rate), dtype=np.float32)
    try:
        recognizer.transcribe([silence, silence], settings.worker.beam)
    except ValueError as exc:
        raise CliError(f"recognizer refuses the worker settings: {exc}") from exc


def check_topics(settings: Settings) -> None:
    """Fail fast, in one line, when Kafka is unreachable or the topics were never created."""
    topics = settings.topics
    needed = [topics.hops, topics.hypotheses, topics.control, topics.dead_letter(topics.hops)]
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    try:
        existing = admin.list_topics(timeout=10).topics
    except KafkaException as exc:
        raise CliError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}") from exc
    missing = [name for name in needed if name not in existing]
    if missing:
        raise CliError(f"missing topics {', '.join(missing)}: run `hopline topics create` first")


def run_worker(settings: Settings) -> int:
    check_topics(settings)
    started = time.monotonic()
    recognizer = load_recognizer(settings)
    warm_up(recognizer, settings)
    log.info("recognizer loaded and warmed up in %.1f s", time.monotonic() - started)
    from pipeline.observe.metrics import serve_metrics

    serve_metrics(settings, SERVICE)
    return HopWorker(settings, recognizer).run()
