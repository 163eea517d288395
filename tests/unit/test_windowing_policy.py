from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from pipeline import audio
from pipeline.settings import AudioSettings
from pipeline.windowing.policy import Frame, Hop, Outcome, ProducerLabels, SessionWindow, Windower

T0 = 1_700_000_000_000.0
SPF = 320  # model-rate samples per 20 ms frame
TRANSPORT_MS = 7.0  # producer -> windower, on the pipeline's clock
HOUR_MS = 3_600_000.0


def arrival(seq: int) -> float:
    """When the windower receives frame ``seq`` of a real-time stream: its audio ends, then transport."""
    return T0 + 20 * (seq + 1) + TRANSPORT_MS


def pcm_frame(seq: int, session: str = "s", eos: bool = False, empty: bool = False) -> Frame:
    """A 16 kHz pcm16 frame whose samples all equal seq + 1, so windows are easy to read."""
    payload = b"" if empty else audio.pcm16_to_bytes(np.full(SPF, seq + 1, dtype=np.int16))
    return Frame(session, seq, T0 + 20 * seq, "pcm16", 16000, payload, eos)


def samples(hop: Hop) -> np.ndarray:
    return audio.pcm16_from_bytes(hop.audio)


def frame_ids(hop: Hop) -> list[int]:
    """Which frames (seq + 1 values, 0 = silence) a window is made of."""
    values = samples(hop).reshape(-1, SPF)
    assert np.all(values == values[:, :1])
    return [int(v) for v in values[:, 0]]


def feed(
    windower: Windower, frames: list[Frame], window_secs: float = 1.28, received: Sequence[float] | None = None
) -> list[Outcome]:
    """Frames in order given, each received at :func:`arrival` of its seq unless ``received`` says."""
    times = received if received is not None else [arrival(f.seq) for f in frames]
    return [windower.accept(f, window_secs, received_ts_ms=t) for f, t in zip(frames, times, strict=True)]


def hops_of(outcomes: list[Outcome]) -> list[Hop]:
    return [hop for o in outcomes for hop in o.hops]


@pytest.fixture
def windower() -> Windower:
    return Windower(AudioSettings())


def test_a_hop_every_eight_frames_with_timing_and_offsets(windower: Windower) -> None:
    hops = hops_of(feed(windower, [pcm_frame(i) for i in range(17)]))
    assert [h.hop_seq for h in hops] == [0, 1]
    assert frame_ids(hops[0]) == list(range(1, 9))
    assert frame_ids(hops[1]) == list(range(1, 17))
    assert hops[1].first_capture_ts_ms == T0 + 160
    assert hops[1].ready_ts_ms == arrival(15)  # the windower received the hop's last frame
    assert hops[1].window_start_sample == 0
    assert not hops[1].is_final and hops[1].gap_frames == 0 and hops[1].duplicate_frames == 0


def test_window_is_the_last_window_secs_and_follows_the_knob(windower: Windower) -> None:
    outcomes = feed(windower, [pcm_frame(i) for i in range(80)])
    last = hops_of(outcomes)[-1]
    assert last.hop_seq == 9
    assert frame_ids(last) == list(range(17, 81))  # 1.28 s = 64 frames
    assert last.window_start_sample == 16 * SPF
    shorter = hops_of(feed(windower, [pcm_frame(i) for i in range(80, 88)], window_secs=0.96))[-1]
    assert shorter.window_secs == 0.96
    assert frame_ids(shorter) == list(range(41, 89))
    assert shorter.window_start_sample == 40 * SPF


def test_duplicates_are_dropped_and_counted(windower: Windower) -> None:
    frames = [pcm_frame(0), pcm_frame(1), pcm_frame(1), pcm_frame(0), *[pcm_frame(i) for i in range(2, 8)]]
    outcomes = feed(windower, frames)
    assert [o.duplicate for o in outcomes[:4]] == [False, False, True, True]
    (hop,) = hops_of(outcomes)
    assert hop.duplicate_frames == 2
    assert frame_ids(hop) == list(range(1, 9))


def test_late_frames_within_tolerance_are_put_in_order(windower: Windower) -> None:
    order = [0, 2, 3, 1, 4, 7, 6, 5]
    (hop,) = hops_of(feed(windower, [pcm_frame(i) for i in order]))
    assert frame_ids(hop) == list(range(1, 9))
    assert hop.gap_frames == 0


