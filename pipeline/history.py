"""Reading a topic's history: from the beginning to the end it had when the read started.

ListOffsets-by-time does not work on the embedded broker, so time filters are applied to the
records' own timestamps after reading; ``assign()`` avoids a consumer-group join.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from pipeline.errors import CliError
from pipeline.kafka import consumer_config
from pipeline.settings import Settings


def read_history(settings: Settings, topic: str, timeout_s: float = 30.0) -> Iterator[Message]:
    """Every message of ``topic`` up to its current end offsets, partition by partition interleaved."""
    consumer = Consumer(consumer_config(settings, group_id=f"{settings.app_id}-history", **{"fetch.wait.max.ms": 100}))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise CliError(f"topic {topic} does not exist on {settings.kafka.bootstrap_servers}")
        remaining: dict[int, int] = {}
        starts = []
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                remaining[partition] = high
                starts.append(TopicPartition(topic, partition, low))
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise CliError(f"reading {topic} took longer than {timeout_s:.0f} s")
            for message in consumer.consume(num_messages=1000, timeout=0.2):
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise CliError(f"reading {topic}: {error}")
                    continue
                partition, offset = message.partition() or 0, message.offset() or 0
                end = remaining.get(partition)
                if end is None or offset >= end:
                    continue
                yield message
                if offset >= end - 1:
                    del remaining[partition]
    finally:
        consumer.close()
