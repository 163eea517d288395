"""``hopline assembler`` (pipeline/assembly/service.py) as a child process on the real broker.

It is fed hand-made hypotheses (:func:`tests.plugins.builders.hypothesis`).
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict

import pytest

from pipeline import contracts
from pipeline.kafka.clients import make_producer
from pipeline.observe.latency import COMPONENTS, measures
from pipeline.supervisor import ServiceProcess
from tests.plugins import builders
from tests.plugins.broker import SettingsFactory
from tests.plugins.kafka import TopicReader

pytestmark = pytest.mark.integration

HOP_MS = 160.0

SPEECH = {
    "s-door": [("open", 200, 500), ("the", 540, 640), ("door", 680, 1000)],
    "s-call": [("call", 120, 400), ("me", 440, 560), ("back", 600, 900), ("later", 950, 1300)],
}
HOPS = 12


def hypothesis(session: str, seq: int) -> bytes:
    """Hop ``seq`` of ``session``: the words of its window; the last hop is final."""
    return builders.hypothesis(session, seq, speech=SPEECH[session], is_final=seq == HOPS - 1).encode()


def test_assembler_turns_redelivered_hypotheses_into_transcripts_and_latency_events(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    topics = settings.topics
    dlq = topics.dead_letter(topics.hypotheses)
    decoders = {
        topics.transcripts: contracts.Transcript,
        topics.latency: contracts.LatencyEvent,
        dlq: contracts.DeadLetter,
    }
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
                    producer.produce(topics.hypotheses, key=session.encode(), value=hypothesis(session, hop))
                    sent.append((session, hop))
            producer.flush(5)
            time.sleep(HOP_MS / 1000.0)

        with TopicReader(settings, decoders) as reader:
            reader.wait_for(lambda: len(reader.records(topics.latency)) >= len(sent) and bool(reader.records(dlq)), 30)
        assert assembler.terminate() == 0
    latency, dead = reader.records(topics.latency), reader.records(dlq)
    transcripts: dict[str, list[contracts.Transcript]] = defaultdict(list)
    for key, record in zip(reader.keys(topics.transcripts), reader.records(topics.transcripts), strict=True):
        assert key == record.session_id.encode()
        transcripts[record.session_id].append(record)

    for session, speech in SPEECH.items():
        received = transcripts[session]
        finals = [t for t in received if t.kind == "final"]
        assert [(w.word, w.start_ms, w.end_ms) for f in finals for w in f.words] == speech
        assert received[-1].kind == "final"
        assert any(t.kind == "partial" and t.tail_text for t in received)
        for earlier, later in itertools.pairwise(received):
            if earlier.segment == later.segment:
                assert later.words[: len(earlier.words)] == earlier.words
                assert later.hop_seq > earlier.hop_seq

    assert sorted((e.session_id, e.hop_seq) for e in latency) == sorted(sent)
    for event in latency:
        assert sum(measures(event)[name] for name in COMPONENTS) == event.e2e_ms
        assert event.hop_buffer_ms == 160.0 and event.gpu_infer_ms == 44.0
        assert (event.worker_id, event.batch_size, event.beam) == ("test-worker", 2, 4)
    for session in SPEECH:
        for hop in (5, 6):  # the second copy changed nothing and was not emitted
            flags = sorted(e.emitted for e in latency if (e.session_id, e.hop_seq) == (session, hop))
            assert len(flags) == 2 and flags[0] is False
    emitted = {(t.session_id, t.hop_seq) for ts in transcripts.values() for t in ts}
    assert {(e.session_id, e.hop_seq) for e in latency if e.emitted} == emitted

    assert [d.value for d in dead] == [b"not a hypothesis"]
    assert dead[0].service == "assembler" and "Avro" in dead[0].reason


def test_a_killed_assembler_resumes_from_its_table_without_repeating_words(make_settings: SettingsFactory) -> None:
    # The killed member holds its partitions until its session times out: keep that short.
    settings = make_settings(partitions=2, kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500})
    topics = settings.topics
    session = "s-call"
    producer = make_producer(settings)

    def send(hops: range) -> None:
        for seq in hops:
            producer.produce(topics.hypotheses, key=session.encode(), value=hypothesis(session, seq))
            producer.flush(5)
            time.sleep(HOP_MS / 1000.0)

    reader = TopicReader(settings, {topics.transcripts: contracts.Transcript, topics.latency: contracts.LatencyEvent})

    def transcripts() -> list[contracts.Transcript]:
        return reader.records(topics.transcripts)

    def latency() -> list[contracts.LatencyEvent]:
        return reader.records(topics.latency)

    with ServiceProcess(settings, "assembler") as first:
        first.wait_ready(60)
        send(range(7))
        reader.wait_for(lambda: len(latency()) == 7)
        time.sleep(1.0)  # past faust's 0.5 s commit interval: offsets and the table's changelog are written
        first.kill()
    committed_before = [w.word for w in transcripts()[-1].words]
    assert committed_before  # the crash hits mid-segment, with words already committed

    with ServiceProcess(settings, "assembler") as second:
        second.wait_ready(60)
        send(range(5, HOPS))  # the worker redelivers hops 5 and 6, then carries on
        reader.wait_for(lambda: len(latency()) == 7 + 2 + (HOPS - 7) and transcripts()[-1].kind == "final")
        assert second.terminate() == 0
    reader.close()

    replayed = [e for e in latency()[7:] if e.hop_seq in (5, 6)]
    assert len(replayed) == 2 and not any(e.emitted for e in replayed)  # the restored state knew them
    finals = [t for t in transcripts() if t.kind == "final"]
    assert [(w.word, w.start_ms, w.end_ms) for f in finals for w in f.words] == SPEECH[session]
    after_restart = [t for t in transcripts() if t.hop_seq >= 7]
    assert all([w.word for w in t.words][: len(committed_before)] == committed_before for t in after_restart)