def test_missing_frames_past_tolerance_become_counted_silence(windower: Windower) -> None:
    outcomes = feed(windower, [pcm_frame(i) for i in range(7) if i != 2])
    assert not any(o.appended for o in outcomes[2:])  # frame 6 is 4 ahead of frame 2: still waiting
    outcomes = feed(windower, [pcm_frame(7)])
    assert outcomes[0].gaps == 1
    (hop,) = hops_of(outcomes)
    assert frame_ids(hop) == [1, 2, 0, 4, 5, 6, 7, 8]
    assert hop.gap_frames == 1
    assert hop.first_capture_ts_ms == T0
    assert hop.ready_ts_ms == arrival(7)  # frame 7's arrival gave frame 2 up and cut the hop
    late = windower.accept(pcm_frame(2), 1.28, received_ts_ms=arrival(8))
    assert late.late and not late.duplicate and not late.hops


def test_end_of_stream_flushes_a_short_final_hop(windower: Windower) -> None:
    frames = [pcm_frame(i) for i in range(10)] + [pcm_frame(10, eos=True)]
    hops = hops_of(feed(windower, frames))
    assert [(h.hop_seq, h.is_final) for h in hops] == [(0, False), (1, True)]
    assert frame_ids(hops[1]) == list(range(1, 12))
    assert hops[1].first_capture_ts_ms == T0 + 160
    assert hops[1].ready_ts_ms == arrival(10)
    after = windower.accept(pcm_frame(5), 1.28, received_ts_ms=arrival(11))
    assert after.duplicate and not after.hops
    beyond = windower.accept(pcm_frame(11), 1.28, received_ts_ms=arrival(11))
    assert beyond.rejection is not None and "end of stream" in beyond.rejection.reason


def test_empty_end_of_stream_on_a_hop_boundary_still_ends_the_session(windower: Windower) -> None:
    frames = [pcm_frame(i) for i in range(8)] + [pcm_frame(8, eos=True, empty=True)]
    hops = hops_of(feed(windower, frames))
    assert [(h.hop_seq, h.is_final) for h in hops] == [(0, False), (1, True)]
    assert frame_ids(hops[1]) == list(range(1, 9))
    # No new audio: the final hop waited from the last frame's capture to the end-of-stream frame's arrival.
    assert (hops[1].first_capture_ts_ms, hops[1].ready_ts_ms) == (T0 + 140, arrival(8))


def test_end_of_stream_gives_up_frames_still_missing(windower: Windower) -> None:
    frames = [pcm_frame(0), pcm_frame(1), pcm_frame(3, eos=True)]
    (hop,) = hops_of(feed(windower, frames))
    assert hop.is_final and hop.gap_frames == 1
    assert frame_ids(hop) == [1, 2, 0, 4]


