"""Stitching hypotheses into transcripts (pipeline/assembly/policy.py) under a fake clock."""

import json
import random
from dataclasses import replace

import pytest

from pipeline import contracts
from pipeline.assembly.policy import RECENT_OFFSETS, Expiry, Outcome, Stitcher, StitchingPolicy
from tests.plugins import builders
from tests.plugins.clock import FakeClock

HOP_MS = 160.0
WINDOW_MS = 1280.0

#: (word, start_ms, end_ms) in stream time: two phrases with 1.2 s of silence between.
SPEECH = [
    ("turn", 200, 420),
    ("the", 460, 560),
    ("lights", 600, 980),
    ("off", 1020, 1300),
    ("in", 1340, 1440),
    ("the", 1480, 1580),
    ("kitchen", 1620, 2100),
    ("thank", 3300, 3560),
    ("you", 3600, 3800),
]


def word(text: str, start_ms: float, end_ms: float, confidence: float = 0.9) -> contracts.Word:
    return contracts.Word(word=text, start_ms=start_ms, end_ms=end_ms, confidence=confidence)


def words_in_window(speech: list[tuple[str, float, float]], start: float, end: float) -> tuple[contracts.Word, ...]:
    """What a recognizer hears: words whose start is inside the window; the last one, still
    being spoken at the window's end, comes out cut and misheard."""
    heard = []
    for text, w_start, w_end in speech:
        if w_start < start or w_start >= end:
            continue
        if w_end > end:
            heard.append(word(text[:2] + "h", w_start, end, confidence=0.3))
        else:
            heard.append(word(text, w_start, w_end))
    return tuple(heard)


#: Stitching reads none of the pipeline's timestamps: each is the hop's ready time here.
READY_STEPS_MS = dict.fromkeys(builders.HYPOTHESIS_STEPS_MS, HOP_MS)


def window_hypothesis(
    session: str, seq: int, words: tuple[contracts.Word, ...], start: float, end: float, first_capture_ts_ms: float
) -> contracts.Hypothesis:
    """A hypothesis with what stitching reads; the other fields are ordinary values."""
    return builders.hypothesis(
        session,
        seq,
        words=words,
        window_start_ms=start,
        window_end_ms=end,
        window_secs=(end - start) / 1000.0,
        batch_size=1,
        worker_id="w1",
        first_capture_ts_ms=first_capture_ts_ms,
        steps_ms=READY_STEPS_MS,
    )


def hypothesis(
    session: str, seq: int, speech=SPEECH, is_final: bool = False, window_ms: float = WINDOW_MS
) -> contracts.Hypothesis:
    end = (seq + 1) * HOP_MS
    start = max(0.0, end - window_ms)
    heard = words_in_window(speech, start, end)
    hyp = window_hypothesis(session, seq, heard, start, end, 1_795_000_000_000.0 + seq * HOP_MS)
    return replace(hyp, is_final=is_final)


def run(stitcher: Stitcher, clock: FakeClock, hops, emit_interval_ms: float = 160.0) -> list[contracts.Transcript]:
    transcripts: list[contracts.Transcript] = []
    for hyp in hops:
        transcripts.extend(stitcher.accept(hyp, emit_interval_ms).transcripts)
        clock.now += HOP_MS
    return transcripts


def stream(session: str = "s1", hops: int = 30) -> list[contracts.Hypothesis]:
    return [hypothesis(session, seq, is_final=seq == hops - 1) for seq in range(hops)]


def final_words(transcripts: list[contracts.Transcript]) -> list[tuple[str, float]]:
    return [(w.word, w.start_ms) for t in transcripts if t.kind == "final" for w in t.words]


def assert_committed_only_grows(transcripts: list[contracts.Transcript]) -> None:
    """Within a segment each message's committed words extend the previous ones: nothing
    committed is ever changed or sent again as new."""
    previous: dict[int, list] = {}
    for t in transcripts:
        words = [(w.word, w.start_ms) for w in t.words]
        before = previous.get(t.segment, [])
        assert words[: len(before)] == before, (before, words)
        previous[t.segment] = words


