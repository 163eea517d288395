from __future__ import annotations

import numpy as np
import pytest

from pipeline import audio
from pipeline.settings import AudioSettings
from pipeline.windowing.policy import Frame, Hop, Outcome, SessionWindow, Windower
from tests.plugins.clock import FakeClock

T0 = 1_700_000_000_000.0
SPF = 320  # model-rate samples per 20 ms frame


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


def feed(windower: Windower, frames: list[Frame], window_secs: float = 1.28) -> list[Outcome]:
    return [windower.accept(f, window_secs) for f in frames]


def hops_of(outcomes: list[Outcome]) -> list[Hop]:
    return [hop for o in outcomes for hop in o.hops]


@pytest.fixture
def windower() -> Windower:
    return Windower(AudioSettings(), clock=FakeClock(T0))


def test_a_hop_every_eight_frames_with_timing_and_offsets(windower: Windower) -> None:
    hops = hops_of(feed(windower, [pcm_frame(i) for i in range(17)]))
    assert [h.hop_seq for h in hops] == [0, 1]
    assert frame_ids(hops[0]) == list(range(1, 9))
    assert frame_ids(hops[1]) == list(range(1, 17))
    assert hops[1].first_capture_ts_ms == T0 + 160
    assert hops[1].ready_ts_ms == T0 + 20 * 15 + 20
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
    late = windower.accept(pcm_frame(2), 1.28)
    assert late.late and not late.duplicate and not late.hops


def test_end_of_stream_flushes_a_short_final_hop(windower: Windower) -> None:
    frames = [pcm_frame(i) for i in range(10)] + [pcm_frame(10, eos=True)]
    hops = hops_of(feed(windower, frames))
    assert [(h.hop_seq, h.is_final) for h in hops] == [(0, False), (1, True)]
    assert frame_ids(hops[1]) == list(range(1, 12))
    assert hops[1].first_capture_ts_ms == T0 + 160
    assert hops[1].ready_ts_ms == T0 + 220
    after = windower.accept(pcm_frame(5), 1.28)
    assert after.duplicate and not after.hops
    beyond = windower.accept(pcm_frame(11), 1.28)
    assert beyond.rejection is not None and "end of stream" in beyond.rejection.reason


def test_empty_end_of_stream_on_a_hop_boundary_still_ends_the_session(windower: Windower) -> None:
    frames = [pcm_frame(i) for i in range(8)] + [pcm_frame(8, eos=True, empty=True)]
    hops = hops_of(feed(windower, frames))
    assert [(h.hop_seq, h.is_final) for h in hops] == [(0, False), (1, True)]
    assert frame_ids(hops[1]) == list(range(1, 9))
    assert hops[1].ready_ts_ms == T0 + 160


def test_end_of_stream_gives_up_frames_still_missing(windower: Windower) -> None:
    frames = [pcm_frame(0), pcm_frame(1), pcm_frame(3, eos=True)]
    (hop,) = hops_of(feed(windower, frames))
    assert hop.is_final and hop.gap_frames == 1
    assert frame_ids(hop) == [1, 2, 0, 4]


def test_idle_sessions_expire_with_a_final_hop() -> None:
    clock = FakeClock(T0)
    windower = Windower(AudioSettings(idle_timeout_s=5), clock=clock)
    feed(windower, [pcm_frame(i, "a") for i in range(3)])
    clock.now += 3000
    feed(windower, [pcm_frame(i, "b") for i in range(3)])
    clock.now += 2500
    expired = windower.expire_idle(1.28)
    assert [session.session_id for session, _ in expired] == ["a"]
    (hop,) = expired[0][1].hops
    assert hop.is_final and frame_ids(hop) == [1, 2, 3]
    assert set(windower.sessions) == {"b"}


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
    outcome = windower.accept(frame, 1.28)
    assert outcome.rejection is not None and reason in outcome.rejection.reason
    assert not outcome.hops and "s" not in windower.sessions


def test_codec_change_and_absurd_seq_jumps_are_rejected_without_harming_the_session(windower: Windower) -> None:
    feed(windower, [pcm_frame(i) for i in range(4)])
    changed = windower.accept(Frame("s", 4, T0, "mulaw", 8000, b"\xff" * 160), 1.28)
    assert changed.rejection is not None and "changed mid-session" in changed.rejection.reason
    jump = windower.accept(Frame("s", 10**9, T0, "pcm16", 16000, bytes(640)), 1.28)
    assert jump.rejection is not None and "jumps" in jump.rejection.reason
    (hop,) = hops_of(feed(windower, [pcm_frame(i) for i in range(4, 8)]))
    assert frame_ids(hop) == list(range(1, 9))


def test_a_session_first_seen_mid_stream_starts_there(windower: Windower) -> None:
    hops = hops_of(feed(windower, [pcm_frame(i) for i in range(100, 108)]))
    assert frame_ids(hops[0]) == list(range(101, 109))
    assert hops[0].gap_frames == 0 and hops[0].window_start_sample == 0


def test_mulaw_8k_window_is_the_decoded_upsampled_stream(windower: Windower) -> None:
    rng = np.random.default_rng(7)
    payloads = [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(24)]
    frames = [Frame("m", i, T0 + 20 * i, "mulaw", 8000, p) for i, p in enumerate(payloads)]
    hops = hops_of(feed(windower, frames))
    expected = audio.upsample_8k_to_16k(audio.decode(b"".join(payloads), "mulaw"))
    assert [len(h.audio) for h in hops] == [8 * SPF * 2, 16 * SPF * 2, 24 * SPF * 2]
    assert np.array_equal(samples(hops[-1]), expected)


def test_snapshot_and_frames_restore_a_session_mid_hop() -> None:
    rng = np.random.default_rng(3)
    payloads = [rng.integers(0, 256, 160, dtype=np.uint8).tobytes() for _ in range(90)]
    frames = [Frame("m", i, T0 + 20 * i, "alaw", 8000, p) for i, p in enumerate(payloads)]
    frames[41], frames[42] = frames[42], frames[41]  # one frame held for reordering at the cut
    straight = Windower(AudioSettings(), clock=FakeClock(T0))
    expected = hops_of(feed(straight, frames))

    first = Windower(AudioSettings(), clock=FakeClock(T0))
    outcomes = feed(first, frames[:42])
    stored = {seq: pcm for o in outcomes for seq, pcm in o.appended}
    session = first.sessions["m"]
    assert session.pending  # frame 42 arrived before 41
    restored = SessionWindow.restore("m", session.snapshot(), stored, first.shape)
    second = Windower(AudioSettings(), clock=FakeClock(T0))
    second.sessions["m"] = restored
    resumed = hops_of(outcomes) + hops_of(feed(second, frames[42:]))
    assert resumed == expected
