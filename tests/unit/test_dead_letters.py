"""Dead letters always fit: a poison message as big as the broker takes must not make a letter it refuses."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from pipeline import contracts
from pipeline.kafka import dead_letters
from pipeline.kafka.dead_letters import (
    KEPT_KEY_BYTES,
    KEPT_VALUE_BYTES,
    MAX_DEAD_LETTER_BYTES,
    MAX_REASON_BYTES,
    DeadLetters,
    dead_letter_record,
)
from pipeline.settings import Settings, TopicSettings

#: faust's (aiokafka's) default ``producer_max_request_size``: the smallest limit a letter meets.
FAUST_MAX_REQUEST_BYTES = 1_000_000


def letter(
    key: bytes | None, value: bytes | None, reason: str = "bad frame", error: BaseException | None = None
) -> bytes:
    return dead_letter_record(
        source_topic="hopline.frames",
        partition=3,
        offset=42,
        key=key,
        value=value,
        reason=reason,
        error=error,
        service="windower",
    )


def test_a_small_message_is_kept_whole() -> None:
    decoded = contracts.DeadLetter.decode(letter(b"call-1", b"\x00\x01", error=ValueError("x")))
    assert (decoded.key, decoded.value, decoded.reason, decoded.error_type) == (
        b"call-1",
        b"\x00\x01",
        "bad frame",
        "ValueError",
    )
    assert (decoded.source_topic, decoded.partition, decoded.offset, decoded.service) == (
        "hopline.frames",
        3,
        42,
        "windower",
    )


def test_a_value_and_key_at_the_bounds_are_kept_whole() -> None:
    key, value = b"k" * KEPT_KEY_BYTES, b"v" * KEPT_VALUE_BYTES
    decoded = contracts.DeadLetter.decode(letter(key, value))
    assert (decoded.key, decoded.value, decoded.reason) == (key, value, "bad frame")


def test_a_huge_value_and_key_are_cut_with_their_length_and_digest_in_the_reason() -> None:
    key, value = b"s" * 500_000, bytes(range(256)) * 4096  # a 500 kB session id, a ~1 MB frame
    data = letter(key, value)
    assert len(data) <= MAX_DEAD_LETTER_BYTES
    decoded = contracts.DeadLetter.decode(data)
    assert decoded.key == key[:KEPT_KEY_BYTES]
    assert decoded.value == value[:KEPT_VALUE_BYTES]
    assert decoded.reason.startswith("bad frame; ")
    assert f"key cut to its first {KEPT_KEY_BYTES} of 500000 bytes (sha256 {hashlib.sha256(key).hexdigest()})" in (
        decoded.reason
    )
    value_note = f"value cut to its first {KEPT_VALUE_BYTES} of {len(value)} bytes"
    assert f"{value_note} (sha256 {hashlib.sha256(value).hexdigest()})" in decoded.reason


def test_a_huge_reason_and_names_are_cut() -> None:
    reason = "session " + "é" * 300_000 + " refused"
    data = dead_letter_record(
        source_topic="t" * 10_000,
        partition=0,
        offset=0,
        key=None,
        value=None,
        reason=reason,
        error=type("E" * 5_000, (Exception,), {})(),
        service="s" * 10_000,
    )
    assert len(data) <= MAX_DEAD_LETTER_BYTES
    decoded = contracts.DeadLetter.decode(data)
    assert reason.startswith(decoded.reason.removesuffix(" [reason cut]"))
    assert decoded.reason.endswith(" [reason cut]")
    assert len(decoded.reason.encode()) <= MAX_REASON_BYTES
    assert decoded.service.startswith("sss") and decoded.error_type.startswith("EEE")


def test_the_bound_holds_for_the_largest_message_of_every_part() -> None:
    """Every variable part at once, each past its limit, with multi-byte characters at the cuts."""
    data = dead_letter_record(
        source_topic="€" * 100_000,
        partition=-(2**31),
        offset=-(2**63),
        key=b"k" * 2_000_000,
        value=b"v" * 2_000_000,
        reason="€" * 100_000,
        error=type("€" * 100_000, (Exception,), {})(),
        service="€" * 100_000,
    )
    assert len(data) <= MAX_DEAD_LETTER_BYTES
    assert contracts.DeadLetter.decode(data).value == b"v" * KEPT_VALUE_BYTES


class FakeMessage:
    def __init__(self, key: bytes | None, value: bytes | None) -> None:
        self._key, self._value = key, value

    def topic(self) -> str:
        return "unit.frames"

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return 9

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value


class FakeProducer:
    def __init__(self) -> None:
        self.produced: list[dict[str, Any]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.produced.append({"topic": topic, **kwargs})


@pytest.mark.parametrize("key", [None, b"call-1", b"s" * 900_000])
def test_publish_sends_a_letter_that_fits_a_faust_request_whatever_the_key(key: bytes | None) -> None:
    producer = FakeProducer()
    publisher = DeadLetters(Settings(topics=TopicSettings(prefix="unit")), producer, "worker")  # type: ignore[arg-type]
    publisher.publish(FakeMessage(key, b"v" * 990_000), "cannot decode")  # type: ignore[arg-type]
    (sent,) = producer.produced
    assert sent["topic"] == "unit.frames.dlq"
    assert sent["key"] == dead_letters.dead_letter_key(key)
    assert len(sent["key"] or b"") + len(sent["value"]) <= FAUST_MAX_REQUEST_BYTES // 8
    decoded = contracts.DeadLetter.decode(sent["value"])
    assert decoded.key == (None if key is None else key[:KEPT_KEY_BYTES])
    assert (decoded.source_topic, decoded.partition, decoded.offset) == ("unit.frames", 1, 9)


def test_the_dead_letter_key_is_the_original_key_cut_to_the_bound() -> None:
    assert dead_letters.dead_letter_key(None) is None
    assert dead_letters.dead_letter_key(b"call-1") == b"call-1"
    assert dead_letters.dead_letter_key(b"x" * (KEPT_KEY_BYTES + 1)) == b"x" * KEPT_KEY_BYTES


def test_a_reason_that_is_not_valid_unicode_still_makes_a_letter() -> None:
    """An error text may carry a lone surrogate (bytes decoded with surrogateescape); UTF-8 cannot hold it."""
    decoded = contracts.DeadLetter.decode(letter(b"k", b"v", reason=b"bad \xff id".decode(errors="surrogateescape")))
    assert decoded.reason == "bad ? id"


class FullProducer(FakeProducer):
    """A producer whose queue is full, then has room again."""

    def __init__(self) -> None:
        super().__init__()
        self.full = True
        self.polls = 0
        self.flushed: list[float] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self.full:
            raise BufferError("Local: Queue full")
        super().produce(topic, **kwargs)

    def poll(self, _timeout: float) -> int:
        self.polls += 1
        return 0

    def flush(self, timeout: float) -> int:
        self.flushed.append(timeout)
        return 0


def test_a_reader_makes_its_producer_at_the_first_letter_and_a_full_queue_does_not_stop_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    made: list[FullProducer] = []

    def make_producer(_settings: Settings) -> FullProducer:
        made.append(FullProducer())
        return made[-1]

    monkeypatch.setattr(dead_letters, "make_producer", make_producer)
    reader = dead_letters.ReaderDeadLetters(Settings(topics=TopicSettings(prefix="unit")), "gateway")
    reader.close()
    assert made == [], "no letter, no producer"
    reader.publish(FakeMessage(b"call-1", b"garbage"), "unreadable transcript")  # type: ignore[arg-type]
    assert "not dead-lettered (unreadable transcript)" in caplog.text and made[0].produced == []
    made[0].full = False
    reader.publish(FakeMessage(b"call-1", b"garbage"), "unreadable transcript")  # type: ignore[arg-type]
    reader.close()
    (producer,) = made
    (sent,) = producer.produced
    assert sent["topic"] == "unit.frames.dlq" and producer.polls == 1 and producer.flushed == [5.0]
    assert contracts.DeadLetter.decode(sent["value"]).service == "gateway"
