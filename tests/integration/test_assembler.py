"""``hopline assembler`` as a child process on the real broker, fed hand-made hypotheses."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.kafka.clients import consumer_config, make_producer
from pipeline.observe.latency import COMPONENTS
from pipeline.settings import Settings
from tests.conftest import SettingsFactory
from tests.services import ServiceProcess

pytestmark = pytest.mark.integration

HOP_MS = 160.0

SPEECH = {
    "s-door": [("open", 200, 500), ("the", 540, 640), ("door", 680, 1000)],
    "s-call": [("call", 120, 400), ("me", 440, 560), ("back", 600, 900), ("later", 950, 1300)],
}
HOPS = 12


def hypothesis(session: str, seq: int) -> dict:
    """Hop ``seq`` of ``session``: the words whose start lies in the window, the one still
    being spoken cut at the window's end; timestamps stepping through the pipeline."""
    window_end = (seq + 1) * HOP_MS
    window_start = max(0.0, window_end - 1280.0)
    words = []
    for word, start, end in SPEECH[session]:
        if window_start <= start < window_end:
            words.append({"word": word, "start_ms": start, "end_ms": min(end, window_end), "confidence": 0.9})
    captured = now_ms() - 300.0
    return {
        "session_id": session,
        "hop_seq": seq,
        "text": " ".join(w["word"] for w in words),
        "words": words,
        "confidence": 0.9,
        "window_start_ms": window_start,
        "window_end_ms": window_end,
        "is_final": seq == HOPS - 1,
        "beam": 4,
        "window_secs": 1.28,
        "batch_size": 2,
        "control_level": 0,
        "worker_id": "test-worker",
        "first_capture_ts_ms": captured,
        "ready_ts_ms": captured + 160.0,
        "hop_published_ts_ms": captured + 162.0,
        "received_ts_ms": captured + 170.0,
        "batch_closed_ts_ms": captured + 185.0,
        "infer_start_ts_ms": captured + 186.0,
        "infer_end_ts_ms": captured + 230.0,
        "skipped_before": 0,
    }


def reader(settings: Settings, topics: list[str]) -> Consumer:
    consumer = Consumer(consumer_config(settings, group_id=f"{settings.app_id}-test-reader"))
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(settings.topics.partitions)])
    return consumer