def test_overlapping_windows_commit_each_word_once_in_order() -> None:
    clock = FakeClock(1_000_000.0)
    transcripts = run(Stitcher(clock=clock), clock, stream())
    assert final_words(transcripts) == [(w, s) for w, s, _ in SPEECH]
    assert_committed_only_grows(transcripts)
    partials = {t.hop_seq: t for t in transcripts if t.kind == "partial"}
    assert partials[5].text == "turn the lih"  # the tail shows the newest guess at once
    assert partials[8].text == "turn the lights off in"
    assert all("lih" not in t.committed_text for t in transcripts)


def test_misheard_tail_is_shown_but_never_committed() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    outcome = Outcome("applied")
    for seq in range(4):  # window ends at 640 ms, inside "lights" (600-980)
        outcome = stitcher.accept(hypothesis("s1", seq), 160)
        clock.now += HOP_MS
    (partial,) = outcome.transcripts
    assert partial.tail_text.endswith("lih")
    assert "lih" not in partial.committed_text
    assert partial.text == " ".join(t for t in (partial.committed_text, partial.tail_text) if t)


def test_endpoint_after_silence_closes_a_segment_with_word_times() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    transcripts = run(stitcher, clock, [hypothesis("s1", seq) for seq in range(22)])
    finals = [t for t in transcripts if t.kind == "final"]
    assert len(finals) == 1
    (first,) = finals
    assert first.segment == 0
    assert first.text == "turn the lights off in the kitchen"
    assert first.tail_text == ""
    assert [(w.start_ms, w.end_ms) for w in first.words] == [(s, e) for _, s, e in SPEECH[:7]]
    # "kitchen" ends at 2100: the first window ending >= 600 ms later is hop 16 (ends at 2720).
    assert first.hop_seq == 16
    later = [t for t in transcripts if t.hop_seq > 16]
    assert later and all(t.segment == 1 for t in later)


def test_final_hop_closes_the_last_segment_and_the_session() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    transcripts = run(stitcher, clock, stream(hops=30))
    finals = [t for t in transcripts if t.kind == "final"]
    assert [(f.segment, f.text) for f in finals] == [(0, "turn the lights off in the kitchen"), (1, "thank you")]
    after = stitcher.accept(hypothesis("s1", 30), 160)
    assert after.status == "closed" and not after.transcripts


def test_final_hop_mid_word_commits_the_tail_as_heard() -> None:
    clock = FakeClock(1_000_000.0)
    transcripts = run(Stitcher(clock=clock), clock, [hypothesis("s1", seq, is_final=seq == 4) for seq in range(5)])
    assert [t.kind for t in transcripts][-1] == "final"
    assert transcripts[-1].committed_text == "turn the lih"
    assert transcripts[-1].tail_text == ""


def test_silent_stream_sends_no_partials_but_one_empty_final() -> None:
    clock = FakeClock(1_000_000.0)
    hops = [hypothesis("quiet", seq, speech=[], is_final=seq == 9) for seq in range(10)]
    transcripts = run(Stitcher(clock=clock), clock, hops)
    assert [(t.kind, t.text) for t in transcripts] == [("final", "")]


@pytest.mark.parametrize(("interval", "every_nth_hop"), [(160.0, 1), (320.0, 2)])
def test_partials_follow_the_emit_interval(interval: float, every_nth_hop: int) -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    emitted_hops = []
    for seq in range(1, 12):
        outcome = stitcher.accept(hypothesis("s1", seq), interval)
        emitted_hops += [t.hop_seq for t in outcome.transcripts if t.kind == "partial"]
        clock.now += HOP_MS
    assert emitted_hops == list(range(1, 12, every_nth_hop))


def test_a_backlog_drained_at_once_does_not_flood_partials() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    outcomes = [stitcher.accept(hypothesis("s1", seq), 160) for seq in range(1, 10)]  # clock stands still
    assert sum(o.emitted for o in outcomes) == 1
    clock.now += 80
    assert stitcher.accept(hypothesis("s1", 10), 160).emitted


