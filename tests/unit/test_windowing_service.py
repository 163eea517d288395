"""The windower service's own decisions: failed deliveries (retry, then exit non-zero) and rebalances."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.types import TP

from pipeline.settings import Settings, TopicSettings
from pipeline.windowing import service
from pipeline.windowing.policy import DeliveryRetry, Frame
from pipeline.windowing.service import DELIVERY_FAILED_EXIT, WindowerService, _Sent, _Unpersisted

SETTINGS = Settings(topics=TopicSettings(prefix="unit"))
T0 = 1_700_000_000_000.0


def test_retry_backs_off_then_gives_up() -> None:
    retry = DeliveryRetry(attempts=4, first_delay_s=0.25, max_delay_s=1.0)
    assert [retry.delay_s(n) for n in range(1, 6)] == [0.25, 0.5, 1.0, 1.0, None]


class Event:
    def __init__(self) -> None:
        self.acked = False

    def ack(self) -> None:
        self.acked = True


class Broker:
    """Sends that fail the first ``failures`` times, then succeed."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sends = 0

    async def send(self) -> asyncio.Future[Any]:
        self.sends += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.sends <= self.failures:
            future.set_exception(ConnectionError("broker gone"))
        else:
            future.set_result("delivered")
        return future


def failures_counted(topic: str) -> float:
    return service.DELIVERY_FAILURES.labels(topic=topic)._value.get()


async def deliver(windower: WindowerService, broker: Broker, event: Event) -> None:
    windower._ack_when_delivered([event], [_Sent(await broker.send(), "unit.hops", broker.send)])
    while windower._acking:
        await asyncio.gather(*list(windower._acking), return_exceptions=True)


@pytest.fixture
def windower() -> WindowerService:
    windower = WindowerService(SETTINGS)
    windower.retry = DeliveryRetry(attempts=3, first_delay_s=0.001, max_delay_s=0.001)
    return windower


def test_a_failed_delivery_is_counted_sent_again_and_the_frame_acked_once_through(windower: WindowerService) -> None:
    exits: list[int] = []
    windower.exit = exits.append
    broker, event = Broker(failures=2), Event()
    before = failures_counted("unit.hops")
    asyncio.run(deliver(windower, broker, event))
    assert (broker.sends, event.acked, exits) == (3, True, [])
    assert failures_counted("unit.hops") - before == 2


def test_a_delivery_that_never_goes_through_exits_non_zero_with_the_frame_unacked(windower: WindowerService) -> None:
    exits: list[int] = []
    windower.exit = exits.append
    broker, event = Broker(failures=100), Event()
    asyncio.run(deliver(windower, broker, event))
    assert (broker.sends, event.acked, exits) == (4, False, [DELIVERY_FAILED_EXIT])


def pcm_frame(session: str, seq: int) -> Frame:
    return Frame(session, seq, T0 + 20 * seq, "pcm16", 16000, bytes(640))


def test_rebalance_drops_the_sessions_of_partitions_gone_and_catches_up_on_those_that_come(
    windower: WindowerService,
) -> None:
    frames = SETTINGS.topics.frames
    for session, partition in (("mine", 0), ("theirs", 3)):
        windower.windower.accept(pcm_frame(session, 0), 1.28, partition=partition, received_ts_ms=T0)
        windower._unpersisted[session] = _Unpersisted(frames=[(0, bytes(640))], events=[Event()])
    sent: list[tuple[str, bytes, int | None]] = []

    async def send(topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> _Sent:
        sent.append((topic, key, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return _Sent(future, topic, broker_down)

    async def broker_down() -> None:
        raise AssertionError("nothing is sent again")

    restores: list[set[int]] = []
    windower._send = send  # type: ignore[method-assign]
    windower._restore_all = lambda: restores.append(set(windower._caught_up))  # type: ignore[method-assign]
    windower._assigned = windower._caught_up = {0, 3}

    async def rebalance(assigned: set[int]) -> None:
        windower.app.producer.flush = lambda: asyncio.sleep(0)  # type: ignore[method-assign]
        await windower._on_revoked(windower.app, {TP(frames, p) for p in windower._assigned})
        await windower._on_assigned(windower.app, {TP(frames, p) for p in assigned})

    asyncio.run(rebalance({0}))
    assert not windower._unpersisted  # every session's state was written before the partitions moved
    assert {(key, partition) for topic, key, partition in sent if topic.endswith("sessions-changelog")} == {
        (b"mine", 0),
        (b"theirs", 3),
    }
    assert set(windower.windower.sessions) == {"mine"} and windower._caught_up == {0} and restores == []
    asyncio.run(rebalance({0, 3}))
    assert restores == [{0}]  # partition 3 came back: its changelog is read again and its sessions restored
