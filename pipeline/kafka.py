"""Kafka plumbing in one place: client configs, topic creation, dead-letter publishing.

Everything here speaks plain Kafka through confluent-kafka and works unchanged against
Apache Kafka and the embedded broker; broker differences live in settings only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline import contracts
from pipeline.errors import CliError
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: librdkafka's own messages (connection errors, rebalances) go through Python logging like
#: everything else instead of straight to stderr; the client delivers them on poll/flush.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


def now_ms() -> float:
    """Wall-clock ms since epoch: the one clock every event timestamp uses."""
    return time.time() * 1000.0


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Idempotent, low-linger producer keyed with murmur2 like the Java and aiokafka clients."""
    kafka = settings.kafka
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "enable.idempotence": True,
        "acks": kafka.acks if kafka.acks != "0" else "all",
        "linger.ms": kafka.linger_ms,
        "partitioner": kafka.partitioner,
        "compression.type": "none",
        "message.max.bytes": 4 * 1024 * 1024,
        "logger": LIBRDKAFKA_LOG,
    }
    config.update(overrides)
    return config


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """Group consumer with manual commits (at-least-once) and a small fetch wait."""
    kafka = settings.kafka
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": kafka.fetch_wait_max_ms,
        "fetch.min.bytes": 1,
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": kafka.heartbeat_interval_ms,
        "partition.assignment.strategy": "cooperative-sticky",
        "logger": LIBRDKAFKA_LOG,
    }
    config.update(overrides)
    return config


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    return Producer(producer_config(settings, **overrides))


def make_consumer(settings: Settings, group_id: str, topics: Iterable[str], **overrides: Any) -> Consumer:
    consumer = Consumer(consumer_config(settings, group_id, **overrides))
    consumer.subscribe(list(topics))
    return consumer


def pipeline_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Every pipeline topic with its topic-level config.

    Frames, hops, hypotheses, transcripts and latency events are keyed by session id and
    share one partition count so a session sits on the same partition number everywhere.
    The control topic is compacted: only the newest command per scope matters.
    """
    topics = settings.topics
    keyed = [topics.frames, topics.hops, topics.hypotheses, topics.transcripts, topics.latency]
    consumed = (topics.frames, topics.hops, topics.hypotheses, topics.latency)
    dead_letters = [topics.dead_letter(t) for t in consumed]
    spec: dict[str, dict[str, str]] = {name: {} for name in keyed + dead_letters}
    spec[topics.control] = {"cleanup.policy": "compact"}
    return spec


def create_topics(settings: Settings, timeout_s: float = 10.0) -> list[str]:
    """Create every pipeline topic that does not exist yet; returns the names created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise CliError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}") from exc
    wanted = [
        NewTopic(
            name,
            num_partitions=settings.topics.partitions,
            replication_factor=settings.kafka.replication_factor,
            config=config,
        )
        for name, config in pipeline_topics(settings).items()
        if name not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise CliError(f"cannot create topic {name}: {exc}") from exc
    log.info("created topics: %s", ", ".join(created))
    return created


class DeadLetters:
    """Publishes unprocessable messages, whole and with the reason, to ``<topic>.dlq``."""

    def __init__(self, settings: Settings, producer: Producer, service: str) -> None:
        self._settings = settings
        self._producer = producer
        self._service = service

    def publish(
        self,
        message: Message,
        reason: str,
        error: BaseException | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        """``on_delivery`` lets at-least-once consumers commit the source offset only once the letter is acked."""
        source = message.topic() or "unknown"
        record = {
            "source_topic": source,
            "partition": message.partition() or 0,
            "offset": message.offset() or 0,
            "key": message.key(),
            "value": message.value(),
            "reason": reason,
            "error_type": type(error).__name__ if error else "invalid",
            "service": self._service,
            "failed_ts_ms": now_ms(),
        }
        log.warning("dead-lettered %s[%s]@%s: %s", source, record["partition"], record["offset"], reason)
        self._producer.produce(
            self._settings.topics.dead_letter(source),
            key=message.key(),
            value=contracts.DEAD_LETTER.encode(record),
            on_delivery=on_delivery,
        )
