"""``hopline worker`` (workers/worker/service.py) as a real child process, with the real recognizer,
against the real broker."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from pipeline import contracts
from pipeline.control.ladder import GLOBAL_SCOPE, ladder
from pipeline.kafka.clients import make_producer
from pipeline.supervisor import ServiceProcess
from tests.plugins.broker import SettingsFactory
from tests.plugins.builders import control_command, hop
from tests.plugins.kafka import (
    TopicReader,
    committed_offsets,
    end_offsets,
    scrape_metrics,
    unlabelled_samples,
    wait_for,
)
from workers.worker.bench import feed_sessions, speech_stream

pytestmark = pytest.mark.integration

WORKER_READY_S = 180.0
COLLECT_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    stream, _source = speech_stream(16000)
    return stream


def hops_accounted(records: list[contracts.Hypothesis]) -> int:
    return len(records) + sum(r.skipped_before + r.strided_before for r in records)


def test_hops_in_hypotheses_out_with_timestamps_that_add_up(make_settings: SettingsFactory, speech: np.ndarray) -> None:
    settings = make_settings(
        partitions=3, worker={"max_latency_ms": 20.0, "max_batch_size": 4}, metrics={"enabled": True}
    )
    topic, dead_letter_topic = settings.topics.hypotheses, settings.topics.dead_letter(settings.topics.hops)
    hypotheses = TopicReader(settings, {topic: contracts.Hypothesis})
    dead_letters = TopicReader(settings, {dead_letter_topic: contracts.DeadLetter})
    try:
        producer = make_producer(settings)
        producer.produce(settings.topics.control, key=GLOBAL_SCOPE, value=control_command(settings, 3).encode())
        producer.flush(10)
        with ServiceProcess(settings, "worker") as worker:
            worker.wait_ready(WORKER_READY_S)
            in_force = "control: level 3 in force"
            assert wait_for(lambda: any(in_force in line for line in list(worker.lines)), 30), worker.output[-2000:]
            producer.produce(settings.topics.hops, key="junk", value=b"not avro at all")
            wrong_rate = hop(
                "wrong-rate", 0, sample_rate=8000, audio=b"\x00\x00" * 800, window_start_sample=0, window_secs=0.1
            )
            producer.produce(settings.topics.hops, key="wrong-rate", value=wrong_rate.encode())
            producer.flush(10)
            sent = feed_sessions(settings, speech, "s-", sessions=4, duration_s=1.6, seed=3)
            hypotheses.until(lambda records: hops_accounted(records) >= sent, timeout_s=COLLECT_TIMEOUT_S)
            dead_letters.until(lambda records: len(records) >= 2, timeout_s=COLLECT_TIMEOUT_S)
            metrics = unlabelled_samples(scrape_metrics(worker.output))
            assert worker.terminate() == 0
        committed = committed_offsets(settings, f"{settings.app_id}-worker", settings.topics.hops)
        assert committed == end_offsets(settings, settings.topics.hops)
    finally:
        hypotheses.close()
        dead_letters.close()

    records = hypotheses.records(topic)
    assert hops_accounted(records) == sent
    assert {r.session_id for r in records} == {f"s-{i:03d}" for i in range(4)}
    assert sum(r.is_final for r in records) == 4, "every session's final hop is processed, never skipped"
    assert any(r.words for r in records), "real speech gives words"
    max_latency_ms = settings.worker.max_latency_ms
    degraded = ladder(settings)[3]
    for r in records:
        stamps = [
            r.first_capture_ts_ms,
            r.ready_ts_ms,
            r.hop_published_ts_ms,
            r.received_ts_ms,
            r.batch_closed_ts_ms,
            r.infer_start_ts_ms,
            r.infer_end_ts_ms,
        ]
        assert stamps == sorted(stamps), f"timestamps out of order: {r}"
        hop_buffer = r.ready_ts_ms - r.first_capture_ts_ms
        net = r.hop_published_ts_ms - r.ready_ts_ms
        queue_wait = (r.received_ts_ms - r.hop_published_ts_ms) + (r.infer_start_ts_ms - r.batch_closed_ts_ms)
        batch_wait = r.batch_closed_ts_ms - r.received_ts_ms
        gpu_infer = r.infer_end_ts_ms - r.infer_start_ts_ms
        assert min(hop_buffer, net, queue_wait, batch_wait, gpu_infer) >= 0
        assert hop_buffer + net + queue_wait + batch_wait + gpu_infer == pytest.approx(
            r.infer_end_ts_ms - r.first_capture_ts_ms
        )
        assert batch_wait <= max_latency_ms + 1e-6, "the latency cap bounds every hop's batch wait"
        assert 1 <= r.batch_size <= 4
        assert (r.beam, r.control_level) == (degraded.beam, 3), "the beam in force on the control topic"
        for word in r.words:
            assert r.window_start_ms <= word.start_ms <= word.end_ms <= r.window_end_ms + 1e-6
    assert metrics["hopline_worker_hops_processed_total"] == len(records)
    assert metrics["hopline_worker_skipped_hops_total"] == sum(r.skipped_before for r in records)
    assert metrics["hopline_worker_dead_letters_total"] == 2
    assert metrics["hopline_worker_batch_wait_seconds_count"] == len(records)
    assert metrics["hopline_worker_gpu_infer_seconds_count"] == metrics["hopline_worker_batch_size_count"]
    reasons = sorted(d.reason for d in dead_letters.records(dead_letter_topic))
    assert any("not an Avro single-object message" in reason for reason in reasons)
    assert any("sample_rate 8000" in reason for reason in reasons)


def test_killed_and_terminated_workers_lose_no_hop(make_settings: SettingsFactory, speech: np.ndarray) -> None:
    """SIGKILL one worker mid-stream, SIGTERM the next mid-stream; a third finishes the stream."""
    settings = make_settings(
        partitions=3,
        worker={"coalesce_stale_hops": False},
        kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500},
    )
    topic = settings.topics.hypotheses
    hypotheses = TopicReader(settings, {topic: contracts.Hypothesis})
    sent: list[int] = []

    def by_worker(worker_id: str) -> Callable[[list[contracts.Hypothesis]], bool]:
        return lambda records: sum(r.worker_id == worker_id for r in records) >= 10

    try:
        with ServiceProcess(settings, "worker", "--worker-id", "killed") as killed:
            killed.wait_ready(WORKER_READY_S)
            feeder = threading.Thread(
                target=lambda: sent.append(feed_sessions(settings, speech, "k-", sessions=3, duration_s=10.0, seed=5))
            )
            feeder.start()
            hypotheses.until(by_worker("killed"), timeout_s=COLLECT_TIMEOUT_S)
            killed.kill()
        with ServiceProcess(settings, "worker", "--worker-id", "terminated") as terminated:
            terminated.wait_ready(WORKER_READY_S)
            hypotheses.until(by_worker("terminated"), timeout_s=COLLECT_TIMEOUT_S)
            assert terminated.terminate() == 0
        with ServiceProcess(settings, "worker", "--worker-id", "finisher") as finisher:
            finisher.wait_ready(WORKER_READY_S)
            feeder.join()
            expected = {(f"k-{i:03d}", seq) for i in range(3) for seq in range(62)}
            hypotheses.until(
                lambda records: expected <= {(r.session_id, r.hop_seq) for r in records},
                timeout_s=COLLECT_TIMEOUT_S,
            )
            assert finisher.terminate() == 0
    finally:
        hypotheses.close()
    assert sent == [186]
    assert {(r.session_id, r.hop_seq) for r in hypotheses.records(topic)} == expected
    assert {"killed", "terminated"} <= {r.worker_id for r in hypotheses.records(topic)}