def flow(windower: Windower, session: str, start_ms: float, until_ms: float, partition: int = 0) -> list[Outcome]:
    """Session ``session`` streams in real time on ``partition`` from ``start_ms`` to ``until_ms`` (receive times)."""
    count = int((until_ms - start_ms) // 20) + 1
    return [
        windower.accept(pcm_frame(i, session), 1.28, partition=partition, received_ts_ms=start_ms + 20 * i)
        for i in range(count)
    ]


def test_idle_sessions_expire_with_a_final_hop_ready_at_the_check() -> None:
    windower = Windower(AudioSettings(idle_timeout_s=5))
    feed(windower, [pcm_frame(i, "a") for i in range(3)])  # last seen at arrival(2)
    flow(windower, "b", arrival(2) + 20, arrival(2) + 4980)
    assert windower.expire_idle(1.28, now_ms=arrival(2) + 4980) == []
    flow(windower, "c", arrival(2) + 5000, arrival(2) + 5000)
    check = arrival(2) + 5010
    expired = windower.expire_idle(1.28, now_ms=check)
    assert [session.session_id for session, _ in expired] == ["a"]
    (hop,) = expired[0][1].hops
    assert hop.is_final and frame_ids(hop) == [1, 2, 3]
    assert (hop.first_capture_ts_ms, hop.ready_ts_ms) == (T0, check)
    assert windower.expire_idle(1.28, now_ms=check) == []  # closed, kept as a record until the retention ends


def test_a_partition_silent_past_the_idle_timeout_expires_nobody_and_the_session_goes_on(windower: Windower) -> None:
    """An outage stops every frame of a partition: its sessions resume where they were, no final."""
    before = flow(windower, "s", T0, T0 + 20 * 19)  # frames 0..19
    resumed = T0 + 20 * 20 + 60_000
    assert windower.expire_idle(1.28, now_ms=resumed) == []
    after = [
        windower.accept(pcm_frame(i, "s"), 1.28, received_ts_ms=resumed + 2 * (i - 20)) for i in range(20, 40)
    ]  # the backlog, replayed fast
    assert windower.expire_idle(1.28, now_ms=resumed + 40) == []
    hops = hops_of(before + after)
    assert [h.hop_seq for h in hops] == [0, 1, 2, 3, 4]
    assert not any(h.is_final for h in hops)
    assert frame_ids(hops[-1]) == list(range(1, 41))


def test_a_session_silent_while_its_partition_flows_expires_and_others_do_not() -> None:
    windower = Windower(AudioSettings(idle_timeout_s=30))
    flow(windower, "quiet", T0, T0 + 200, partition=1)
    flow(windower, "other-partition", T0, T0 + 200, partition=2)
    flow(windower, "busy", T0 + 220, T0 + 30_200, partition=1)
    expired = windower.expire_idle(1.28, now_ms=T0 + 30_210)
    assert [(s.session_id, o.hops[-1].is_final) for s, o in expired] == [("quiet", True)]


def test_a_frame_after_expiry_reopens_the_session_with_hop_seq_going_on() -> None:
    windower = Windower(AudioSettings(idle_timeout_s=5))
    first = flow(windower, "s", T0, T0 + 20 * 9)  # frames 0..9: hop 0 cut, 2 frames waiting
    flow(windower, "other", T0 + 200, T0 + 5200)
    ((_, expiry),) = windower.expire_idle(1.28, now_ms=T0 + 5210)
    assert [(h.hop_seq, h.is_final) for h in hops_of(first) + expiry.hops] == [(0, False), (1, True)]
    late = windower.accept(pcm_frame(9, "s"), 1.28, received_ts_ms=T0 + 5220)
    assert late.duplicate and not late.hops
    resumed = [windower.accept(pcm_frame(i, "s"), 1.28, received_ts_ms=T0 + 5240 + 20 * i) for i in range(500, 508)]
    assert resumed[0].skipped == 490 and sum(o.gaps for o in resumed) == 0
    (hop,) = hops_of(resumed)
    assert (hop.hop_seq, hop.is_final) == (2, False)
    assert frame_ids(hop) == list(range(501, 509))  # a new window: the audio before the pause is not contiguous
    assert hop.window_start_sample == 10 * SPF  # offsets go on from the 10 frames before


def test_an_ended_session_is_forgotten_after_the_retention_and_a_frame_after_its_end_stays_rejected() -> None:
    windower = Windower(AudioSettings(idle_timeout_s=5, ended_retention_s=10))
    feed(windower, [pcm_frame(i) for i in range(3)] + [pcm_frame(3, eos=True)])
    assert windower.accept(pcm_frame(4), 1.28, received_ts_ms=arrival(3)).rejection is not None
    flow(windower, "other", arrival(3) + 20, arrival(3) + 14_980)
    assert windower.forget_ended() == []
    flow(windower, "other2", arrival(3) + 15_000, arrival(3) + 15_000)
    assert [s.session_id for s in windower.forget_ended()] == ["s"]
    assert "s" not in windower.sessions


def test_forgetting_revoked_partitions_drops_their_sessions_and_idle_counts() -> None:
    windower = Windower(AudioSettings(idle_timeout_s=5))
    flow(windower, "mine", T0, T0 + 100, partition=0)
    flow(windower, "theirs", T0, T0 + 100, partition=3)
    assert [s.session_id for s in windower.forget_partitions({3})] == ["theirs"]
    assert set(windower.sessions) == {"mine"} and windower.active_ms(3) == 0.0


def test_a_restored_session_that_gets_no_more_frames_expires_from_its_restore() -> None:
    first = Windower(AudioSettings(idle_timeout_s=5))
    outcomes = flow(first, "s", T0, T0 + 20 * 9, partition=2)
    stored = {seq: pcm for o in outcomes for seq, pcm in o.appended}
    second = Windower(AudioSettings(idle_timeout_s=5))
    flow(second, "other", T0 + 60_000, T0 + 61_000, partition=2)
    second.adopt(SessionWindow.restore("s", first.sessions["s"].snapshot(), stored, second.shape))
    flow(second, "other", T0 + 61_020, T0 + 65_990, partition=2)
    assert second.expire_idle(1.28, now_ms=T0 + 66_000) == []
    flow(second, "other", T0 + 66_000, T0 + 66_020, partition=2)
    ((session, outcome),) = second.expire_idle(1.28, now_ms=T0 + 66_030)
    assert session.session_id == "s" and [(h.hop_seq, h.is_final) for h in outcome.hops] == [(1, True)]


def test_one_frame_with_a_wild_seq_skips_ahead_instead_of_filling_megabytes_of_silence() -> None:
    """Issue 12: a jump of 2992 frames (within the 60 s absurdity bound) made 374 hops of silence."""
    settings = AudioSettings()
    windower = Windower(settings)
    feed(windower, [pcm_frame(i) for i in range(4)])
    jump = windower.accept(pcm_frame(2996), 1.28, received_ts_ms=arrival(4))
    assert jump.rejection is None
    assert len(jump.hops) <= math.ceil(settings.max_gap_frames / 8) + 1
    assert jump.gaps == 0 and jump.skipped == 2992
    assert sum(len(h.audio) for h in jump.hops) < 100_000
    (hop,) = hops_of(feed(windower, [pcm_frame(i) for i in range(2997, 3000)]))
    assert frame_ids(hop) == [2997, 2998, 2999, 3000]  # the new segment's own frames
    assert hop.gap_frames == 0 and hop.hop_seq == 0


def test_a_gap_within_max_gap_frames_is_filled_and_frames_held_are_kept_across_a_skip() -> None:
    windower = Windower(AudioSettings(max_gap_frames=10))
    within = feed(windower, [pcm_frame(0), pcm_frame(11)])
    assert (within[1].gaps, within[1].skipped) == (6, 0)  # 7..10 are still within the reorder tolerance
    (jump,) = feed(windower, [pcm_frame(40)])
    assert (jump.gaps, jump.skipped) == (4, 28)  # 11 held is taken in, 12..39 passed over
    assert [seq for seq, _ in jump.appended] == [7, 8, 9, 10, 11, 40]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (Frame("s", 0, T0, "pcm16", 16000, b"\x00" * 100), "payload is 100 bytes"),
        (Frame("s", 0, T0, "pcm16", 44100, b"\x00" * 640), "sample rate 44100"),
        (Frame("s", 0, T0, "mulaw", 16000, b"\x00" * 320), "8000 Hz only"),
        (Frame("s", 0, T0, "opus", 8000, b"\x00" * 160), "unknown codec"),
        (Frame("s", -1, T0, "pcm16", 16000, b"\x00" * 640), "negative seq"),
        (Frame("s", 0, T0, "mulaw", 8000, b"\x00" * 161), "payload is 161 bytes"),
    ],
)
def test_invalid_frames_are_rejected_with_a_reason(windower: Windower, frame: Frame, reason: str) -> None:
    outcome = windower.accept(frame, 1.28, received_ts_ms=T0)
    assert outcome.rejection is not None and reason in outcome.rejection.reason
    assert not outcome.hops and "s" not in windower.sessions


