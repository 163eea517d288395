"""``hopline bench broker``: how long a broker carries the pipeline's traffic for N sessions.

The pipeline's produce pattern without its compute: every 20 ms tick one frame per session
(640 B, one batch per partition per tick, as ``AudioProducer`` sends them); every 160 ms per
session a hop (the 1.28 s window, 41 kB), two state-changelog records (5 kB + 0.5 kB), a
hypothesis, a transcript and a latency event (0.5 kB each), each topic's records of a tick in
one burst. One reader per topic, assigned like the services' consumers, with the pipeline's
fetch wait. Every record carries its send time; the bench reports the produce -> consume time
per 10 s window and ``holds_s``, the seconds until a window's p95 first exceeds
``--limit-ms`` (the streaming time when it never does; the first window, while the clients
connect, does not count).

The embedded broker lists every stored batch of a partition on each fetch (see
../shared/reference/embedded-broker.md), so its transport time grows with the run; Apache
Kafka's does not. The readers are one Python process: at 100 sessions they are part of the load.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.clock import now_ms
from pipeline.kafka.broker import broker_for
from pipeline.kafka.clients import make_producer
from pipeline.kafka.readers import open_reader
from pipeline.kafka.topics import fresh_topics
from pipeline.observe.latency import percentile
from pipeline.settings import Settings

TICK_S = 0.02
TICKS_PER_HOP = 8
WINDOW_S = 10.0
SENT_AT = struct.Struct("<d")

#: (role, bytes per record, records per session per hop): what the services write every 160 ms.
HOP_TRAFFIC = (
    ("hops", 41_000, 1),
    ("changelog", 5_200, 1),
    ("changelog", 500, 1),
    ("hypotheses", 500, 1),
    ("transcripts", 500, 1),
    ("latency", 200, 1),
)


@dataclass
class _Deliveries:
    """Produce -> consume times (ms) by the second they were received in."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    by_second: dict[int, list[float]] = field(default_factory=dict)

    def add(self, second: int, latency_ms: float) -> None:
        with self.lock:
            self.by_second.setdefault(second, []).append(latency_ms)

    def window(self, first_second: int, seconds: int) -> list[float]:
        with self.lock:
            return [v for s in range(first_second, first_second + seconds) for v in self.by_second.get(s, ())]


def _payload(size: int) -> bytes:
    return SENT_AT.pack(now_ms()) + bytes(size - SENT_AT.size)


def _produce(settings: Settings, sessions: int, seconds: float, stop: threading.Event) -> int:
    """The sessions' traffic in real time on one 20 ms tick; returns the records sent."""
    producer = make_producer(settings)
    topics = settings.topics
    keys = [f"bench-{index}".encode() for index in range(sessions)]
    start, sent, tick = time.monotonic(), 0, 0
    while not stop.is_set() and tick * TICK_S < seconds:
        due = start + (tick + 1) * TICK_S
        while (remaining := due - time.monotonic()) > 0:
            producer.poll(min(remaining, 0.005))
        for key in keys:
            producer.produce(topics.frames, key=key, value=_payload(640))
        sent += sessions
        if tick % TICKS_PER_HOP == TICKS_PER_HOP - 1:
            for role, size, count in HOP_TRAFFIC:
                topic = topics.name(role)
                for key in keys:
                    for _ in range(count):
                        producer.produce(topic, key=key, value=_payload(size))
                sent += sessions * count
        producer.poll(0)
        tick += 1
    producer.flush(30)
    return sent


def _read(settings: Settings, topic: str, deliveries: _Deliveries, start: float, stop: threading.Event) -> None:
    reader = open_reader(settings, f"bench-{topic}", [topic])
    try:
        while not stop.is_set():
            # poll, not consume(n, timeout): consume waits for n records or the whole timeout.
            message = reader.poll(0.05)
            value = message.value() if message is not None and message.error() is None else None
            if value:
                received = now_ms()
                deliveries.add(int(time.monotonic() - start), received - SENT_AT.unpack_from(value)[0])
    finally:
        reader.close()


def run_bench(
    settings: Settings, sessions: int, seconds: float, limit_ms: float = 50.0, external_broker: bool = False
) -> dict[str, Any]:
    """Stream ``sessions`` sessions' traffic for ``seconds``; see the module docstring for the figures."""
    partitions = settings.topics.partitions if external_broker else settings.broker.topic_partitions
    with broker_for(settings, external_broker) as bootstrap:
        settings = fresh_topics(settings, bootstrap, extra=("changelog",), topics={"partitions": partitions})
        deliveries = _Deliveries()
        stop = threading.Event()
        start = time.monotonic()
        roles = ["frames", *dict.fromkeys(role for role, _, _ in HOP_TRAFFIC)]
        readers = [
            threading.Thread(target=_read, args=(settings, settings.topics.name(role), deliveries, start, stop))
            for role in roles
        ]
        for reader in readers:
            reader.start()
        try:
            sent = _produce(settings, sessions, seconds, stop)
            streamed_s = time.monotonic() - start
            time.sleep(1.0)  # the last records reach their readers
        finally:
            stop.set()
            for reader in readers:
                reader.join(10)
    windows = []
    for first in range(0, int(streamed_s), int(WINDOW_S)):
        values = deliveries.window(first, int(WINDOW_S))
        windows.append(
            {
                "from_s": first,
                "records": len(values),
                "p50_ms": round(percentile(values, 50), 1),
                "p95_ms": round(percentile(values, 95), 1),
            }
        )
    over = [w["from_s"] for w in windows[1:] if w["p95_ms"] > limit_ms]  # the first window: clients connecting
    return {
        "sessions": sessions,
        "seconds": seconds,
        "partitions": settings.topics.partitions,
        "records_sent": sent,
        "records_per_s": round(sent / streamed_s, 1),
        "limit_ms": limit_ms,
        "holds_s": over[0] if over else round(streamed_s),
        "held_to_the_end": not over,
        "windows": windows,
    }


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"broker bench: {result['sessions']} sessions, {result['partitions']} partitions, "
        f"{result['records_per_s']} records/s for {result['seconds']:.0f} s",
        "from_s  records  p50 ms  p95 ms",
    ]
    lines += [f"{w['from_s']:>6}  {w['records']:>7}  {w['p50_ms']:>6}  {w['p95_ms']:>6}" for w in result["windows"]]
    verdict = "held to the end" if result["held_to_the_end"] else f"p95 first over {result['limit_ms']:g} ms"
    lines.append(f"holds_s {result['holds_s']} ({verdict})")
    return "\n".join(lines)