def test_duplicate_and_out_of_order_hops_are_ignored() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    run(stitcher, clock, [hypothesis("s1", seq) for seq in range(6)])
    snapshot = stitcher.snapshot("s1")
    duplicate = stitcher.accept(hypothesis("s1", 5), 160)
    stale = stitcher.accept(hypothesis("s1", 3), 160)
    assert (duplicate.status, stale.status) == ("duplicate", "stale")
    assert not duplicate.transcripts and not stale.transcripts
    assert "hop 3" in stale.reason and "hop 5" in stale.reason
    assert stitcher.snapshot("s1") == snapshot


def test_redelivered_and_reordered_stream_still_yields_each_word_once() -> None:
    rng = random.Random(7)
    hops = stream(hops=30)
    delivered = []
    for hyp in hops:
        delivered.append(hyp)
        if rng.random() < 0.3:
            delivered.append(hyp)  # worker restart: processed twice
        if delivered[-1].hop_seq > 2 and rng.random() < 0.2:
            delivered.append(hops[hyp.hop_seq - 2])  # an older hop arrives late
    clock = FakeClock(1_000_000.0)
    transcripts = run(Stitcher(clock=clock), clock, delivered)
    assert final_words(transcripts) == [(w, s) for w, s, _ in SPEECH]
    assert_committed_only_grows(transcripts)


def test_skipped_hops_keep_tail_words_the_new_window_no_longer_covers() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    stitcher.accept(hypothesis("s1", 3), 160)  # window 0-640: "turn the" + cut "lights"
    clock.now += HOP_MS
    # The worker fell behind and skipped to hop 15 (window 1280-2560): "turn the lights" left it.
    outcome = stitcher.accept(hypothesis("s1", 15, is_final=True), 160)
    (final,) = outcome.transcripts
    assert final.committed_text.startswith("turn the")
    assert final.committed_text.endswith("in the kitchen")
    assert len(final.words) == len({w.start_ms for w in final.words})


def test_a_committed_word_redecoded_with_shifted_timing_is_not_repeated() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(StitchingPolicy(stable_after_ms=0), clock=clock)
    first = replace(hypothesis("s1", 5, speech=[("hello", 200, 500)]), window_start_ms=0.0)
    stitcher.accept(first, 160)
    shifted = replace(
        first, hop_seq=6, window_end_ms=first.window_end_ms + HOP_MS, words=(word("Hello,", 330, 700, 1.0),)
    )
    clock.now += HOP_MS
    outcome = stitcher.accept(shifted, 160)
    (partial,) = outcome.transcripts
    assert partial.text == "hello"


def test_invalid_input_comes_back_as_data() -> None:
    stitcher = Stitcher(clock=FakeClock(1_000_000.0))
    bad_window = replace(hypothesis("s1", 0), window_start_ms=500.0, window_end_ms=100.0)
    assert stitcher.accept(bad_window, 160).status == "invalid"
    assert "bad window" in stitcher.accept(replace(bad_window, window_end_ms=float("inf")), 160).reason
    assert stitcher.accept(replace(hypothesis("s1", 1), session_id=""), 160).reason == "no session_id"
    words = (
        word(" ", 0.0, 10.0, 1.0),
        word("late", 90.0, 10.0, 1.0),
        word("nan", float("nan"), 10.0, 1.0),
        word("ok", 10.0, 60.0, 1.0),
    )
    outcome = stitcher.accept(replace(hypothesis("s1", 0), words=words, is_final=True), 160)
    assert outcome.status == "applied" and outcome.dropped_words == 3
    assert outcome.transcripts[0].text == "ok"


def test_state_survives_a_snapshot_round_trip_through_json() -> None:
    hops = stream(hops=30)
    clock = FakeClock(1_000_000.0)
    uninterrupted = run(Stitcher(clock=clock), clock, hops)

    clock = FakeClock(1_000_000.0)
    first = Stitcher(clock=clock)
    before = run(first, clock, hops[:12])
    restored = Stitcher(clock=clock)
    restored.restore(json.loads(json.dumps(first.snapshot("s1"))))
    after = run(restored, clock, hops[11:])  # hop 11 again: a replay after the restart

    def unstamped(transcripts: list[contracts.Transcript]) -> list[contracts.Transcript]:
        return [replace(t, published_ts_ms=0.0) for t in transcripts]  # the replay took a hop of wall time

    assert unstamped(before + after) == unstamped(uninterrupted)