def test_codec_change_and_absurd_seq_jumps_are_rejected_without_harming_the_session(windower: Windower) -> None:
    feed(windower, [pcm_frame(i) for i in range(4)])
    changed = windower.accept(Frame("s", 4, T0, "mulaw", 8000, b"\xff" * 160), 1.28, received_ts_ms=arrival(4))
    assert changed.rejection is not None and "changed mid-session" in changed.rejection.reason
    jump = windower.accept(Frame("s", 10**9, T0, "pcm16", 16000, bytes(640)), 1.28, received_ts_ms=arrival(4))
    assert jump.rejection is not None and "jumps" in jump.rejection.reason
    (hop,) = hops_of(feed(windower, [pcm_frame(i) for i in range(4, 8)]))
    assert frame_ids(hop) == list(range(1, 9))


def test_a_session_first_seen_mid_stream_starts_the_reorder_tolerance_before_it(windower: Windower) -> None:
    """Its frames 96..99 never come: given up as gaps like any missing frame, once 101..104 are in."""
    hops = hops_of(feed(windower, [pcm_frame(i) for i in range(100, 108)]))
    assert frame_ids(hops[0]) == [0, 0, 0, 0, 101, 102, 103, 104]
    assert hops[0].gap_frames == 4 and hops[0].window_start_sample == 0


