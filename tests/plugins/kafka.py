"""Reading what services wrote: topics from the beginning, offsets, ``/metrics``, waiting for a condition.

Every reader goes through :func:`pipeline.kafka.readers.open_reader` / ``read_to_end`` (assign
from the first offset, no group join), the same way the services' own readers do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Protocol

from confluent_kafka import Message, TopicPartition

from pipeline.kafka.clients import make_consumer
from pipeline.kafka.readers import open_reader, read_to_end
from pipeline.settings import Settings


class Decoder(Protocol):
    """A contract (``contracts.HOP``) or a typed record class: anything that decodes message bytes."""

    def decode(self, data: bytes | None) -> Any: ...


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)


class TopicReader:
    """Every record of some topics from their first offset, decoded and collected on a background thread.

    ``TopicReader(settings, {settings.topics.hops: contracts.HOP})``; ``records(topic)`` is what
    arrived so far, ``keys(topic)`` the message keys alongside, ``received_at(topic)`` when each
    was read (``time.time()`` ms); a message that does not decode fails the test at :meth:`close`.
    """

    def __init__(self, settings: Settings, decoders: Mapping[str, Decoder]) -> None:
        self._decoders = dict(decoders)
        self._consumer = open_reader(settings, f"test-reader-{uuid.uuid4().hex[:8]}", list(self._decoders))
        self._records: dict[str, list[Any]] = {topic: [] for topic in self._decoders}
        self._keys: dict[str, list[bytes | None]] = {topic: [] for topic in self._decoders}
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-topic-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(num_messages=500, timeout=0.05):
                if message.error() is None:
                    self._collect(message)

    def _collect(self, message: Message) -> None:
        topic = message.topic() or ""
        try:
            record = self._decoders[topic].decode(message.value())
        except Exception as exc:  # reported when the reader closes
            self._errors.append(f"{topic}@{message.offset()}: {exc}")
            return
        self._keys[topic].append(message.key())
        self._records[topic].append(record)

    def records(self, topic: str) -> list[Any]:
        return list(self._records[topic])

    def keys(self, topic: str) -> list[bytes | None]:
        return list(self._keys[topic])

    def until(self, done: Callable[[list[Any]], bool], topic: str | None = None, timeout_s: float = 40.0) -> list[Any]:
        """The records of ``topic`` (the reader's only topic unless given) once ``done(records)`` holds."""
        if topic is None:
            (topic,) = self._decoders
        name = topic
        self.wait_for(lambda: done(self.records(name)), timeout_s)
        return self.records(name)

    def wait_for(self, done: Callable[[], bool], timeout_s: float = 40.0) -> None:
        """Until ``done()`` holds; fails the test with what arrived when ``timeout_s`` passes first."""
        if not wait_for(done, timeout_s):
            counts = {topic: len(records) for topic, records in self._records.items()}
            raise AssertionError(f"timed out after {timeout_s} s with {counts}")

    def close(self, check: bool = True) -> None:
        """Stop reading (what arrived stays readable); ``check``: fail if a message did not decode."""
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(5.0)
            self._consumer.close()
        assert not check or not self._errors, f"undecodable messages: {self._errors[:3]}"

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(check=exc_type is None)


def read_all(settings: Settings, topic: str, decoder: Decoder) -> list[Any]:
    """Every record of ``topic`` written so far, decoded, in partition order."""
    return [decoder.decode(message.value()) for message in read_to_end(settings, "test-read-all", [topic])]


def partitions(settings: Settings, topic: str) -> list[int]:
    probe = make_consumer(settings, f"{settings.app_id}-test-probe")
    try:
        return sorted(probe.list_topics(topic, timeout=10).topics[topic].partitions)
    finally:
        probe.close()


def read_keyed(settings: Settings, topic: str, decoder: Decoder) -> list[tuple[bytes | None, Any]]:
    """Every ``(key, record)`` of ``topic`` written so far, decoded, in partition order."""
    return [
        (message.key(), decoder.decode(message.value())) for message in read_to_end(settings, "test-read-all", [topic])
    ]


def read_sessions(settings: Settings, topic: str, decoder: Decoder) -> list[Any]:
    """Every record of a session-keyed topic written so far; fails if a message's key is not its session."""
    keyed = read_keyed(settings, topic, decoder)
    for key, record in keyed:
        session = record["session_id"] if isinstance(record, Mapping) else record.session_id
        assert key == session.encode(), f"{topic}: key {key!r} on a record of session {session!r}"
    return [record for _key, record in keyed]


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Per partition, one past its last record, read to end-of-partition (Tansu's watermarks can lag)."""
    ends = dict.fromkeys(partitions(settings, topic), 0)
    for message in read_to_end(settings, "test-end", [topic]):
        ends[message.partition() or 0] = (message.offset() or 0) + 1
    return ends


def committed_offsets(settings: Settings, group_id: str, topic: str) -> dict[int, int]:
    """The offsets ``group_id`` committed on every partition of ``topic`` (0 where none)."""
    probe = make_consumer(settings, group_id)
    try:
        wanted = [TopicPartition(topic, p) for p in partitions(settings, topic)]
        return {tp.partition: max(tp.offset, 0) for tp in probe.committed(wanted, timeout=10)}
    finally:
        probe.close()


def metrics_url(service_output: str) -> str:
    """The ``/metrics`` address a service logged at start."""
    match = re.search(r"metrics on (http://\S+/metrics)", service_output)
    assert match, f"no metrics address in:\n{service_output[-2000:]}"
    return match.group(1)


def scrape_metrics(service_output: str) -> str:
    """The text of the ``/metrics`` endpoint the service logged at start."""
    with urllib.request.urlopen(metrics_url(service_output), timeout=10) as response:
        text: str = response.read().decode()
    return text


def unlabelled_samples(metrics_text: str) -> dict[str, float]:
    """``name -> value`` of the samples without labels."""
    samples = {}
    for line in metrics_text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            samples[name] = float(value)
    return samples


def hopline(settings: Settings, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``hopline ARGS`` as a child process with ``settings`` in its environment; output captured."""
    env = {**os.environ, **settings.to_env()}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )
