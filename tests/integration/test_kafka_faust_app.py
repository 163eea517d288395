"""A real faust app built by ``make_app`` (pipeline/kafka/faust_app.py) against the embedded broker."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import pytest
from confluent_kafka.admin import NewTopic

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.kafka.clients import make_admin, make_producer
from pipeline.ready import ready_service
from tests.plugins.broker import SettingsFactory
from tests.plugins.builders import frame
from tests.plugins.kafka import TopicReader, wait_for

pytestmark = pytest.mark.integration

#: An echo service: frames -> hops topic with ``capture_ts_ms`` replaced by the agent's receipt
#: time (so the figure excludes the test's reader); anything that is not a frame -> frames DLQ.
ECHO_APP = """
import dataclasses, logging, sys
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
            frame = contracts.AudioFrame.decode(event.value)
        except contracts.ContractError as exc:
            await dead_letters.publish(event, str(exc), exc)
            continue
        echoed = dataclasses.replace(frame, capture_ts_ms=now_ms())
        await output.send(key=event.key, value=echoed.encode())

sys.exit(run_app(app, service="echo"))
"""


#: An echo service with a table, so that faust recovers its changelog when it starts, and an agent a few ms
#: slow per record, as a real one writing state and outputs is: records the consumer delivers while faust
#: seeks the source partitions then wait in the stream queue when faust resumes flow a second time.
TABLE_ECHO_APP = """
import asyncio, logging, sys
from pipeline.kafka.faust_app import make_app, raw_topic, run_app
from pipeline.settings import Settings

logging.basicConfig(level="INFO", format="%(name)s: %(message)s")
settings = Settings()
app = make_app(settings, settings.app_id + "-table-echo")
source = raw_topic(app, settings.topics.frames)
output = raw_topic(app, settings.topics.hops)
last_frame = app.Table("last-frame", default=None, key_type=bytes, value_type=bytes)

@app.agent(source)
async def echo(stream):
    async for event in stream.events():
        last_frame[event.key] = event.value
        await asyncio.sleep(0.005)
        await output.send(key=event.key, value=event.value)

sys.exit(run_app(app, service="echo"))
"""


class EchoService:
    def __init__(self, env: dict[str, str], code: str = ECHO_APP) -> None:
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
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
            if ready_service(line) == "echo":
                self.ready.set()
        self.ready.set()

    def wait_ready(self) -> None:
        assert self.ready.wait(40) and self.process.poll() is None, "\n".join(self.lines[-40:])


def test_agent_consumes_with_the_configured_fetch_wait_and_dead_letters_garbage(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    hops, dlq = settings.topics.hops, settings.topics.dead_letter(settings.topics.frames)
    echo = EchoService(settings.to_env())
    try:
        echo.wait_ready()
        with TopicReader(settings, {hops: contracts.AudioFrame, dlq: contracts.DeadLetter}) as reader:
            producer = make_producer(settings)
            producer.produce(settings.topics.frames, key=b"s-bad", value=b"not a frame")
            # Warm up: the agent's first fetch of a partition (offset lookup) comes a moment after it is ready.
            producer.produce(settings.topics.frames, key=b"s-1", value=frame("s-1", 1000).encode())
            producer.flush(5)
            reader.wait_for(lambda: len(reader.records(hops)) == 1 and bool(reader.records(dlq)), 30)
            assert [echoed.seq for echoed in reader.records(hops)] == [1000]
            sent_at: dict[int, float] = {}
            for seq in range(40):
                sent_at[seq] = now_ms()
                producer.produce(settings.topics.frames, key=b"s-1", value=frame("s-1", seq).encode())
                producer.poll(0)
                time.sleep(0.02)
            producer.flush(5)
            reader.wait_for(lambda: len(reader.records(hops)) == 41, 30)
        echoed = reader.records(hops)[1:]
        assert {e.session_id for e in echoed} == {"s-1"}
        # The echo replaced capture_ts_ms with the time its agent received the frame.
        received_at = {e.seq: e.capture_ts_ms for e in echoed}
        latencies_ms = [received_at[seq] - sent_at[seq] for seq in sent_at]
        assert sorted(received_at) == list(range(40))
        dead = reader.records(dlq)
        assert [d.value for d in dead] == [b"not a frame"]
        assert "Avro" in dead[0].reason and dead[0].service == "echo"
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


def test_a_member_starting_while_its_source_streams_takes_every_record_once_its_table_is_recovered(
    make_settings: SettingsFactory,
) -> None:
    """At the end of its table recovery faust resumed the source partitions, sought them to their committed
    offsets with flow running, then resumed flow again, emptying the stream queues: records the consumer
    delivered during the seek were dropped and not read again (tens at a time, whenever a fetch answered
    during the seek). Frames stream every 10 ms while the member starts, so fetches keep answering."""
    settings = make_settings(partitions=1)
    hops = settings.topics.hops
    producer = make_producer(settings)
    sent: list[int] = []
    streaming = threading.Event()

    def stream_frames() -> None:
        while streaming.is_set():
            seq = len(sent) + 1
            producer.produce(settings.topics.frames, key=b"s-1", value=frame("s-1", seq).encode())
            producer.poll(0)
            sent.append(seq)
            time.sleep(0.01)

    # A row in the table's changelog, so the member has a table to recover when it starts.
    changelog = f"{settings.app_id}-table-echo-last-frame-changelog"
    admin = make_admin(settings)
    admin.create_topics([NewTopic(changelog, num_partitions=1, replication_factor=1)])[changelog].result(10)
    producer.produce(changelog, key=b"s-1", value=frame("s-1", 0).encode())
    producer.flush(5)
    with TopicReader(settings, {hops: contracts.AudioFrame}) as reader:
        streaming.set()
        sender = threading.Thread(target=stream_frames, name="frames", daemon=True)
        sender.start()
        member = EchoService(settings.to_env(), TABLE_ECHO_APP)
        try:
            member.wait_ready()
            time.sleep(1.0)
            streaming.clear()
            sender.join(5)
            producer.flush(10)
            wait_for(lambda: {f.seq for f in reader.records(hops)} >= set(sent), 30)
        finally:
            streaming.clear()
            member.process.send_signal(signal.SIGTERM)
            code = member.process.wait(30)
    assert code == 0, "\n".join(member.lines[-40:])
    assert any("Restoring state from changelog" in line for line in member.lines), "recovery ran"
    missing = sorted(set(sent) - {f.seq for f in reader.records(hops)})
    assert not missing, f"{len(missing)} of {len(sent)} frames never taken, from {missing[:5]}"