def test_frames_that_a_first_frame_overtook_are_kept_and_older_ones_are_late(windower: Windower) -> None:
    outcomes = feed(windower, [pcm_frame(i) for i in (100, 98, 99, 95, *range(101, 106))])
    assert outcomes[3].late and not outcomes[3].duplicate, "95 is past the tolerance of the first frame, 100"
    hops = hops_of(outcomes)
    assert frame_ids(hops[0]) == [0, 0, 99, 100, 101, 102, 103, 104]
    assert (hops[0].gap_frames, hops[0].duplicate_frames) == (2, 0)


def test_mulaw_8k_window_is_the_decoded_upsampled_stream(windower: Windower) -> None:
    rng = np.random.default_rng(7)
    payloads = [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(24)]
    frames = [Frame("m", i, T0 + 20 * i, "mulaw", 8000, p) for i, p in enumerate(payloads)]
    hops = hops_of(feed(windower, frames))
    expected = audio.upsample_8k_to_16k(audio.decode(b"".join(payloads), "mulaw"))
    assert [len(h.audio) for h in hops] == [8 * SPF * 2, 16 * SPF * 2, 24 * SPF * 2]
    assert np.array_equal(samples(hops[-1]), expected)


def test_ready_is_when_the_frame_completing_the_hop_was_received(windower: Windower) -> None:
    order = [0, 1, 2, 3, 4, 5, 7, 6]
    received = [arrival(i) for i in range(7)] + [arrival(7) + 40]
    outcomes = feed(windower, [pcm_frame(i) for i in order], received=received)
    (hop,) = hops_of(outcomes)
    assert outcomes[-1].hops == [hop]
    assert hop.ready_ts_ms == arrival(7) + 40  # frame 6 came last and completed it, not frame 7 that ends it
    assert hop.first_capture_ts_ms == T0


def test_frames_missing_at_a_session_start_take_capture_times_from_the_first_frame_held(windower: Windower) -> None:
    (hop,) = hops_of(feed(windower, [pcm_frame(i) for i in range(2, 8)]))
    assert frame_ids(hop) == [0, 0, 3, 4, 5, 6, 7, 8] and hop.gap_frames == 2
    assert hop.first_capture_ts_ms == T0  # frame 2's capture - 2 frames; never the epoch
    assert hop.ready_ts_ms == arrival(7)


@pytest.mark.parametrize(
    ("capture", "reason"),
    [
        (math.nan, "nan"),
        (math.inf, "future"),
        (-math.inf, "too_old"),
        (0.0, "too_old"),
        (arrival(0) + HOUR_MS, "future"),
        (arrival(0) - HOUR_MS, "too_old"),
    ],
)
def test_a_broken_capture_time_is_clamped_and_reported_and_the_audio_kept(
    windower: Windower, capture: float, reason: str
) -> None:
    frames = [replace(pcm_frame(0), capture_ts_ms=capture), *[pcm_frame(i) for i in range(1, 8)]]
    outcomes = feed(windower, frames)
    assert (outcomes[0].clamped_capture, outcomes[0].capture_skew_ms) == (reason, None)
    assert [o.clamped_capture for o in outcomes[1:]] == [None] * 7
    (hop,) = hops_of(outcomes)
    assert frame_ids(hop) == list(range(1, 9))
    assert hop.first_capture_ts_ms == arrival(0) - 20  # "captured just now": its audio ended as it arrived
    assert hop.ready_ts_ms == arrival(7)
    assert 0 <= hop.ready_ts_ms - hop.first_capture_ts_ms < 200


def test_capture_times_within_the_bounds_are_kept_and_their_skew_reported(windower: Windower) -> None:
    at = arrival(0)
    bounds = [at - 10_000, at + 1000, at + 1000.5, at - 10_000.5, at - 20 - TRANSPORT_MS]
    frames = [replace(pcm_frame(i), capture_ts_ms=c) for i, c in enumerate(bounds)]
    outcomes = feed(windower, frames, received=[at] * len(frames))
    assert [o.clamped_capture for o in outcomes] == [None, None, "future", "too_old", None]
    assert [o.capture_skew_ms for o in outcomes] == [10_000 - 20, -1020, None, None, TRANSPORT_MS]


