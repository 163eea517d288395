"""The assembler's bytes-in/bytes-out logic: one latency event per hypothesis, throttled or not."""

from __future__ import annotations

from typing import Any

from pipeline import contracts
from pipeline.assembly.service import Assembly
from pipeline.observe.latency import COMPONENTS, measures
from pipeline.settings import Settings, TopicSettings
from tests.plugins import builders
from tests.plugins.clock import FakeClock

BASE_MS = 1_795_000_000_000.0
SETTINGS = Settings(topics=TopicSettings(prefix="unit"))


HELLO_WORLD = builders.words(("hello", 100.0, 400.0), ("world", 500.0, 900.0))
#: A hop's timestamps, from the capture of its first frame.
STEPS_MS = {
    "ready_ts_ms": 160.0,
    "hop_published_ts_ms": 161.0,
    "received_ts_ms": 165.0,
    "batch_closed_ts_ms": 180.0,
    "infer_start_ts_ms": 200.0,
    "infer_end_ts_ms": 260.0,
}


def hypothesis(seq: int, session: str = "s1", **overrides: Any) -> contracts.Hypothesis:
    """Hop ``seq`` of a session saying "hello world" (each word once begun, whole); its timestamps follow the hop's
    capture by :data:`STEPS_MS`."""
    fields: dict[str, Any] = {
        "words": tuple(w for w in HELLO_WORLD if w.start_ms < (seq + 1) * 160.0),
        "text": "",
        "first_capture_ts_ms": BASE_MS + seq * 160.0,
        "steps_ms": STEPS_MS,
        "beam": 2,
        "window_secs": 0.96,
        "batch_size": 3,
        "control_level": 3,
        "worker_id": "w7",
        **overrides,
    }
    return builders.hypothesis(session, seq, **fields)


def feed(assembly: Assembly, clock: FakeClock, seq: int, interval: float, **overrides: Any):
    """Deliver hop ``seq`` when its inference ended + 5 ms; returns (latency event, transcripts)."""
    hyp = hypothesis(seq, **overrides)
    clock.now = hyp.infer_end_ts_ms + 5.0
    handled = assembly.handle(hyp.encode(), interval)
    events = [contracts.LatencyEvent.decode(m.value) for m in handled.outgoing if m.topic == SETTINGS.topics.latency]
    transcripts = [
        contracts.Transcript.decode(m.value) for m in handled.outgoing if m.topic == SETTINGS.topics.transcripts
    ]
    assert len(events) == 1
    return events[0], transcripts


def test_each_hypothesis_gets_one_event_that_adds_up_and_is_marked_emitted_or_not() -> None:
    clock = FakeClock(BASE_MS)
    assembly = Assembly(SETTINGS, load_state=lambda session: None, clock=clock)
    flags = []
    for seq in range(1, 9):
        event, transcripts = feed(assembly, clock, seq, interval=320.0)
        flags.append(event.emitted)
        assert sum(measures(event)[name] for name in COMPONENTS) == event.e2e_ms
        assert (event.queue_wait_ms, event.batch_wait_ms, event.gpu_infer_ms) == (24.0, 15.0, 60.0)
        assert (event.beam, event.window_secs, event.control_level, event.batch_size) == (2, 0.96, 3, 3)
        if transcripts:
            (transcript,) = transcripts
            assert event.event_ts_ms == transcript.published_ts_ms
        assert event.post_ms == 5.0
    assert flags == [True, False] * 4  # throttled to every other hop


def test_replayed_hypothesis_is_accounted_but_not_emitted() -> None:
    clock = FakeClock(BASE_MS)
    assembly = Assembly(SETTINGS, load_state=lambda session: None, clock=clock)
    first, _ = feed(assembly, clock, 4, interval=160.0)
    again, transcripts = feed(assembly, clock, 4, interval=160.0)
    assert first.emitted and not again.emitted and not transcripts
    assert again.hop_seq == 4 and again.e2e_ms == first.e2e_ms


def test_state_comes_back_from_the_store_after_a_restart() -> None:
    clock = FakeClock(BASE_MS)
    store: dict[str, bytes] = {}
    before = Assembly(SETTINGS, load_state=store.get, clock=clock)
    for seq in range(1, 8):
        hyp = hypothesis(seq)
        clock.now = hyp.infer_end_ts_ms
        handled = before.handle(hyp.encode(), 160.0)
        assert handled.session_id == "s1" and handled.state is not None
        store[handled.session_id] = handled.state
    after = Assembly(SETTINGS, load_state=store.get, clock=clock)
    replay, transcripts = feed(after, clock, 7, interval=160.0)
    assert not replay.emitted and not transcripts
    _, (final,) = feed(after, clock, 8, interval=160.0, is_final=True)
    assert final.kind == "final" and final.text == "hello world"


def test_unreadable_and_unstitchable_hypotheses_are_dead_lettered() -> None:
    assembly = Assembly(SETTINGS, load_state=lambda session: None, clock=FakeClock(BASE_MS))
    garbage = assembly.handle(b"\x00garbage", 160.0)
    assert garbage.dead_letter_reason and "Avro" in garbage.dead_letter_reason and not garbage.outgoing
    reversed_window = hypothesis(3, window_start_ms=900.0, window_end_ms=100.0)
    bad = assembly.handle(reversed_window.encode(), 160.0)
    assert bad.dead_letter_reason and "bad window" in bad.dead_letter_reason and not bad.outgoing


def test_a_replay_after_a_crash_sends_nothing_not_even_a_latency_event() -> None:
    clock = FakeClock(BASE_MS)
    store: dict[str, bytes] = {}
    before = Assembly(SETTINGS, load_state=store.get, clock=clock)
    for seq in range(1, 6):
        handled = before.handle(hypothesis(seq).encode(), 160.0, offset=seq)
        assert handled.session_id and handled.state
        store[handled.session_id] = handled.state
    after = Assembly(SETTINGS, load_state=store.get, clock=clock)
    for seq in range(1, 6):
        assert after.handle(hypothesis(seq).encode(), 160.0, offset=seq).outgoing == []
    assert [m.topic for m in after.handle(hypothesis(5).encode(), 160.0, offset=9).outgoing] == [
        SETTINGS.topics.latency
    ], "a redelivery by the worker is a new offset: accounted, not emitted"


def test_rebalance_forgets_only_revoked_partitions_and_restores_assigned_ones_for_expiry() -> None:
    settings = Settings(topics=TopicSettings(prefix="unit", partitions=4), assembler={"idle_timeout_s": 1.0})
    clock = FakeClock(BASE_MS)
    store: dict[str, bytes] = {}
    assembly = Assembly(settings, load_state=store.get, clock=clock)
    sessions = [f"s{i}" for i in range(12)]
    for session in sessions:
        handled = assembly.handle(hypothesis(3, session=session).encode(), 160.0)
        store[session] = handled.state or b""
    partitions = {session: assembly.partition_of(session) for session in sessions}
    assert len(set(partitions.values())) > 1
    assembly.forget_partitions({0, 1})
    kept = {s for s, p in partitions.items() if p not in (0, 1)}
    assert set(assembly.stitcher.session_ids()) == kept
    assembly.restore_partitions({0}, store.items())
    assert set(assembly.stitcher.session_ids()) == kept | {s for s, p in partitions.items() if p == 0}
    clock.now += 2_000.0
    outgoing, changes = assembly.expire()
    assert {contracts.Transcript.decode(m.value).session_id for m in outgoing} == set(changes)
    assert set(changes) == set(assembly.stitcher.session_ids())
