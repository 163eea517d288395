"""``hopline worker``: hops in from Kafka, micro-batched inference, one hypothesis out per hop run.

Under load the controller's knobs thin the work: at an emit interval of n hops the worker runs
only every n-th non-final hop of a session (:class:`~workers.batching.policy.InferenceStride`,
staggered across sessions); the beam and the model tier go with each batch.

Two threads. The main thread owns the consumer: it polls hops, hands them to the
:class:`~workers.batching.MicroBatcher`, serves producer delivery reports and commits
offsets. The inference thread runs one batch at a time through the recognizer and
publishes each hypothesis straight away (confluent-kafka's producer is thread-safe), so
``post`` starts as soon as inference ends.

Delivery is at-least-once: an offset is committed only once the hypothesis (or dead
letter) of it and of every earlier hop of its partition is acknowledged by the broker
(:class:`~workers.offsets.OffsetTracker`). SIGTERM stops fetching, runs what was already
received, flushes, commits and leaves the group.

A hypothesis the producer refuses outright (``KafkaException``, e.g. too large) or the broker refuses
for good (e.g. not authorized) is that hop's failure, not the process's: the hop is dead-lettered with
the reason. One whose delivery timed out is sent again. A fatal producer error (the producer is fenced
and can send nothing more) makes the worker exit non-zero with the hop uncommitted, for a replay. A dead letter whose
delivery fails is sent again ``DEAD_LETTER_ATTEMPTS`` times in all, with doubling backoff; if
it still fails the worker exits non-zero with the hop uncommitted, so its next run replays it.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

from pipeline import contracts
from pipeline.clock import Clock, now_ms
from pipeline.control.costs import inference_stride
from pipeline.control.follower import ControlFollower
from pipeline.control.ladder import Knobs
from pipeline.errors import CliError
from pipeline.kafka.clients import make_admin, make_consumer, make_producer
from pipeline.kafka.dead_letters import DeadLetters
from pipeline.kafka.produce_stats import PRODUCE_STATS
from pipeline.observe.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS_S
from pipeline.ready import announce_ready, announce_stats
from pipeline.settings import Settings
from workers.batching.policy import Batch, BatchPolicy, InferenceStride, MicroBatcher, Superseded
from workers.worker.offsets import OffsetTracker

if TYPE_CHECKING:
    from workers.asr import Recognizer

log = logging.getLogger(__name__)

SERVICE = "worker"
COMMIT_INTERVAL_S = 0.1
LAG_INTERVAL_S = 1.0
POLL_TIMEOUT_S = 0.02
#: Rounds of the start-up knob measurement: ~3.5 s on the 2-core CPU; 5 rounds left savings under ~10% noise.
KNOB_COST_RUNS = 10
#: Deliveries tried per dead letter before the worker gives up and exits for a replay.
DEAD_LETTER_ATTEMPTS = 5
#: Wait before the first re-send of a failed dead letter; doubles with each further attempt.
DEAD_LETTER_BACKOFF_S = 0.5
#: Delivery errors after which this producer sends nothing more (a delivery report does not carry
#: librdkafka's fatal flag, so they are named): only a new producer, i.e. a replay, goes on.
FATAL_DELIVERY_ERRORS = frozenset(
    {KafkaError._FATAL, KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)
#: Delivery errors worth sending the hypothesis again for: the broker did not answer in time or was
#: unreachable (librdkafka already retried within ``kafka.delivery_timeout_ms``, which paces the loop).
TRANSIENT_DELIVERY_ERRORS = frozenset(
    {KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}
)

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
STRIDED = Counter(
    "hopline_worker_strided_hops_total", "Non-final hops not run at an inference stride above 1 (emit 320 ms and up)."
)
PROCESSED = Counter("hopline_worker_hops_processed_total", "Hops run through the recognizer.")
DEAD_LETTERED = Counter("hopline_worker_dead_letters_total", "Hops sent to the dead-letter topic.")
DEAD_LETTER_FAILURES = Counter(
    "hopline_worker_dead_letter_failures_total", "Dead letters whose delivery failed (each is retried)."
)


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

    def transcribe(self, windows: Sequence[np.ndarray], beam: int, tier: str) -> Sequence[Recognition]: ...


@dataclass(frozen=True)
class HopJob:
    """A decoded hop on its way through the batcher, with where it came from."""

    hop: contracts.Hop
    audio: np.ndarray
    received_ts_ms: float
    message: Message
    #: Hops of the session not run at an inference stride just before this one (its hypothesis carries them).
    strided_before: int = 0

    @property
    def coordinates(self) -> tuple[str, int, int]:
        return (self.message.topic() or "", self.message.partition() or 0, self.message.offset() or 0)


class InvalidHop(ValueError):
    """A hop that decodes but cannot be run (wrong rate, odd byte count)."""


def hop_audio(hop: contracts.Hop, sample_rate: int, max_samples: int) -> np.ndarray:
    """The hop's pcm16 little-endian window as float32 in [-1, 1).

    A window longer than ``max_samples`` (the rolling window) is refused: a forged 1 MB hop would
    otherwise run as a 30 s window and stall the batch it lands in.
    """
    if hop.sample_rate != sample_rate:
        raise InvalidHop(f"sample_rate {hop.sample_rate}, the model needs {sample_rate}")
    audio = hop.audio
    if not audio or len(audio) % 2:
        raise InvalidHop(f"audio of {len(audio)} bytes is not a non-empty pcm16 window")
    if len(audio) // 2 > max_samples:
        raise InvalidHop(f"audio of {len(audio) // 2} samples is longer than the {max_samples}-sample window")
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
        strided_before=job.strided_before,
    )


def infer_batch(
    recognizer: Transcriber, batch: Batch[HopJob], knobs: Knobs, worker_id: str, fault_slowdown: float = 1.0
) -> list[contracts.Hypothesis]:
    """One recognizer call for a closed batch; one hypothesis per hop with every latency timestamp.

    ``fault_slowdown`` (a TEST KNOB, 1 = off) sleeps (X-1) x the inference time afterwards and
    counts the sleep as inference, so the worker behaves like a GPU X times slower.
    """
    infer_start = now_ms()
    recognitions = recognizer.transcribe([job.audio for job in batch.items], knobs.beam, knobs.tier)
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


class FaultSlowdown:
    """The TEST KNOB's current factor: ``fault_slowdown``, or the number in ``fault_slowdown_file`` while it exists."""

    REREAD_S = 0.5

    def __init__(self, factor: float, path: str | None, clock: Clock = time.monotonic) -> None:
        self._default = factor
        self._path = Path(path) if path else None
        self._clock = clock
        self._factor = factor
        self._read_at = -math.inf

    def factor(self) -> float:
        if self._path is None:
            return self._default
        now = self._clock()
        if now - self._read_at >= self.REREAD_S:
            self._read_at = now
            try:
                value = float(self._path.read_text().strip())
            except (OSError, ValueError):
                value = self._default
            self._factor = value if math.isfinite(value) and value >= 1.0 else self._default
        return self._factor


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class HopWorker:
    """One worker in the ``<app>-worker`` consumer group on the hops topic."""

    def __init__(
        self, settings: Settings, recognizer: Transcriber, capabilities: contracts.WorkerCapabilities | None = None
    ) -> None:
        self.settings = settings
        self.recognizer = recognizer
        self.capabilities = capabilities
        self.worker_id = settings.worker.worker_id or default_worker_id()
        self.group_id = f"{settings.app_id}-worker"
        self.tracker = OffsetTracker()
        self.max_window_samples = round(settings.audio.window_secs * settings.audio.sample_rate)
        # A client id per worker: broker quotas, ACL audit logs and request metrics can tell workers apart.
        self.producer: Producer = make_producer(settings, **{"client.id": f"hopline-worker-{self.worker_id}"})
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
            cover_hops=int(settings.audio.min_window_secs * 1000) // settings.audio.hop_ms,
        )
        self.batcher: MicroBatcher[HopJob, contracts.Hypothesis] = MicroBatcher(policy, self._run_batch)
        self.stride = InferenceStride()
        self.fault_slowdown = FaultSlowdown(settings.worker.fault_slowdown, settings.worker.fault_slowdown_file)
        self._ready_logged = False
        self._assigned: set[tuple[str, int]] = set()
        # Failed dead letters waiting to be sent again: (due, tie-break, attempt, message, reason, error).
        self._retries: list[tuple[float, int, int, Message, str, BaseException | None]] = []
        self._retries_lock = threading.Lock()
        self._retry_count = 0
        self._gave_up: str | None = None

    def run(self) -> int:
        """Consume until SIGTERM/Ctrl-C, then drain, commit and close. Returns the exit code."""
        self.control.start()
        self.batcher.start()
        self._publish_capabilities()
        self.consumer.subscribe(
            [self.settings.topics.hops], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        last_commit = last_lag = time.monotonic()
        try:
            while self._gave_up is None:
                message = self.consumer.poll(POLL_TIMEOUT_S)
                if message is not None:
                    self._handle(message)
                self.producer.poll(0)
                self._retry_dead_letters()
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
        if self._gave_up is not None:
            log.error("worker %s exits for a replay: %s", self.worker_id, self._gave_up)
            return 1
        return 0

    def _publish_capabilities(self) -> None:
        """Tell the controller what each knob saves here; the worker runs on without it (logged)."""
        if self.capabilities is None:
            return
        record = replace(self.capabilities, worker_id=self.worker_id)
        try:
            self.producer.produce(self.settings.topics.capabilities, key=self.worker_id, value=record.encode())
        except (BufferError, KafkaException) as exc:
            log.warning("capabilities not published (the controller keeps default prices): %s", exc)
            return
        log.info("capabilities published: %s", record.savings)

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
        audio = self.settings.audio
        try:
            hop = contracts.Hop.decode(message.value())
            job = HopJob(hop, hop_audio(hop, audio.sample_rate, self.max_window_samples), received_ts_ms, message)
        except (contracts.ContractError, InvalidHop) as exc:
            self._dead_letter(message, str(exc), exc)
            return
        stride = inference_stride(self.control.knobs, self.settings.audio.hop_ms)
        if not self.stride.runs(hop.session_id, hop.hop_seq, hop.is_final, stride):
            STRIDED.inc()
            self.tracker.done(topic, partition, offset)
            return
        job = replace(job, strided_before=self.stride.take_strided(hop.session_id))
        future = self.batcher.submit(
            hop.session_id, hop.hop_seq, hop.is_final, job, received_at=received_ts_ms / 1000.0
        )
        future.add_done_callback(lambda done: self._on_done(job, done))

    def _run_batch(self, batch: Batch[HopJob]) -> list[contracts.Hypothesis]:
        """Runs on the inference thread: the batch through the recognizer at the beam in force, then metrics."""
        hypotheses = infer_batch(
            self.recognizer, batch, self.control.knobs, self.worker_id, self.fault_slowdown.factor()
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
            self.stride.carry(job.hop.session_id, job.strided_before)
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
        self._produce(job, value)

    def _produce(self, job: HopJob, value: bytes) -> None:
        session_id, source = job.hop.session_id, job.coordinates

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                self.tracker.done(*source)
            elif error.fatal() or error.code() in FATAL_DELIVERY_ERRORS:
                # The producer is unusable (e.g. fenced after a timeout's epoch bump): replay from the commit.
                self._give_up(f"producer failed fatally delivering {source}@{session_id}: {error}")
            elif error.retriable() or error.code() in TRANSIENT_DELIVERY_ERRORS:
                log.warning("hypothesis for %s@%s not delivered (%s); retrying", source, session_id, error)
                self._produce(job, value)
            else:
                self._dead_letter(job.message, f"hypothesis not delivered: {error}", KafkaException(error))

        while True:
            try:
                self.producer.produce(
                    self.settings.topics.hypotheses, key=session_id, value=value, on_delivery=on_delivery
                )
                return
            except BufferError:
                self.producer.poll(0.05)
            except KafkaException as exc:
                self._dead_letter(job.message, f"hypothesis refused by the producer: {exc}", exc)
                return

    def _dead_letter(self, message: Message, reason: str, error: BaseException | None, attempt: int = 1) -> None:
        """Send the hop's dead letter; a failed delivery is queued for :meth:`_retry_dead_letters`."""
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0

        def failed(why: object) -> None:
            DEAD_LETTER_FAILURES.inc()
            log.error(
                "dead letter for %s[%d]@%d not delivered (attempt %d of %d): %s",
                topic,
                partition,
                offset,
                attempt,
                DEAD_LETTER_ATTEMPTS,
                why,
            )
            if attempt >= DEAD_LETTER_ATTEMPTS:
                self._give_up(f"dead letter for {topic}[{partition}]@{offset} not delivered: {why}")
                return
            due = time.monotonic() + DEAD_LETTER_BACKOFF_S * 2 ** (attempt - 1)
            with self._retries_lock:
                self._retry_count += 1
                heapq.heappush(self._retries, (due, self._retry_count, attempt + 1, message, reason, error))

        def on_delivery(delivery_error: KafkaError | None, _message: Message) -> None:
            if delivery_error is None:
                self.tracker.done(topic, partition, offset)
            else:
                failed(delivery_error)

        if attempt == 1:
            DEAD_LETTERED.inc()
        try:
            self.dead_letters.publish(message, reason, error, on_delivery=on_delivery)
        except (BufferError, KafkaException) as exc:
            failed(exc)

    def _give_up(self, why: str) -> None:
        """Stop the main loop; the first reason is the one reported (later ones are its consequences)."""
        if self._gave_up is None:
            self._gave_up = why

    def _retry_dead_letters(self) -> None:
        """Re-send the failed dead letters whose backoff is over (main thread)."""
        now = time.monotonic()
        while True:
            with self._retries_lock:
                if not self._retries or self._retries[0][0] > now:
                    return
                _due, _order, attempt, message, reason, error = heapq.heappop(self._retries)
            self._dead_letter(message, reason, error, attempt)

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


def load_recognizer(settings: Settings) -> Recognizer:
    """The configured recognizer backend (torch or onnx) on the configured device."""
    from workers.asr.backends import recognizer_from_settings

    return recognizer_from_settings(settings.worker)


def warm_up(recognizer: Transcriber, settings: Settings) -> None:
    """One throwaway call so the first real batch does not pay for lazy initialisation."""
    silence = np.zeros(int(settings.audio.window_secs * settings.audio.sample_rate), dtype=np.float32)
    try:
        recognizer.transcribe([silence, silence], settings.worker.beam, "full")
    except ValueError as exc:
        raise CliError(f"recognizer refuses the worker settings: {exc}") from exc


def check_topics(settings: Settings) -> None:
    """Fail fast, in one line, when Kafka is unreachable or the topics were never created."""
    topics = settings.topics
    needed = [topics.hops, topics.hypotheses, topics.control, topics.dead_letter(topics.hops)]
    admin = make_admin(settings)
    try:
        existing = admin.list_topics(timeout=10).topics
    except KafkaException as exc:
        raise CliError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}") from exc
    missing = [name for name in needed if name not in existing]
    if missing:
        raise CliError(f"missing topics {', '.join(missing)}: run `hopline topics create` first")


def measure_capabilities(recognizer: Recognizer, settings: Settings) -> contracts.WorkerCapabilities:
    """What each degradation knob saves on this engine and device (~3.5 s on the 2-core CPU)."""
    from workers.asr import measure_knob_costs

    audio, worker = settings.audio, settings.worker
    for tier in recognizer.tiers_available():
        recognizer.prepare_tier(tier)
    costs = measure_knob_costs(
        recognizer,
        sample_rate=audio.sample_rate,
        window_secs=audio.window_secs,
        min_window_secs=audio.min_window_secs,
        batch_size=worker.max_batch_size,
        runs=KNOB_COST_RUNS,
    )
    return contracts.WorkerCapabilities(
        worker_id=worker.worker_id or default_worker_id(),
        device=str(recognizer.device),
        measured_ts_ms=now_ms(),
        batch_size=worker.max_batch_size,
        base_batch_ms=costs.base_ms,
        savings=dict(costs.saving),
        tiers=tuple(recognizer.tiers_available()),
    )


def run_worker(settings: Settings) -> int:
    check_topics(settings)
    started = time.monotonic()
    recognizer = load_recognizer(settings)
    warm_up(recognizer, settings)
    log.info("recognizer loaded and warmed up in %.1f s", time.monotonic() - started)
    started = time.monotonic()
    capabilities = measure_capabilities(recognizer, settings)
    log.info(
        "knob savings measured in %.1f s: batch %d at full quality %.1f ms, savings %s",
        time.monotonic() - started,
        capabilities.batch_size,
        capabilities.base_batch_ms,
        {knob: round(saving, 3) for knob, saving in capabilities.savings.items()},
    )
    from pipeline.observe.metrics import serve_metrics

    serve_metrics(settings, SERVICE)
    return HopWorker(settings, recognizer, capabilities).run()