def test_idle_sessions_get_a_final_and_closed_ones_are_forgotten() -> None:
    clock = FakeClock(1_000_000.0)
    policy = StitchingPolicy(idle_timeout_ms=5_000, closed_retention_ms=20_000)
    stitcher = Stitcher(policy, clock=clock)
    (*_, last_partial) = run(stitcher, clock, [hypothesis("s1", seq) for seq in range(5)])
    clock.now += 4_000
    assert stitcher.expire() == Expiry()
    clock.now += 2_000
    expiry = stitcher.expire()
    (final,) = expiry.finals
    assert final.kind == "final" and final.committed_text == last_partial.text == "turn the lih"
    assert expiry.closed == ["s1"] and not expiry.forgotten
    assert stitcher.accept(hypothesis("s1", 6), 160).status == "closed"
    clock.now += 16_000
    assert stitcher.expire() == Expiry(), "retention counts from the close (16 s ago), not the last hop (22 s)"
    assert stitcher.accept(hypothesis("s1", 7), 160).status == "closed", "a late hop stays a late hop"
    clock.now += 4_000
    assert stitcher.expire() == Expiry(forgotten=["s1"])
    assert "s1" not in stitcher


def test_a_forgotten_session_that_comes_back_numbers_its_segments_from_its_hop() -> None:
    """Its segment 0 already had its final: the hop that brings it back opens segment 8, not 0 again."""
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(StitchingPolicy(idle_timeout_ms=5_000, closed_retention_ms=20_000), clock=clock)
    run(stitcher, clock, [hypothesis("s1", seq) for seq in range(5)])
    clock.now += 6_000
    assert [final.segment for final in stitcher.expire().finals] == [0]
    clock.now += 20_000
    assert stitcher.expire().forgotten == ["s1"]
    back = run(stitcher, clock, [hypothesis("s1", 8, is_final=True)])
    assert [(t.kind, t.segment) for t in back] == [("final", 8)]


def test_a_forgotten_session_heard_again_at_hop_zero_opens_no_final_it_already_sent() -> None:
    """Hop 0 redelivered after the retention (or the id reused): segment 0 had its final, so it opens segment 1."""
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(StitchingPolicy(idle_timeout_ms=5_000, closed_retention_ms=20_000), clock=clock)
    first = run(stitcher, clock, [hypothesis("s1", 0, is_final=True)])
    assert [(t.kind, t.segment) for t in first] == [("final", 0)]
    clock.now += 21_000
    assert stitcher.expire().forgotten == ["s1"]
    again = run(stitcher, clock, [hypothesis("s1", 0, is_final=True)])
    assert again == []  # nothing heard: segment 1 has no words, so no (empty) final
    assert (stitcher.snapshot("s1") or {}).get("segment") == 1


def test_the_last_word_of_a_closed_segment_is_not_repeated_in_the_next() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    transcripts = run(stitcher, clock, [hypothesis("s1", seq) for seq in range(17)])
    assert transcripts[-1].kind == "final" and transcripts[-1].text.endswith("kitchen")
    # Hop 17 re-decodes "kitchen" (1620-2100) late and long enough that its middle passes the horizon.
    late = replace(hypothesis("s1", 17), words=(word("kitchen", 1900, 2500, 1.0),))
    assert stitcher.accept(late, 160).transcripts == ()
    assert (stitcher.snapshot("s1") or {}).get("tail") == []


def real_hop(
    seq: int, start: float, *spec: tuple[str, float, float], window_ms: float = WINDOW_MS
) -> contracts.Hypothesis:
    """A hypothesis as the real model produced it for a window starting at ``start``."""
    heard = tuple(word(w, s, e) for w, s, e in spec)
    return window_hypothesis("real", seq, heard, start, start + window_ms, 0.0)


