"""The faust consumer hopline builds commits only offsets whose messages were all acked.

faust's own ``_new_offset`` lets a commit pass one message still in flight at the head. Found by the
two-assembler fault test, which lost a hop at a takeover: the record at the committed offset (48) never
reached the agent, acks came from 49 on, and faust committed 120, so no later rebalance read it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from pipeline.kafka.faust_app import LowLatencyConsumer, make_app
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