def test_a_client_clock_behind_leaves_ready_and_net_alone(windower: Windower) -> None:
    frames = [pcm_frame(i) for i in range(16)]
    straight = hops_of(feed(Windower(AudioSettings()), frames))
    outcomes = feed(windower, [replace(f, capture_ts_ms=f.capture_ts_ms - 300) for f in frames])
    behind = hops_of(outcomes)
    # ready is the windower's receive time, so net (hop published - ready) is the same as for a true clock.
    assert [h.ready_ts_ms for h in behind] == [h.ready_ts_ms for h in straight] == [arrival(7), arrival(15)]
    # The capture time stays the client's (reported, not corrected): the offset shows in the skew.
    assert [h.first_capture_ts_ms for h in behind] == [h.first_capture_ts_ms - 300 for h in straight]
    assert {o.capture_skew_ms for o in outcomes} == {TRANSPORT_MS + 300}
    assert not any(o.clamped_capture for o in outcomes)


def test_first_capture_is_never_after_ready(windower: Windower) -> None:
    ahead = [replace(f, capture_ts_ms=f.capture_ts_ms + 900) for f in (pcm_frame(i) for i in range(8))]
    outcomes = feed(windower, ahead)
    (hop,) = hops_of(outcomes)
    assert not any(o.clamped_capture for o in outcomes)  # 900 ms ahead is within the tolerated lead
    assert hop.first_capture_ts_ms == hop.ready_ts_ms == arrival(7)


def test_producer_labels_are_tenant_prefixes_and_bounded() -> None:
    labels = ProducerLabels(limit=2)
    sessions = ["acme/call-1", "acme/call-2", "call-3", "/odd", "globex/call-4", "acme/call-5"]
    assert [labels(s) for s in sessions] == ["acme", "acme", "default", "default", "other", "acme"]


def test_snapshot_and_frames_restore_a_session_mid_hop() -> None:
    rng = np.random.default_rng(3)
    payloads = [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(90)]
    frames = [Frame("m", i, T0 + 20 * i, "alaw", 8000, p) for i, p in enumerate(payloads)]
    # Frame 40 starts a hop, arrives before 39 (held at the cut) and with a broken capture time.
    frames[39], frames[40] = replace(frames[40], capture_ts_ms=0.0), frames[39]
    received = [arrival(i) for i in range(len(frames))]  # in arrival order
    straight = Windower(AudioSettings())
    expected = hops_of(feed(straight, frames, received=received))
    assert expected[5].first_capture_ts_ms == received[39] - 20

    first = Windower(AudioSettings())
    outcomes = feed(first, frames[:40], received=received[:40])
    stored = {seq: pcm for o in outcomes for seq, pcm in o.appended}
    session = first.sessions["m"]
    assert list(session.pending) == [40]
    restored = SessionWindow.restore("m", session.snapshot(), stored, first.shape)
    second = Windower(AudioSettings())
    second.sessions["m"] = restored
    resumed = hops_of(outcomes) + hops_of(feed(second, frames[40:], received=received[40:]))
    assert resumed == expected


def test_a_snapshot_holding_unchecked_capture_times_restores_with_finite_ones(windower: Windower) -> None:
    """Windowers before the capture check stored client capture times as they came, NaN included."""
    feed(windower, [pcm_frame(i) for i in (0, 1, 2, 3, 4, 6)])
    session = windower.sessions["s"]
    old = json.loads(session.snapshot())
    old["hop_first_capture_ts_ms"] = old["last_capture_ts_ms"] = math.nan
    old["pending"] = [[seq, math.nan, eos, data] for seq, _, eos, data in old["pending"]]
    stored = {seq: audio.pcm16_to_bytes(np.full(SPF, seq + 1, dtype=np.int16)) for seq in range(5)}
    restored = SessionWindow.restore("s", json.dumps(old).encode(), stored, windower.shape)
    assert restored.pending[6].capture_ts_ms == arrival(6) - 20  # last seen when frame 6 came
    windower.sessions["s"] = restored
    (hop,) = hops_of(feed(windower, [pcm_frame(5), pcm_frame(7)]))
    assert frame_ids(hop) == list(range(1, 9))
    assert (hop.first_capture_ts_ms, hop.ready_ts_ms) == (arrival(6) - 20, arrival(7))