def test_the_rest_of_a_word_cut_by_the_window_start_is_not_a_new_word() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    hops = [
        real_hop(19, 1920, ("since", 2102, 2383), ("sunday", 2462, 2863)),
        real_hop(20, 2080, ("since", 2103, 2383), ("sunday", 2463, 2862)),
        real_hop(21, 2240, ("sunday", 2463, 2862)),
        real_hop(22, 2400, ("sunday", 2462, 2863)),
        real_hop(23, 2560, ("under", 2583, 2863)),
        real_hop(24, 2720, ("eight", 2823, 2983)),  # "...day" after the window cut "sunday"
        real_hop(25, 2880),
    ]
    transcripts = run(stitcher, clock, hops)
    assert [(t.kind, t.text) for t in transcripts if t.kind == "final"] == [("final", "since sunday")]
    assert all("eight" not in t.text for t in transcripts)


def test_a_word_cut_by_the_window_end_and_misheard_twice_is_not_committed() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    hops = [
        real_hop(29, 3520, ("we", 4422, 4582), ("are", 4582, 4702), ("oh", 4702, 4742)),
        real_hop(30, 3680, ("we", 4422, 4582), ("are", 4582, 4702), ("oh", 4742, 4783)),  # "open", cut
        real_hop(31, 3840, ("we", 4423, 4582), ("are", 4582, 4702), ("open", 4742, 4983)),
        real_hop(32, 4000, ("we", 4463, 4583), ("are", 4583, 4703), ("open", 4742, 4982), ("from", 5022, 5222)),
        real_hop(33, 4160, ("we", 4463, 4583), ("are", 4583, 4743), ("open", 4743, 4983), ("from", 5022, 5263)),
    ]
    transcripts = run(stitcher, clock, hops)
    assert [t.tail_text.split()[-1] for t in transcripts[:3]] == ["oh", "oh", "open"]
    assert all("oh" not in t.committed_text.split() for t in transcripts)
    assert transcripts[-1].committed_text == "we are open"


def test_a_word_heard_before_survives_a_garbled_hop_and_the_window_start() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    hops = [  # 0.96 s windows: "extra large mocha"
        real_hop(10, 800, ("your", 862, 982), ("extra", 982, 1383), ("large", 1422, 1662), window_ms=960),
        real_hop(11, 960, ("extra", 1022, 1383), ("large", 1423, 1702), window_ms=960),
        real_hop(12, 1120, ("start", 1182, 1703), ("mocha", 1742, 2022), window_ms=960),  # garbled
        real_hop(13, 1280, ("a", 1383, 1422), ("large", 1422, 1703), ("mocha", 1743, 2022), window_ms=960),
        replace(real_hop(14, 1440, ("large", 1463, 1703), ("mocha", 1743, 2062), window_ms=960), is_final=True),
    ]
    transcripts = run(stitcher, clock, hops)
    assert transcripts[-1].kind == "final"
    assert transcripts[-1].text == "your extra large mocha"


def test_a_word_at_the_very_start_of_a_session_keeps_its_full_timing() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    speech = [("call", 120, 400), ("me", 440, 560)]
    hops = [hypothesis("early", seq, speech=speech, is_final=seq == 5) for seq in range(6)]
    transcripts = run(stitcher, clock, hops)
    assert [(w.word, w.start_ms, w.end_ms) for w in transcripts[-1].words] == [
        ("call", 120, 400),
        ("me", 440, 560),
    ]


def test_a_hypothesis_replayed_after_a_restore_from_its_own_snapshot_emits_nothing() -> None:
    clock = FakeClock(1_000_000.0)
    first = Stitcher(clock=clock)
    hops = stream(hops=12)
    for offset, hyp in enumerate(hops[:-1]):
        first.accept(hyp, 160, offset=offset)
    last = first.accept(hops[-1], 160, offset=11)
    assert last.transcripts and last.transcripts[-1].kind == "final"
    restored = Stitcher(clock=clock)
    restored.restore(json.loads(json.dumps(first.snapshot("s1"))))
    for offset, hyp in enumerate(hops):  # the crash came before the offsets were committed
        replay = restored.accept(hyp, 160, offset=offset)
        assert replay.status == "replayed" and not replay.transcripts
    redelivered = restored.accept(hops[-1], 160, offset=12)  # the worker sent it again: a new offset
    assert redelivered.status == "closed" and not redelivered.transcripts


