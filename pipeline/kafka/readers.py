"""Reading topics from the beginning: the one way every reader, follower and report does it.

Readers ``assign()`` partitions instead of joining a consumer group: assignment is immediate
(a group join takes seconds) and every reader sees every partition. The end of a topic is where
each partition's fetch reports end-of-partition, not what ListOffsets says: the embedded broker's
ListOffsets under-reports the high watermark, and fetch responses carry the right one on any broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from pipeline.errors import CliError
from pipeline.kafka.clients import consumer_config
from pipeline.settings import Settings

Partition = tuple[str, int]

log = logging.getLogger(__name__)


class ReadIncomplete(CliError):
    """Some partitions were not read to their end in time; ``pending`` names them."""

    def __init__(self, message: str, pending: Iterable[Partition]) -> None:
        super().__init__(message)
        self.pending = sorted(pending)


def topic_partitions(consumer: Consumer, topics: Iterable[str], timeout_s: float = 10.0) -> list[Partition]:
    """Every (topic, partition) of ``topics``; a clear error if Kafka is unreachable or a topic is missing."""
    found: list[Partition] = []
    for topic in topics:
        try:
            metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            raise CliError(f"cannot reach Kafka: {exc.args[0].str()}") from exc
        if metadata is None or metadata.error is not None:
            raise CliError(f"topic {topic} does not exist")
        found += [(topic, partition) for partition in sorted(metadata.partitions)]
    return found


def open_reader(
    settings: Settings, name: str, topics: Iterable[str] = (), partitions: Iterable[Partition] = (), **overrides: Any
) -> Consumer:
    """A consumer assigned to ``topics`` (all their partitions) and ``partitions``, from the first offset."""
    consumer = Consumer(consumer_config(settings, f"{settings.app_id}-{name}", **overrides))
    try:
        wanted = [*topic_partitions(consumer, topics), *partitions]
    except BaseException:
        consumer.close()
        raise
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for topic, partition in wanted])
    return consumer


def read_to_end(
    settings: Settings,
    name: str,
    topics: Iterable[str] = (),
    partitions: Iterable[Partition] = (),
    timeout_s: float = 30.0,
) -> Iterator[Message]:
    """Every message from the first offset until each partition has been read to its end.

    Raises :class:`ReadIncomplete` (after yielding what it read) when ``timeout_s`` runs out first.
    """
    overrides = {"fetch.wait.max.ms": 50, "enable.partition.eof": True}
    consumer = open_reader(settings, name, topics, partitions, **overrides)
    try:
        pending = {(tp.topic, tp.partition) for tp in consumer.assignment()}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise ReadIncomplete(f"read to the end took longer than {timeout_s:.0f} s", pending)
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                error = message.error()
                if error is None:
                    yield message
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((message.topic() or "", message.partition() or 0))
                else:
                    raise CliError(f"reading {message.topic()}: {error}")
    finally:
        consumer.close()


def poll_record(consumer: Consumer, timeout_s: float, what: str) -> Message | None:
    """The next record, or None after ``timeout_s``, at a partition's end or on an error (logged with ``what``).

    For followers that keep reading until stopped: one loop shape for all of them.
    """
    message = consumer.poll(timeout_s)
    if message is None:
        return None
    error = message.error()
    if error is not None:
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("%s: %s", what, error)
        return None
    return message
