"""Delivery failures on the real broker: a service's produce requests stall in the FaultProxy until they time out.

``FaultProxy.stall_produce(client_id)`` holds every connection on which the service under test (its faust
``BROKER_CLIENT_ID``, the worker's ``hopline-worker-<id>``) has sent a Produce request, while its fetches and
every other client go on; the service's ``kafka.delivery_timeout_ms`` is set to 1 s, so each delivery fails after
a second instead of two minutes. The windower sends a failed hop or state write again with backoff and, when the
stall outlasts its retries, exits 75 for a replay; the assembler crashes after three failures in a row; the worker
sends a failed hypothesis again until it is delivered and commits nothing past it. Either way nothing is lost or
repeated.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.ingress.service import AudioProducer, AudioStream
from pipeline.supervisor import ServiceProcess
from pipeline.windowing.service import DELIVERY_FAILED_EXIT
from tests.integration.test_faults_rebalance import (
    HOP_MS,
    HOPS,
    assert_transcripts,
    clean_finals,
    send_in_real_time,
    speech,
)
from tests.integration.test_windowing_service import assert_hops_match, hops_by_session, speech_like
from tests.integration.test_worker_service import WORKER_READY_S, hops_accounted
from tests.plugins.broker import SettingsFactory
from tests.plugins.faults import FaultProxy
from tests.plugins.kafka import TopicReader, committed_offsets, end_offsets, wait_for
from workers.worker.bench import feed_sessions, speech_stream

pytestmark = [pytest.mark.integration, pytest.mark.faults]

#: The service under test's faust client id, the one the stall holds; its deliveries time out after 1 s.
VICTIM = "delivery-victim"
FAST_TIMEOUT_ENV = {"HOPLINE_KAFKA__DELIVERY_TIMEOUT_MS": "1000"}
VICTIM_ENV = {"BROKER_CLIENT_ID": VICTIM, **FAST_TIMEOUT_ENV}
STALL_AT_S = 1.0


@pytest.mark.parametrize(("stall_s", "exits"), [(3.0, False), (18.0, True)], ids=["retried", "exit-75"])
def test_a_windower_whose_deliveries_time_out_loses_and_renumbers_no_hop(
    make_proxied_settings: SettingsFactory, faults: FaultProxy, stall_s: float, exits: bool
) -> None:
    """3 s: the failed hops and state writes go through on a retry, the windower stays up. 18 s: past every
    retry (~14 s), it exits 75 with the frames behind them uncommitted; the restart replays them."""
    settings = make_proxied_settings(partitions=2)
    run = uuid.uuid4().hex[:4]
    streams = [AudioStream(f"dlv-{run}-{n}", speech_like(4.0, 16000, n)) for n in range(4)]
    producer = AudioProducer(settings)
    payloads = {s.session_id: producer.frames_of(s) for s in streams}
    frames = max(len(p) for p in payloads.values()) + 1
    hops_reader = TopicReader(settings, {settings.topics.hops: contracts.Hop})

    def send_frames() -> None:
        """Every session's frames in real time, the end-of-stream frame last."""
        start = now_ms()
        for seq in range(frames):
            time.sleep(max(0.0, (start + 20 * seq - now_ms()) / 1000.0))
            for s in streams:
                last = seq == len(payloads[s.session_id])
                if seq <= len(payloads[s.session_id]):
                    payload = b"" if last else payloads[s.session_id][seq]
                    producer.send_frame(s, seq, payload, start + 20 * seq, eos=last)

    def finished() -> bool:
        return {h.session_id for h in hops_reader.records(settings.topics.hops) if h.is_final} == set(payloads)

    streamer = threading.Thread(target=send_frames, name="frames", daemon=True)
    with ServiceProcess(settings, "windower", env=VICTIM_ENV) as windower:
        windower.wait_ready(60)
        streamer.start()
        time.sleep(STALL_AT_S)
        faults.stall_produce(VICTIM)
        if exits:
            code = windower.wait(stall_s + 10)
        else:
            time.sleep(stall_s)
        assert faults.stalled > 0, "the windower's produce requests were held"
        faults.heal()
        streamer.join(30)
        assert producer.close(30).failed == 0
        if exits:
            assert code == DELIVERY_FAILED_EXIT, windower.output[-3000:]
            assert "output still not delivered" in windower.output
            with ServiceProcess(settings, "windower") as restarted:
                restarted.wait_ready(60)
                hops_reader.wait_for(finished, 60)
                assert restarted.terminate() == 0, restarted.output[-3000:]
        else:
            hops_reader.wait_for(finished, 60)
            assert windower.running, "retries carried the windower through the stall"
            assert windower.terminate() == 0, windower.output[-3000:]
    hops_reader.close()
    for session_id, session_hops in hops_by_session(hops_reader.records(settings.topics.hops)).items():
        unique: dict[int, contracts.Hop] = {}
        for hop in session_hops:
            again = unique.setdefault(hop.hop_seq, hop)
            assert again.audio == hop.audio and again.window_start_sample == hop.window_start_sample, (
                f"{session_id}: hop {hop.hop_seq} sent again with other audio"
            )
        stream = next(s for s in streams if s.session_id == session_id)
        assert_hops_match(stream, [unique[seq] for seq in sorted(unique)], redelivered=True)
    assert "delivery to" in windower.output and "failed (1 in a row)" in windower.output, "deliveries did fail"