def test_a_record_skipped_then_read_again_behind_applied_ones_is_taken_not_replayed() -> None:
    """The consumer skipped offset 6 at a takeover and read it again at the next rebalance, after 7 and 8
    were applied: it was never applied, so it is a late hop (latency event), not a replay (nothing)."""
    clock = FakeClock(1_000_000.0)
    first = Stitcher(clock=clock)
    hops = stream(hops=12)
    for offset in (0, 1, 2, 3, 4, 5, 7, 8):
        assert first.accept(hops[offset], 160, offset=offset).status == "applied"
    restored = Stitcher(clock=clock)
    restored.restore(json.loads(json.dumps(first.snapshot("s1"))))
    for stitcher in (first, restored):
        assert stitcher.accept(hops[6], 160, offset=6).status == "stale"
        assert stitcher.accept(hops[7], 160, offset=7).status == "replayed"


def test_offsets_older_than_the_ones_kept_count_as_replays() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    hops = stream(hops=RECENT_OFFSETS + 3)
    for seq, hyp in enumerate(hops):
        if seq != 1:  # offset 1 skipped, then pushed out of the kept offsets by the ones after it
            stitcher.accept(hyp, 160, offset=seq)
    assert stitcher.accept(hops[1], 160, offset=1).status == "replayed"
    assert len(stitcher.snapshot("s1")["recent_offsets"]) == RECENT_OFFSETS


def unbroken_speech(seconds: float) -> list[tuple[str, float, float]]:
    """A word every 400 ms (300 ms of word, 100 ms gap): never a pause long enough for an endpoint."""
    return [(f"w{i}", i * 400.0, i * 400.0 + 300.0) for i in range(int(seconds * 1000 / 400))]


def test_state_writes_stay_bounded_through_five_minutes_of_unbroken_speech() -> None:
    """Without a segment cap the largest write was 53 kB (50 MB in all); capped at 100 words, 7.9 kB (7.9 MB)."""
    speech = unbroken_speech(300.0)
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(clock=clock)
    sizes: list[int] = []
    transcripts: list[contracts.Transcript] = []
    hops = int(300_000 / HOP_MS)
    for seq in range(hops):
        transcripts += stitcher.accept(hypothesis("s1", seq, speech, is_final=seq == hops - 1), 160).transcripts
        sizes.append(len(json.dumps(stitcher.snapshot("s1"), separators=(",", ":"))))
        clock.now += HOP_MS
    first_minute = max(sizes[: int(60_000 / HOP_MS)])
    assert max(sizes) <= 1.1 * first_minute, "a write's size must not grow with the segment"
    finals = [t for t in transcripts if t.kind == "final"]
    assert len(finals) > 1 and all(len(f.words) <= StitchingPolicy().max_segment_words for f in finals)
    assert [w.word for f in finals for w in f.words] == [text for text, _, _ in speech], "no word lost or repeated"
    assert_committed_only_grows(transcripts)


def test_a_new_session_beyond_the_cap_closes_the_least_recently_heard_with_its_final() -> None:
    clock = FakeClock(1_000_000.0)
    stitcher = Stitcher(StitchingPolicy(max_sessions=2), clock=clock)
    for session in ("a", "b"):
        for seq in range(4):
            stitcher.accept(hypothesis(session, seq), 160)
            clock.now += HOP_MS
    stitcher.accept(hypothesis("a", 4), 160)  # "b" is now the least recently heard
    outcome = stitcher.accept(hypothesis("c", 0), 160)
    assert outcome.status == "applied" and outcome.evicted == ("b",)
    (final,) = [t for t in outcome.transcripts if t.session_id == "b"]
    assert final.kind == "final" and final.text == "turn the lih"  # its tail as heard, like an idle final
    assert stitcher.accept(hypothesis("b", 5), 160).status == "closed"
    assert stitcher.accept(hypothesis("a", 5), 160).status == "applied"
    outcomes = []
    for seq in range(6, 12):
        clock.now += HOP_MS
        outcomes.append(stitcher.accept(hypothesis("a", seq), 160))
    assert any(o.transcripts for o in outcomes)
    assert all(o.evicted == () for o in outcomes), "a session's own transcripts are not evictions"
