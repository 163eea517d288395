"""``hopline worker`` as a real child process, with the real recognizer, against the real broker."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Callable

import numpy as np
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from pipeline import contracts
from pipeline.control.ladder import GLOBAL_SCOPE, command_record, ladder
from pipeline.kafka.clients import consumer_config, make_producer
from pipeline.settings import Settings, WorkerSettings
from tests.conftest import SettingsFactory
from tests.services import ServiceProcess
from workers.worker.bench import feed_sessions, speech_stream

pytestmark = pytest.mark.integration

WORKER_READY_S = 180.0
COLLECT_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    stream, _source = speech_stream(16000)
    return stream


class TopicReader:
    """Everything on a topic from the beginning, collected on a background thread."""

    def __init__(self, settings: Settings, topic: str, contract: contracts.Contract) -> None:
        self._consumer = Consumer(consumer_config(settings, f"{settings.app_id}-test-{topic}"))
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._contract = contract
        self.records: list[contracts.Record] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is not None and message.error() is None:
                self.records.append(self._contract.decode(message.value()))

    def wait_for(self, done: Callable[[list[contracts.Record]], bool], timeout_s: float = COLLECT_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not done(list(self.records)):
            assert time.monotonic() < deadline, f"timed out with {len(self.records)} records"
            time.sleep(0.1)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._consumer.close()


def hops_accounted(records: list[contracts.Record]) -> int:
    return len(records) + sum(r["skipped_before"] for r in records)


def publish_control(producer: Producer, settings: Settings, level: int) -> None:
    """What the controller would publish for ``level`` of the degradation ladder."""
    knobs = ladder(settings)[level]
    command = command_record(1, knobs, "test", {}, GLOBAL_SCOPE)
    producer.produce(settings.topics.control, key=GLOBAL_SCOPE, value=contracts.CONTROL.encode(command))
    producer.flush(10)


def wait_for_line(service: ServiceProcess, text: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in line for line in list(service.lines)):
        assert time.monotonic() < deadline, f"no {text!r} in:\n{service.output[-2000:]}"
        time.sleep(0.05)


def scrape_metrics(service_output: str) -> dict[str, float]:
    """Unlabelled samples from the /metrics endpoint the service logged at start."""
    match = re.search(r"metrics on (http://\S+/metrics)", service_output)
    assert match, "the worker logs its metrics address"
    with urllib.request.urlopen(match.group(1), timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            samples[name] = float(value)
    return samples


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """Per partition, one past its last record, read to end-of-partition (Tansu's watermarks can lag)."""
    reader = Consumer(consumer_config(settings, f"{settings.app_id}-test-end", **{"enable.partition.eof": True}))
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        ends = dict.fromkeys(partitions, 0)
        at_end: set[int] = set()
        deadline = time.monotonic() + 30
        while len(at_end) < len(partitions) and time.monotonic() < deadline:
            message = reader.poll(0.2)
            if message is None:
                continue
            partition = message.partition() or 0
            if message.error() is not None:
                at_end.add(partition)
            else:
                ends[partition] = (message.offset() or 0) + 1
        return ends
    finally:
        reader.close()


def committed_offsets(settings: Settings) -> dict[int, int]:
    topic = settings.topics.hops
    probe = Consumer(consumer_config(settings, f"{settings.app_id}-worker"))
    try:
        partitions = probe.list_topics(topic, timeout=10).topics[topic].partitions
        committed = probe.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in committed}
    finally:
        probe.close()


