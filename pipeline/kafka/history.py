"""Reading a topic's history: from the beginning until the reader has caught up.

ListOffsets-by-time does not work on the embedded broker, so time filters are applied to the
records' own timestamps after reading. Its watermark query is not trustworthy either (the
high watermark it reports can lag the last record), so the end is where each partition's
fetch reports end-of-partition. ``assign()`` avoids a consumer-group join.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from pipeline.errors import CliError
from pipeline.kafka.clients import consumer_config
from pipeline.settings import Settings


def read_history(settings: Settings, topic: str, timeout_s: float = 30.0) -> Iterator[Message]:
    """Every message of ``topic`` from the first offset until all partitions have been read to their end."""
    consumer = Consumer(
        consumer_config(
            settings,
            group_id=f"{settings.app_id}-history",
            **{"fetch.wait.max.ms": 50, "enable.partition.eof": True},
        )
    )
    try:
        try:
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        except KafkaException as exc:
            raise CliError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc.args[0].str()}") from exc
        if metadata is None or metadata.error is not None:
            raise CliError(f"topic {topic} does not exist on {settings.kafka.bootstrap_servers}")
        pending = set(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise CliError(f"reading {topic} took longer than {timeout_s:.0f} s")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                error = message.error()
                if error is None:
                    yield message
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition() or 0)
                else:
                    raise CliError(f"reading {topic}: {error}")
    finally:
        consumer.close()