def test_an_assembler_whose_deliveries_time_out_crashes_and_its_restart_repeats_and_loses_no_word(
    make_proxied_settings: SettingsFactory, faults: FaultProxy
) -> None:
    """Three failed deliveries in a row crash the assembler with its input unacked; the restart replays it."""
    settings = make_proxied_settings(partitions=2)
    run = uuid.uuid4().hex[:4]
    plan = {f"dlv-asm-{run}-{n}": speech(n) for n in range(4)}
    reference = clean_finals(settings, plan)
    reader = TopicReader(
        settings, {settings.topics.transcripts: contracts.Transcript, settings.topics.latency: contracts.LatencyEvent}
    )
    sender = threading.Thread(target=send_in_real_time, args=(settings, plan), name="hypotheses", daemon=True)

    def finished() -> bool:
        last = {e.session_id for e in reader.records(settings.topics.latency) if e.hop_seq == HOPS - 1}
        return last == set(plan)

    with ServiceProcess(settings, "assembler", env=VICTIM_ENV) as assembler:
        assembler.wait_ready(60)
        sender.start()
        time.sleep(2.5)  # into the first segment: words committed, state written
        faults.stall_produce(VICTIM)
        code = assembler.wait(30)
        assert faults.stalled > 0, "the assembler's produce requests were held"
        faults.heal()
        assert code != 0, assembler.output[-3000:]
        assert "delivery failed (3 in a row)" in assembler.output, assembler.output[-3000:]
        with ServiceProcess(settings, "assembler") as restarted:
            restarted.wait_ready(60)
            sender.join(HOPS * HOP_MS / 1000.0 + 10)
            reader.wait_for(finished, 60)
            assert restarted.terminate() == 0, restarted.output[-3000:]
    reader.close()
    assert_transcripts(reader, settings, plan, reference)


def test_a_worker_whose_deliveries_time_out_sends_again_or_exits_and_commits_nothing_undelivered(
    make_proxied_settings: SettingsFactory, faults: FaultProxy
) -> None:
    """A 5 s stall of the worker's produce requests. Timed-out hypotheses are sent again; a producer the broker
    then fences (the embedded broker does, refusing the epoch bump librdkafka makes after a timeout; Apache Kafka
    accepts it) is fatal, so the worker exits non-zero for a replay and a restart sends what was left. Either
    way no hop goes without its hypothesis and no offset is committed past an undelivered one."""
    settings = make_proxied_settings(partitions=2, worker={"worker_id": "dlv-worker"})
    topic, group = settings.topics.hypotheses, f"{settings.app_id}-worker"
    hypotheses = TopicReader(settings, {topic: contracts.Hypothesis})
    speech_audio, _source = speech_stream(settings.audio.sample_rate)

    def unique(records: list[contracts.Hypothesis]) -> list[contracts.Hypothesis]:
        return list({(r.session_id, r.hop_seq): r for r in records}.values())

    with ServiceProcess(settings, "worker", env=FAST_TIMEOUT_ENV) as worker:
        worker.wait_ready(WORKER_READY_S)
        faults.stall_produce("hopline-worker-dlv-worker")
        stalled_at = time.monotonic()
        sent = feed_sessions(settings, speech_audio, f"dlv-w-{uuid.uuid4().hex[:4]}-", 4, 2.4, seed=5)
        time.sleep(max(0.0, 5.0 - (time.monotonic() - stalled_at)))
        assert faults.stalled > 0, "the worker's produce requests were held"
        assert not hypotheses.records(topic), "nothing got through the stall"
        assert committed_offsets(settings, group, settings.topics.hops) != end_offsets(settings, settings.topics.hops)
        faults.heal()

        def delivered() -> bool:
            return hops_accounted(unique(hypotheses.records(topic))) >= sent

        assert wait_for(lambda: delivered() or not worker.running, 90), worker.output[-3000:]
        if worker.running:
            assert worker.terminate() == 0, worker.output[-3000:]
        else:
            assert worker.process.returncode != 0 and "exits for a replay" in worker.output, worker.output[-3000:]
            with ServiceProcess(settings, "worker") as finisher:
                finisher.wait_ready(WORKER_READY_S)
                hypotheses.wait_for(delivered, 90)
                assert finisher.terminate() == 0, finisher.output[-3000:]
    hypotheses.close()
    assert hops_accounted(unique(hypotheses.records(topic))) == sent
    assert committed_offsets(settings, group, settings.topics.hops) == end_offsets(settings, settings.topics.hops)
    assert "not delivered" in worker.output, worker.output[-3000:]
