"""A real faust app built by ``make_app`` against the embedded broker, run as a child process."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.kafka.clients import consumer_config, make_producer
from pipeline.settings import Settings
from tests.conftest import SettingsFactory

pytestmark = pytest.mark.integration

#: An echo service: frames -> hops topic with ``capture_ts_ms`` replaced by the agent's receipt
#: time (so the figure excludes the test's reader); anything that is not a frame -> frames DLQ.
ECHO_APP = """
import logging, sys
from pipeline import contracts
from pipeline.kafka.faust_app import AgentDeadLetters, make_app, raw_topic, run_app
from pipeline.clock import now_ms
from pipeline.settings import Settings

logging.basicConfig(level="INFO", format="%(name)s: %(message)s")
settings = Settings()
app = make_app(settings, settings.app_id + "-echo")
source = raw_topic(app, settings.topics.frames)
output = raw_topic(app, settings.topics.hops)
dead_letters = AgentDeadLetters(app, settings, service="echo")

@app.agent(source)
async def echo(stream):
    async for event in stream.events():
        try:
            frame = contracts.FRAME.decode(event.value)
        except contracts.ContractError as exc:
            await dead_letters.publish(event, str(exc), exc)
            continue
        frame["capture_ts_ms"] = now_ms()
        await output.send(key=event.key, value=contracts.FRAME.encode(frame))

sys.exit(run_app(app, service="echo"))
"""


class EchoService:
    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-c", ECHO_APP],
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if "echo ready" in line:
                self.ready.set()
        self.ready.set()

    def wait_ready(self) -> None:
        assert self.ready.wait(40) and self.process.poll() is None, "\n".join(self.lines[-40:])


def frame(session: str, seq: int) -> bytes:
    return contracts.FRAME.encode(
        {
            "session_id": session,
            "seq": seq,
            "capture_ts_ms": now_ms(),
            "codec": "pcm16",
            "sample_rate": 16000,
            "payload": bytes(640),
            "end_of_stream": False,
            "sent_ts_ms": now_ms(),
        }
    )


def receive(
    consumer: Consumer,
    settings: Settings,
    dead: list[contracts.Record],
    done: Callable[[list[bytes]], bool],
    received_at: dict[int, float] | None = None,
) -> list[bytes]:
    """Echoed frames (and dead letters into ``dead``) until ``done`` or 30 s; notes the agent's receipt times."""
    hops: list[bytes] = []
    deadline = time.monotonic() + 30
    while not done(hops) and time.monotonic() < deadline:
        message = consumer.poll(0.05)
        if message is None or message.error():
            continue
        if message.topic() == settings.topics.hops:
            hops.append(message.value())
            if received_at is not None:
                echoed = contracts.FRAME.decode(message.value())
                received_at[echoed["seq"]] = echoed["capture_ts_ms"]
        else:
            dead.append(contracts.DEAD_LETTER.decode(message.value()))
    return hops


def test_agent_consumes_with_the_configured_fetch_wait_and_dead_letters_garbage(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    echo = EchoService(settings.to_env())
    try:
        echo.wait_ready()
        consumer = Consumer(consumer_config(settings, f"{settings.app_id}-reader"))
        outputs = [settings.topics.hops, settings.topics.dead_letter(settings.topics.frames)]
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in outputs for p in range(3)])
        producer = make_producer(settings)
        producer.produce(settings.topics.frames, key=b"s-bad", value=b"not a frame")
        dead: list[contracts.Record] = []
        # Warm up: the agent's first fetch of a partition (offset lookup) comes a moment after "ready".
        producer.produce(settings.topics.frames, key=b"s-1", value=frame("s-1", 1000))
        producer.flush(5)
        received = receive(consumer, settings, dead, lambda hops: len(hops) == 1 and bool(dead))
        assert [contracts.FRAME.decode(value)["seq"] for value in received] == [1000]
        sent_at: dict[int, float] = {}
        for seq in range(40):
            sent_at[seq] = now_ms()
            producer.produce(settings.topics.frames, key=b"s-1", value=frame("s-1", seq))
            producer.poll(0)
            time.sleep(0.02)
        producer.flush(5)
        received_at: dict[int, float] = {}
        for value in receive(consumer, settings, dead, lambda hops: len(hops) == 40, received_at):
            assert contracts.FRAME.decode(value)["session_id"] == "s-1"
        latencies_ms = [received_at[seq] - sent_at[seq] for seq in sent_at]
        consumer.close()
        assert sorted(received_at) == list(range(40))
        assert [d["value"] for d in dead] == [b"not a frame"]
        assert "Avro" in dead[0]["reason"] and dead[0]["service"] == "echo"
        median = statistics.median(latencies_ms)
        print(f"faust agent receipt latency p50 {median:.1f} ms, max {max(latencies_ms):.1f} ms")
        assert any("fetch wait 10 ms" in line for line in echo.lines)
        # faust's own 1500 ms fetch wait puts the median near 750 ms on this broker.
        assert median < 750
    finally:
        echo.process.send_signal(signal.SIGTERM)
        code = echo.process.wait(30)
    assert code == 0, "\n".join(echo.lines[-40:])
    assert any("echo stopped" in line for line in echo.lines)
