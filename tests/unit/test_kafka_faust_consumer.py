"""Three repairs to faust's consumer, all found by the two-assembler fault test at a takeover.

* It commits only offsets whose messages were all acked: faust's own ``_new_offset`` let a commit pass one
  message still in flight at the head (committed 48, acks from 49 on, commit 120: 48 never read again).
* A source partition resumes only once it is at its committed offset: faust resumed it, then sought it,
  with flow running, so records fetched from the old position were delivered meanwhile, out of order, or
  queued and then dropped when faust resumed flow again.
* Fetches hand out records of active partitions only, also while none is active: aiokafka drops its
  partition filter when given an empty set, and faust dropped what it handed out as inactive.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from pipeline.kafka.faust_app import LowLatencyConsumer, LowLatencyConsumerThread, make_app
from pipeline.settings import Settings

SOURCE = TP("hypotheses", 2)


@pytest.fixture
def consumer() -> Iterator[LowLatencyConsumer]:
    loop = asyncio.new_event_loop()
    try:
        app = make_app(Settings(), "commit-check", loop=loop)
        built = app.consumer
        assert isinstance(built, LowLatencyConsumer)
        built._committed_offset[SOURCE] = 48
        yield built
    finally:
        loop.close()


def ack(consumer: LowLatencyConsumer, *offsets: int) -> None:
    for offset in offsets:
        consumer._acked[SOURCE].append(offset)
        consumer._acked_index[SOURCE].add(offset)


def test_no_commit_passes_the_committed_offset_while_it_is_in_flight(consumer: LowLatencyConsumer) -> None:
    ack(consumer, *range(49, 120))
    assert faust_aiokafka.Consumer._new_offset(consumer, SOURCE) == 120, "faust's own skips offset 48"
    ack(consumer, *range(49, 120))  # faust's call above took those acks off the list
    assert consumer._new_offset(SOURCE) is None
    ack(consumer, 48)
    assert consumer._new_offset(SOURCE) == 120


def test_a_gap_faust_knows_of_counts_as_acked(consumer: LowLatencyConsumer) -> None:
    consumer._gap[SOURCE].addi(48, 50)  # e.g. a compacted-away range
    ack(consumer, 50, 51)
    assert consumer._new_offset(SOURCE) == 52


def test_contiguous_acks_commit_as_before(consumer: LowLatencyConsumer) -> None:
    ack(consumer, 48, 49, 50, 52)
    assert consumer._new_offset(SOURCE) == 51


@pytest.fixture
def changelog(consumer: LowLatencyConsumer) -> TP:
    table = consumer.app.Table("state", default=None, key_type=bytes, value_type=bytes, partitions=4)
    return TP(table.changelog_topic.get_topic_name(), SOURCE.partition)


def seek_recorder(consumer: LowLatencyConsumer, monkeypatch: pytest.MonkeyPatch, assigned: set[TP]) -> list[set[TP]]:
    """Seeks answer offset 48 for the source; each records which partitions were fetchable meanwhile."""
    fetchable_during_seek: list[set[TP]] = []

    async def seek_to_committed() -> dict[TP, int]:
        fetchable_during_seek.append(set(consumer._get_active_partitions()))
        return {SOURCE: 48}

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    monkeypatch.setattr(consumer, "assignment", lambda: assigned)
    return fetchable_during_seek


def test_a_source_partition_resumes_only_once_it_is_at_its_committed_offset(
    consumer: LowLatencyConsumer, changelog: TP, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust's end of recovery: resume the sources, then seek them. Records fetched in between came from
    the old fetch position and were delivered out of order or dropped from the stream queues."""
    fetchable_during_seek = seek_recorder(consumer, monkeypatch, {SOURCE, changelog})
    consumer.pause_partitions({SOURCE, changelog})  # faust pauses every assigned partition at a rebalance
    consumer.resume_partitions({changelog})  # table recovery
    consumer.resume_partitions({SOURCE})  # recovery done
    assert consumer._get_active_partitions() == {changelog}
    asyncio.run(consumer.perform_seek())
    assert fetchable_during_seek == [{changelog}]
    assert consumer._get_active_partitions() == {SOURCE, changelog}
    assert consumer._read_offset[SOURCE] == 48


def test_a_source_partition_revoked_before_the_seek_stays_off(
    consumer: LowLatencyConsumer, changelog: TP, monkeypatch: pytest.MonkeyPatch
) -> None:
    seek_recorder(consumer, monkeypatch, {changelog})
    consumer.pause_partitions({SOURCE, changelog})
    consumer.resume_partitions({SOURCE, changelog})
    asyncio.run(consumer.perform_seek())
    assert consumer._get_active_partitions() == {changelog}


def test_fetches_hand_out_only_active_partitions_even_while_none_is_active(
    consumer: LowLatencyConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka's ``fetched_records(partitions)`` drops its filter when ``partitions`` is falsy; faust's live
    active set is empty for a moment after every recovery, and records handed out then were lost."""
    handed_to_aiokafka: list[Any] = []

    async def fetch_records(self: Any, _consumer: Any, active_partitions: Any, **_: Any) -> dict[TP, list[Any]]:
        handed_to_aiokafka.append(active_partitions)
        return {}

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records", fetch_records)
    live: set[TP] = set()
    thread = consumer._thread
    assert isinstance(thread, LowLatencyConsumerThread)
    asyncio.run(thread._fetch_records(None, live, timeout=0.0))
    (partitions,) = handed_to_aiokafka
    assert partitions and SOURCE not in partitions, "aiokafka filters on it: `if partitions and tp not in ...`"
    live.add(SOURCE)  # faust resumes the partition: the fetch in flight sees it at once
    assert SOURCE in partitions