def test_assembler_turns_redelivered_hypotheses_into_transcripts_and_latency_events(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    topics = settings.topics
    dlq = topics.dead_letter(topics.hypotheses)
    with ServiceProcess(settings, "assembler") as assembler:
        assembler.wait_ready(60)
        producer = make_producer(settings)
        producer.produce(topics.hypotheses, key=b"s-door", value=b"not a hypothesis")
        sent: list[tuple[str, int]] = []
        for seq in range(HOPS):
            deliveries = [seq]
            if seq == 5:
                deliveries.append(5)  # the worker restarted and did hop 5 again
            if seq == 8:
                deliveries.append(6)  # hop 6 of an old worker arrives after hop 8
            for session in SPEECH:
                for hop in deliveries:
                    producer.produce(
                        topics.hypotheses,
                        key=session.encode(),
                        value=contracts.HYPOTHESIS.encode(hypothesis(session, hop)),
                    )
                    sent.append((session, hop))
            producer.flush(5)
            time.sleep(HOP_MS / 1000.0)

        consumer = reader(settings, [topics.transcripts, topics.latency, dlq])
        transcripts: dict[str, list[dict]] = defaultdict(list)
        latency: list[dict] = []
        dead: list[dict] = []
        deadline = time.monotonic() + 30
        while (len(latency) < len(sent) or not dead) and time.monotonic() < deadline:
            message = consumer.poll(0.05)
            if message is None or message.error():
                continue
            if message.topic() == topics.transcripts:
                record = contracts.TRANSCRIPT.decode(message.value())
                assert message.key() == record["session_id"].encode()
                transcripts[record["session_id"]].append(record)
            elif message.topic() == topics.latency:
                latency.append(contracts.LATENCY.decode(message.value()))
            else:
                dead.append(contracts.DEAD_LETTER.decode(message.value()))
        consumer.close()
        assert assembler.terminate() == 0

    for session, speech in SPEECH.items():
        received = transcripts[session]
        finals = [t for t in received if t["kind"] == "final"]
        assert [(w["word"], w["start_ms"], w["end_ms"]) for f in finals for w in f["words"]] == speech
        assert received[-1]["kind"] == "final"
        assert any(t["kind"] == "partial" and t["tail_text"] for t in received)
        for earlier, later in itertools.pairwise(received):
            if earlier["segment"] == later["segment"]:
                assert later["words"][: len(earlier["words"])] == earlier["words"]
                assert later["hop_seq"] > earlier["hop_seq"]

    assert sorted((e["session_id"], e["hop_seq"]) for e in latency) == sorted(sent)
    for event in latency:
        assert sum(event[f"{name}_ms"] for name in COMPONENTS) == event["e2e_ms"]
        assert event["hop_buffer_ms"] == 160.0 and event["gpu_infer_ms"] == 44.0
        assert (event["worker_id"], event["batch_size"], event["beam"]) == ("test-worker", 2, 4)
    for session in SPEECH:
        for hop in (5, 6):  # the second copy changed nothing and was not emitted
            flags = sorted(e["emitted"] for e in latency if (e["session_id"], e["hop_seq"]) == (session, hop))
            assert len(flags) == 2 and flags[0] is False
    emitted = {(t["session_id"], t["hop_seq"]) for ts in transcripts.values() for t in ts}
    assert {(e["session_id"], e["hop_seq"]) for e in latency if e["emitted"]} == emitted

    assert [d["value"] for d in dead] == [b"not a hypothesis"]
    assert dead[0]["service"] == "assembler" and "Avro" in dead[0]["reason"]


def test_a_killed_assembler_resumes_from_its_table_without_repeating_words(make_settings: SettingsFactory) -> None:
    settings = make_settings(partitions=2)
    # The killed member holds its partitions until its session times out: keep that short.
    settings.kafka.session_timeout_ms = 2000
    settings.kafka.heartbeat_interval_ms = 500
    topics = settings.topics
    session = "s-call"
    producer = make_producer(settings)

    def send(hops: range) -> None:
        for seq in hops:
            value = contracts.HYPOTHESIS.encode(hypothesis(session, seq))
            producer.produce(topics.hypotheses, key=session.encode(), value=value)
            producer.flush(5)
            time.sleep(HOP_MS / 1000.0)

    consumer = reader(settings, [topics.transcripts, topics.latency])
    transcripts: list[dict] = []
    latency: list[dict] = []

    def collect_until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 40
        while not done() and time.monotonic() < deadline:
            message = consumer.poll(0.05)
            if message is None or message.error():
                continue
            if message.topic() == topics.transcripts:
                transcripts.append(contracts.TRANSCRIPT.decode(message.value()))
            else:
                latency.append(contracts.LATENCY.decode(message.value()))

    with ServiceProcess(settings, "assembler") as first:
        first.wait_ready(60)
        send(range(7))
        collect_until(lambda: len(latency) == 7)
        time.sleep(1.0)  # past faust's 0.5 s commit interval: offsets and the table's changelog are written
        first.kill()
    committed_before = [w["word"] for w in transcripts[-1]["words"]]
    assert committed_before  # the crash hits mid-segment, with words already committed

    with ServiceProcess(settings, "assembler") as second:
        second.wait_ready(60)
        send(range(5, HOPS))  # the worker redelivers hops 5 and 6, then carries on
        collect_until(lambda: len(latency) == 7 + 2 + (HOPS - 7) and transcripts[-1]["kind"] == "final")
        assert second.terminate() == 0
    consumer.close()

    replayed = [e for e in latency[7:] if e["hop_seq"] in (5, 6)]
    assert len(replayed) == 2 and not any(e["emitted"] for e in replayed)  # the restored state knew them
    finals = [t for t in transcripts if t["kind"] == "final"]
    assert [(w["word"], w["start_ms"], w["end_ms"]) for f in finals for w in f["words"]] == SPEECH[session]
    after_restart = [t for t in transcripts if t["hop_seq"] >= 7]
    assert all([w["word"] for w in t["words"]][: len(committed_before)] == committed_before for t in after_restart)
