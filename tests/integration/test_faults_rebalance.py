"""Two assembler processes share the hypotheses partitions under load; one is killed (SIGKILL) mid-stream and restarted.

Sessions stream hand-made hypotheses (:func:`tests.plugins.builders.hypothesis`) in real time, four spoken
segments each, so the reference is exact: the same hypotheses stitched by one in-process :class:`Assembly` (a
clean run). The killed member's partitions go to the other assembler once its group session times out, and come
back when it is restarted: both rebalances move live sessions, whose state must follow them through the changelog.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import defaultdict

import pytest

from pipeline import contracts
from pipeline.assembly.service import Assembly
from pipeline.kafka.clients import make_producer
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess
from tests.plugins import builders
from tests.plugins.broker import SettingsFactory
from tests.plugins.kafka import TopicReader, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

HOP_MS = 160.0
SESSIONS = 12
#: Hops per session: 16 s of stream, long enough for a kill, a takeover and a restart mid-stream.
HOPS = 100
SEGMENTS = 4
KILL_AT_S = 2.5
#: Hops that take a session through its first segment's final (its endpoint is ~2.7 s into the stream).
SEGMENT_HOPS = 20
Speech = list[tuple[str, float, float]]


def speech(index: int) -> Speech:
    """Four segments of four words, 3.5 s apart: 1.8 s of silence between them (the endpoint is 600 ms)."""
    words: Speech = []
    for segment in range(SEGMENTS):
        start = 300.0 + 3500.0 * segment
        for n in range(4):
            begin = start + n * 450.0
            words.append((f"s{index}seg{segment}word{n}", begin, begin + 380.0))
    return words


def hypothesis(session: str, words: Speech, seq: int) -> bytes:
    return builders.hypothesis(session, seq, speech=words, is_final=seq == HOPS - 1).encode()


Finals = dict[int, Speech]


def clean_finals(settings: Settings, plan: dict[str, Speech]) -> dict[str, Finals]:
    """Per session, segment -> its final's words, as one assembler that never stops stitches the same hypotheses."""
    assembly = Assembly(settings, load_state=lambda _session: None)
    finals: dict[str, Finals] = defaultdict(dict)
    offsets: dict[str, int] = defaultdict(int)
    for seq in range(HOPS):
        for session, words in plan.items():
            handled = assembly.handle(hypothesis(session, words, seq), 160.0, offsets[session])
            offsets[session] += 1
            for message in handled.outgoing:
                if message.topic == settings.topics.transcripts:
                    transcript = contracts.Transcript.decode(message.value)
                    if transcript.kind == "final":
                        finals[session][transcript.segment] = [(w.word, w.start_ms, w.end_ms) for w in transcript.words]
    return finals


def test_two_assemblers_one_killed_and_restarted_under_load_repeat_and_lose_no_word(
    make_settings: SettingsFactory,
) -> None:
    """The survivor takes the killed member's partitions over (its sessions' state from the changelog), then
    gives half back to the restarted one, while every session streams; both moves happen mid-segment."""
    # The killed member holds its partitions until its session times out: keep that short.
    settings = make_settings(partitions=4, kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500})
    topics = settings.topics
    run = uuid.uuid4().hex[:4]
    plan = {session: speech(n) for n, session in enumerate(sessions_on_every_partition(settings, run))}
    reference = clean_finals(settings, plan)
    assert all(
        [w for segment in sorted(finals) for w in finals[segment]] == plan[session] and len(finals) == SEGMENTS
        for session, finals in reference.items()
    ), "the clean run commits every word, one final per segment"
    reader = TopicReader(settings, {topics.transcripts: contracts.Transcript, topics.latency: contracts.LatencyEvent})
    sender = threading.Thread(target=send_in_real_time, args=(settings, plan), name="hypotheses", daemon=True)

    def finished() -> bool:
        """Every session's last hop went through an assembler (its outputs are out before its latency event)."""
        return {e.session_id for e in reader.records(topics.latency) if e.hop_seq == HOPS - 1} == set(plan)

    with ServiceProcess(settings, "assembler") as staying, ServiceProcess(settings, "assembler") as killed:
        staying.wait_ready(90)
        killed.wait_ready(90)
        sender.start()
        time.sleep(KILL_AT_S)
        before = len(staying.lines)
        killed.kill()  # mid-segment, without a drain or a commit
        assert wait_for(lambda: owns_all(staying, before), 30), "the survivor took the killed one's partitions over"
        with ServiceProcess(settings, "assembler") as restarted:
            restarted.wait_ready(90)
            sender.join(HOPS * HOP_MS / 1000.0 + 10)
            reader.wait_for(finished, 60)
            assert restarted.terminate(30) == 0, restarted.output[-3000:]
        assert staying.terminate(30) == 0, staying.output[-3000:]
    reader.close()
    restored = [int(n) for n in re.findall(r"restored (\d+) sessions", restarted.output)]
    assert restored and max(restored) > 0, "live sessions moved to the restarted assembler"
    assert_transcripts(reader, settings, plan, reference)


def sessions_on_every_partition(settings: Settings, run: str) -> list[str]:
    """SESSIONS ids, as many on each partition: the restarted member then always takes live sessions over,
    whatever the run id (plain numbered ids once all hashed onto the two partitions the survivor kept)."""
    partition_of = Assembly(settings, load_state=lambda _session: None).partition_of
    per_partition = SESSIONS // settings.topics.partitions
    chosen: dict[int, list[str]] = defaultdict(list)
    n = 0
    while sum(map(len, chosen.values())) < SESSIONS:
        session = f"asm-{run}-{n:03d}"
        bucket = chosen[partition_of(session)]
        if len(bucket) < per_partition:
            bucket.append(session)
        n += 1
    return sorted(s for bucket in chosen.values() for s in bucket)


