"""Dead letters: a message a service cannot process goes, whole and with the reason, to ``<topic>.dlq``."""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def dead_letter_record(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    error: BaseException | None,
    service: str,
) -> bytes:
    """The encoded ``DeadLetter`` record: the original message, whole, and why it failed."""
    return contracts.DeadLetter(
        source_topic=source_topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        reason=reason,
        error_type=type(error).__name__ if error else "invalid",
        service=service,
        failed_ts_ms=now_ms(),
    ).encode()


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
        partition, offset = message.partition() or 0, message.offset() or 0
        log.warning("dead-lettered %s[%s]@%s: %s", source, partition, offset, reason)
        record = dead_letter_record(
            source_topic=source,
            partition=partition,
            offset=offset,
            key=message.key(),
            value=message.value(),
            reason=reason,
            error=error,
            service=self._service,
        )
        self._producer.produce(
            self._settings.topics.dead_letter(source), key=message.key(), value=record, on_delivery=on_delivery
        )
