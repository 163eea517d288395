"""Dead letters: a message a service cannot process goes, with the reason, to ``<topic>.dlq``.

A letter always fits the smallest producer request limit it meets (faust's 1 MB): the message
it was given may be as big as the broker took, and a letter the producer refuses would
crash-loop its service on the same message. So a letter carries at most the first
:data:`KEPT_KEY_BYTES` of the original key and :data:`KEPT_VALUE_BYTES` of the value (the
reason then says so, with the original length and sha256, so the original can still be
identified), a reason of at most :data:`MAX_REASON_BYTES` and names of at most
:data:`MAX_NAME_BYTES`: an encoded letter is at most :data:`MAX_DEAD_LETTER_BYTES`, and its
Kafka key (:func:`dead_letter_key`) at most :data:`KEPT_KEY_BYTES`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.kafka.clients import make_producer
from pipeline.settings import Settings

log = logging.getLogger(__name__)

#: Most bytes of the original key a letter carries (and uses as its own Kafka key); ids are far shorter.
KEPT_KEY_BYTES = 1024
#: Most bytes of the original value a letter carries: enough to see what was wrong with it.
KEPT_VALUE_BYTES = 64 * 1024
#: Most UTF-8 bytes of a letter's reason, the notes on what was cut included.
MAX_REASON_BYTES = 4096
#: Most UTF-8 bytes of a letter's source topic, service and error type.
MAX_NAME_BYTES = 256
#: Most bytes of an encoded letter: the parts above plus the header and the fixed-size fields.
MAX_DEAD_LETTER_BYTES = 72 * 1024

_REASON_CUT = " [reason cut]"


def _clip(text: str, limit: int, mark: str = "") -> str:
    """``text`` in at most ``limit`` UTF-8 bytes, ``mark`` ending it when cut (lone surrogates become '?')."""
    data = text.encode(errors="replace")
    if len(data) <= limit:
        return data.decode()
    return data[: limit - len(mark.encode())].decode(errors="ignore") + mark


def _kept(what: str, data: bytes | None, limit: int) -> tuple[bytes | None, str | None]:
    """The first ``limit`` bytes of ``data``, and a note saying what was cut (None when nothing was)."""
    if data is None or len(data) <= limit:
        return data, None
    digest = hashlib.sha256(data).hexdigest()
    return data[:limit], f"{what} cut to its first {limit} of {len(data)} bytes (sha256 {digest})"


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The Kafka key to send a letter with: the original key, cut to :data:`KEPT_KEY_BYTES`."""
    return key if key is None else key[:KEPT_KEY_BYTES]


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
    """The encoded ``DeadLetter`` record: the original message (cut to the bounds above) and why it failed."""
    kept_key, key_note = _kept("key", key, KEPT_KEY_BYTES)
    kept_value, value_note = _kept("value", value, KEPT_VALUE_BYTES)
    notes = "".join(f"; {note}" for note in (key_note, value_note) if note)
    return contracts.DeadLetter(
        source_topic=_clip(source_topic, MAX_NAME_BYTES),
        partition=partition,
        offset=offset,
        key=kept_key,
        value=kept_value,
        reason=_clip(reason, MAX_REASON_BYTES - len(notes), _REASON_CUT) + notes,
        error_type=_clip(type(error).__name__ if error else "invalid", MAX_NAME_BYTES),
        service=_clip(service, MAX_NAME_BYTES),
        failed_ts_ms=now_ms(),
    ).encode()


class DeadLetters:
    """Publishes unprocessable messages, with the reason, to ``<topic>.dlq`` (see the module for the bounds)."""

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
        log.warning(
            "dead-lettered %s[%s]@%s: %s", source, partition, offset, _clip(reason, MAX_REASON_BYTES, _REASON_CUT)
        )
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
            self._settings.topics.dead_letter(source),
            key=dead_letter_key(message.key()),
            value=record,
            on_delivery=on_delivery,
        )


class ReaderDeadLetters:
    """Dead letters for a reader thread that follows a topic (control, capabilities, transcripts).

    The producer is made on the first letter only: most readers never need one. A letter that cannot be
    queued is logged, not raised: a lost letter must not stop the reading.
    """

    def __init__(self, settings: Settings, service: str) -> None:
        self._settings = settings
        self._service = service
        self._producer: Producer | None = None

    def publish(self, message: Message, reason: str, error: BaseException | None = None) -> None:
        try:
            if self._producer is None:
                self._producer = make_producer(self._settings)
            DeadLetters(self._settings, self._producer, self._service).publish(message, reason, error)
            self._producer.poll(0)
        except (BufferError, KafkaException) as exc:
            log.error("%s message not dead-lettered (%s): %s", message.topic(), reason, exc)

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver the letters still queued."""
        if self._producer is not None:
            self._producer.flush(timeout_s)