def owns_all(assembler: ServiceProcess, since: int) -> bool:
    """Whether ``assembler`` logged, after its line ``since``, loading the sessions of every partition."""
    return any("of partitions [0, 1, 2, 3]" in line for line in assembler.lines[since:])


def end_changelogs_in_a_batch(settings: Settings) -> None:
    """End every partition of the stitching changelog with one batch of several records, as a busy assembler's
    state writes often are (here: rows of sessions that never existed, which the assembler skips as unreadable).

    The embedded broker reports such a partition's end as the batch's first offset + 1, below what a member
    recovering the partition reads (the whole batch): at the next rebalance faust's recovery consistency check
    then crashed that member.
    """
    producer = make_producer(settings, **{"linger.ms": 200})
    changelog = f"{settings.app_id}-assembler-stitching-changelog"
    for batch in (1, 4):  # a record first: the broker's reported end is then past 0, which faust checks
        for partition in range(settings.topics.partitions):
            for n in range(batch):
                producer.produce(changelog, key=f"never-{batch}-{n}".encode(), value=b"{}", partition=partition)
        assert producer.flush(10) == 0


def send_in_real_time(settings: Settings, plan: dict[str, Speech], hops: int = HOPS) -> None:
    """Each of the first ``hops`` hops of every session at its real-time moment."""
    producer = make_producer(settings)
    start = time.monotonic()
    for seq in range(hops):
        time.sleep(max(0.0, start + seq * HOP_MS / 1000.0 - time.monotonic()))
        for session, words in plan.items():
            producer.produce(settings.topics.hypotheses, key=session.encode(), value=hypothesis(session, words, seq))
        producer.poll(0)
    assert producer.flush(30) == 0


def assert_transcripts(
    reader: TopicReader, settings: Settings, plan: dict[str, Speech], reference: dict[str, Finals]
) -> None:
    """Every hop assembled; per session exactly one final per segment, the clean run's; no committed word twice."""
    topics = settings.topics
    latency = {(e.session_id, e.hop_seq) for e in reader.records(topics.latency)}
    assert latency >= {(session, seq) for session in plan for seq in range(HOPS)}, "every hop was assembled"
    for session in plan:
        transcripts = [t for t in reader.records(topics.transcripts) if t.session_id == session]
        # A final sent again after a crash is the same final: (segment, hop_seq, words) is its identity.
        finals = {
            (t.segment, t.hop_seq, tuple((w.word, w.start_ms, w.end_ms) for w in t.words))
            for t in transcripts
            if t.kind == "final"
        }
        segments = [segment for segment, _hop, _words in finals]
        assert sorted(segments) == sorted(reference[session]), f"{session}: not exactly one final per segment"
        assert {segment: list(words) for segment, _hop, words in finals} == reference[session], (
            f"{session}: finals differ from the clean run"
        )
        for transcript in transcripts:  # partials too: a committed word never goes back or repeats
            starts = [w.start_ms for w in transcript.words]
            assert starts == sorted(set(starts)), f"{session}: a committed word repeats in {transcript}"


def test_an_assembler_survives_back_to_back_rebalances_over_changelogs_that_end_in_a_batch(
    make_settings: SettingsFactory,
) -> None:
    """A second assembler joins and leaves again, with no state written in between; then a session streams.

    On joining, both recover their partitions' changelogs, each ending in a batch of several records: they read
    the whole batch, past the end the embedded broker reports. When the second one left, faust's recovery
    consistency check took the survivor's offsets for a corrupt local store and crashed it (ConsistencyError):
    one rebalance after another, e.g. a member restarting, stopped the whole assembler group.
    """
    settings = make_settings(partitions=4, kafka={"session_timeout_ms": 2000, "heartbeat_interval_ms": 500})
    session = f"b2b-{uuid.uuid4().hex[:4]}"
    plan = {session: speech(0)}
    reference = clean_finals(settings, plan)
    reader = TopicReader(
        settings, {settings.topics.transcripts: contracts.Transcript, settings.topics.latency: contracts.LatencyEvent}
    )
    with ServiceProcess(settings, "assembler") as staying:
        staying.wait_ready(90)
        end_changelogs_in_a_batch(settings)
        with ServiceProcess(settings, "assembler") as joining:
            joining.wait_ready(90)
            before = len(staying.lines)
            assert joining.terminate(30) == 0, joining.output[-3000:]
        assert wait_for(lambda: owns_all(staying, before) or not staying.running, 30)
        assert staying.running, "\n".join(line for line in staying.lines if "Error" in line)[-3000:]
        send_in_real_time(settings, plan, hops=SEGMENT_HOPS)
        reader.wait_for(lambda: any(t.kind == "final" for t in reader.records(settings.topics.transcripts)), 30)
        assert staying.terminate(30) == 0, staying.output[-3000:]
    reader.close()
    finals = [t for t in reader.records(settings.topics.transcripts) if t.kind == "final"]
    assert [(t.segment, [(w.word, w.start_ms, w.end_ms) for w in t.words]) for t in finals] == [
        (0, reference[session][0])
    ]