def test_hops_in_hypotheses_out_with_timestamps_that_add_up(make_settings: SettingsFactory, speech: np.ndarray) -> None:
    settings = make_settings(partitions=3, worker=WorkerSettings(max_latency_ms=20.0, max_batch_size=4))
    settings.metrics.enabled = True
    hypotheses = TopicReader(settings, settings.topics.hypotheses, contracts.HYPOTHESIS)
    dead_letters = TopicReader(settings, settings.topics.dead_letter(settings.topics.hops), contracts.DEAD_LETTER)
    try:
        producer = make_producer(settings)
        publish_control(producer, settings, level=3)
        with ServiceProcess(settings, "worker") as worker:
            worker.wait_ready(WORKER_READY_S)
            wait_for_line(worker, "control: level 3 in force")
            producer.produce(settings.topics.hops, key="junk", value=b"not avro at all")
            wrong_rate = {
                "session_id": "wrong-rate",
                "hop_seq": 0,
                "first_capture_ts_ms": 1.0,
                "ready_ts_ms": 2.0,
                "published_ts_ms": 3.0,
                "sample_rate": 8000,
                "audio": b"\x00\x00" * 800,
                "window_start_sample": 0,
                "window_secs": 0.1,
                "gap_frames": 0,
                "duplicate_frames": 0,
                "is_final": True,
                "control_level": 0,
            }
            producer.produce(settings.topics.hops, key="wrong-rate", value=contracts.HOP.encode(wrong_rate))
            producer.flush(10)
            sent = feed_sessions(settings, speech, "s-", sessions=4, duration_s=1.6, seed=3)
            hypotheses.wait_for(lambda records: hops_accounted(records) >= sent)
            dead_letters.wait_for(lambda records: len(records) >= 2)
            metrics = scrape_metrics(worker.output)
            assert worker.terminate() == 0
        assert committed_offsets(settings) == end_offsets(settings, settings.topics.hops)
    finally:
        hypotheses.close()
        dead_letters.close()

    records = hypotheses.records
    assert hops_accounted(records) == sent
    assert {r["session_id"] for r in records} == {f"s-{i:03d}" for i in range(4)}
    assert sum(r["is_final"] for r in records) == 4, "every session's final hop is processed, never skipped"
    assert any(r["words"] for r in records), "real speech gives words"
    max_latency_ms = settings.worker.max_latency_ms
    degraded = ladder(settings)[3]
    for r in records:
        stamps = [
            r["first_capture_ts_ms"],
            r["ready_ts_ms"],
            r["hop_published_ts_ms"],
            r["received_ts_ms"],
            r["batch_closed_ts_ms"],
            r["infer_start_ts_ms"],
            r["infer_end_ts_ms"],
        ]
        assert stamps == sorted(stamps), f"timestamps out of order: {r}"
        hop_buffer = r["ready_ts_ms"] - r["first_capture_ts_ms"]
        net = r["hop_published_ts_ms"] - r["ready_ts_ms"]
        queue_wait = (r["received_ts_ms"] - r["hop_published_ts_ms"]) + (
            r["infer_start_ts_ms"] - r["batch_closed_ts_ms"]
        )
        batch_wait = r["batch_closed_ts_ms"] - r["received_ts_ms"]
        gpu_infer = r["infer_end_ts_ms"] - r["infer_start_ts_ms"]
        assert min(hop_buffer, net, queue_wait, batch_wait, gpu_infer) >= 0
        assert hop_buffer + net + queue_wait + batch_wait + gpu_infer == pytest.approx(
            r["infer_end_ts_ms"] - r["first_capture_ts_ms"]
        )
        assert batch_wait <= max_latency_ms + 1e-6, "the latency cap bounds every hop's batch wait"
        assert 1 <= r["batch_size"] <= 4
        assert (r["beam"], r["control_level"]) == (degraded.beam, 3), "the beam in force on the control topic"
        for word in r["words"]:
            assert r["window_start_ms"] <= word["start_ms"] <= word["end_ms"] <= r["window_end_ms"] + 1e-6
    assert metrics["hopline_worker_hops_processed_total"] == len(records)
    assert metrics["hopline_worker_skipped_hops_total"] == sum(r["skipped_before"] for r in records)
    assert metrics["hopline_worker_dead_letters_total"] == 2
    assert metrics["hopline_worker_batch_wait_seconds_count"] == len(records)
    assert metrics["hopline_worker_gpu_infer_seconds_count"] == metrics["hopline_worker_batch_size_count"]
    reasons = sorted(d["reason"] for d in dead_letters.records)
    assert any("not an Avro single-object message" in reason for reason in reasons)
    assert any("sample_rate 8000" in reason for reason in reasons)


def test_killed_and_terminated_workers_lose_no_hop(make_settings: SettingsFactory, speech: np.ndarray) -> None:
    """SIGKILL one worker mid-stream, SIGTERM the next mid-stream; a third finishes the stream."""
    settings = make_settings(partitions=3, worker=WorkerSettings(coalesce_stale_hops=False))
    settings.kafka.session_timeout_ms = 2000
    settings.kafka.heartbeat_interval_ms = 500
    hypotheses = TopicReader(settings, settings.topics.hypotheses, contracts.HYPOTHESIS)
    sent: list[int] = []

    def by_worker(worker_id: str) -> Callable[[list[contracts.Record]], bool]:
        return lambda records: sum(r["worker_id"] == worker_id for r in records) >= 10

    try:
        with ServiceProcess(settings, "worker", "--worker-id", "killed") as killed:
            killed.wait_ready(WORKER_READY_S)
            feeder = threading.Thread(
                target=lambda: sent.append(feed_sessions(settings, speech, "k-", sessions=3, duration_s=10.0, seed=5))
            )
            feeder.start()
            hypotheses.wait_for(by_worker("killed"))
            killed.kill()
        with ServiceProcess(settings, "worker", "--worker-id", "terminated") as terminated:
            terminated.wait_ready(WORKER_READY_S)
            hypotheses.wait_for(by_worker("terminated"))
            assert terminated.terminate() == 0
        with ServiceProcess(settings, "worker", "--worker-id", "finisher") as finisher:
            finisher.wait_ready(WORKER_READY_S)
            feeder.join()
            expected = {(f"k-{i:03d}", seq) for i in range(3) for seq in range(62)}
            hypotheses.wait_for(lambda records: expected <= {(r["session_id"], r["hop_seq"]) for r in records})
            assert finisher.terminate() == 0
    finally:
        hypotheses.close()
    assert sent == [186]
    assert {(r["session_id"], r["hop_seq"]) for r in hypotheses.records} == expected
    assert {"killed", "terminated"} <= {r["worker_id"] for r in hypotheses.records}
