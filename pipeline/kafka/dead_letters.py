"""Dead letters: a message a service cannot process goes, whole and with the reason, to ``<topic>.dlq``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.settings import Settings

log = logging.getLogger(__name__)


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
