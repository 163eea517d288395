"""Properties of the windowing policy under any delivery of a session's frames.

Kafka delivers at least once and a producer may send out of order, so a session's frames come
permuted, duplicated and with some never arriving. Whatever the order, the windower's output
must stay well-formed: hops no longer than the window in force, hop numbers counting up, one
final, and a stream that takes each seq once, as its own audio or as silence for a gap.

Every frame's samples all equal ``seq + 1``, so the stream and each hop can be read back as seqs
(0 is silence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from pipeline import audio
from pipeline.settings import AudioSettings
from pipeline.windowing.policy import Frame, Hop, Outcome, Windower

AUDIO = AudioSettings()
SPF = audio.MODEL_RATE * AUDIO.frame_ms // 1000  # model-rate samples per frame
TOLERANCE = AUDIO.reorder_tolerance_frames
T0 = 1_700_000_000_000.0
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)


@dataclass(frozen=True)
class Delivery:
    """A session of ``frames`` frames (the last one ends the stream when ``eos``) as the windower gets it."""

    frames: int
    eos: bool
    empty_eos: bool
    order: tuple[int, ...]  # seqs in arrival order, repeats being duplicates
    windows: tuple[float, ...]  # window_secs in force at each arrival


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    frames = draw(st.integers(1, 40))
    copies = draw(st.lists(st.sampled_from([0, 1, 1, 1, 2]), min_size=frames, max_size=frames))
    sent = [seq for seq, n in enumerate(copies) for _ in range(n)]
    assume(sent)
    # Keys of seq + jitter: 0 keeps the order, a few frames reorders within the tolerance, 50 shuffles.
    spread = draw(st.sampled_from([0, 2, TOLERANCE + 2, 50]))
    keys = draw(st.lists(st.integers(0, spread), min_size=len(sent), max_size=len(sent)))
    order = tuple(seq for _, seq in sorted(zip((s + k for s, k in zip(sent, keys, strict=True)), sent, strict=True)))
    windows = draw(
        st.one_of(
            st.just((AUDIO.window_secs,) * len(order)),
            st.lists(st.floats(-0.5, 2.0), min_size=len(order), max_size=len(order)).map(tuple),
        )
    )
    return Delivery(frames, draw(st.booleans()), draw(st.booleans()), order, windows)


@dataclass
class Trace:
    """What the windower did with a delivery, then with the idle expiry that ends it."""

    hops: list[tuple[Hop, float]] = field(default_factory=list)  # with the window_secs passed when it was cut
    outcomes: list[Outcome] = field(default_factory=list)
    #: The stream, frame by frame: (seq, what its samples say: seq + 1, or 0 for silence).
    stream: list[tuple[int, int]] = field(default_factory=list)
    #: Stream length (frames) when each hop was cut.
    stream_at_hop: list[int] = field(default_factory=list)

    def take(self, outcome: Outcome, window_secs: float) -> None:
        self.outcomes.append(outcome)
        for seq, pcm in outcome.appended:
            samples = audio.pcm16_from_bytes(pcm)
            assert samples.size == SPF and np.all(samples == samples[0]), f"frame {seq} is not one frame of one value"
            self.stream.append((seq, int(samples[0])))
        for hop in outcome.hops:
            self.hops.append((hop, window_secs))
            self.stream_at_hop.append(len(self.stream))


def frame(delivery: Delivery, seq: int) -> Frame:
    eos = delivery.eos and seq == delivery.frames - 1
    payload = b"" if eos and delivery.empty_eos else audio.pcm16_to_bytes(np.full(SPF, seq + 1, dtype=np.int16))
    return Frame("s", seq, T0 + AUDIO.frame_ms * seq, "pcm16", 16000, payload, eos)


def received(index: int) -> float:
    """Arrival ``index`` comes one frame period after the one before it, plus transport."""
    return T0 + AUDIO.frame_ms * (index + 1) + 7.0


#: How often another session's frames keep the partition flowing while the session under test is idle:
#: the windower ages sessions only while their partition receives frames (a stall is an outage).
KEEPALIVE_MS = 500.0


def idle_out(windower: Windower, trace: Trace, since_ms: float) -> float:
    """Let session "s" sit idle past the timeout while its partition flows; returns the time then."""
    now = since_ms
    for seq in range(math.ceil(AUDIO.idle_timeout_s * 1000.0 / KEEPALIVE_MS) + 2):
        now += KEEPALIVE_MS
        payload = audio.pcm16_to_bytes(np.zeros(SPF, dtype=np.int16))
        keepalive = Frame("keepalive", seq, now - AUDIO.frame_ms, "pcm16", 16000, payload)
        assert windower.accept(keepalive, AUDIO.window_secs, received_ts_ms=now).rejection is None
        for session, outcome in windower.expire_idle(AUDIO.window_secs, now_ms=now):
            if session.session_id == "s":
                trace.take(outcome, AUDIO.window_secs)
    return now


def run(delivery: Delivery) -> Trace:
    """The delivery, then an idle timeout that ends the session if its end of stream did not."""
    windower = Windower(AUDIO)
    trace = Trace()
    for index, (seq, window_secs) in enumerate(zip(delivery.order, delivery.windows, strict=True)):
        outcome = windower.accept(frame(delivery, seq), window_secs, received_ts_ms=received(index))
        assert outcome.rejection is None, outcome.rejection
        trace.take(outcome, window_secs)
    idle_out(windower, trace, received(len(delivery.order)))
    return trace


@PROPERTY_SETTINGS
@given(delivery=deliveries())
def test_a_hop_is_never_longer_than_the_window_in_force(delivery: Delivery) -> None:
    for hop, window_secs in run(delivery).hops:
        in_force = min(max(window_secs, 0.0), AUDIO.window_secs)
        assert hop.window_secs == in_force
        assert len(hop.audio) <= round(in_force * audio.MODEL_RATE) * 2


@PROPERTY_SETTINGS
@given(delivery=deliveries())
def test_hop_seqs_count_up_from_zero_and_one_final_hop_ends_the_session(delivery: Delivery) -> None:
    hops = [hop for hop, _ in run(delivery).hops]
    assert [hop.hop_seq for hop in hops] == list(range(len(hops)))
    assert [hop.is_final for hop in hops] == [False] * (len(hops) - 1) + [True]


@PROPERTY_SETTINGS
@given(delivery=deliveries())
def test_the_stream_takes_each_seq_once_as_its_audio_or_as_counted_silence(delivery: Delivery) -> None:
    trace = run(delivery)
    seqs = [seq for seq, _ in trace.stream]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)) if seqs else [])
    assert all(value in (0, seq + 1) for seq, value in trace.stream)
    silent = sum(1 for _, value in trace.stream if value == 0)
    assert silent == sum(o.gaps for o in trace.outcomes)
    heard = {seq for seq, value in trace.stream if value}
    assert heard <= set(delivery.order)
    # The total audio is bounded by the frames seen plus the gaps filled, and every gap lies below a frame seen.
    assert len(trace.stream) <= len(set(delivery.order)) + silent
    assert not seqs or max(seqs) <= max(delivery.order)


@PROPERTY_SETTINGS
@given(delivery=deliveries())
def test_each_hop_is_the_newest_audio_of_the_stream_every_hop_period(delivery: Delivery) -> None:
    trace = run(delivery)
    stream = np.repeat(np.array([value for _, value in trace.stream], dtype=np.int16), SPF)
    for hop, _ in trace.hops:
        samples = audio.pcm16_from_bytes(hop.audio)
        end = hop.window_start_sample + len(samples)
        expected_end = len(stream) if hop.is_final else (hop.hop_seq + 1) * AUDIO.frames_per_hop * SPF
        assert end == expected_end
        assert np.array_equal(samples, stream[end - len(samples) : end])


def lost_within_tolerance(delivery: Delivery) -> list[int]:
    """Frames put in no order although each arrived before any frame more than the tolerance ahead
    of it and before the end of stream: ones whose own audio is not in the stream."""
    heard = {seq for seq, value in run(delivery).stream if value}
    eos_seq = delivery.frames - 1 if delivery.eos else None
    seen: list[int] = []
    lost = []
    for seq in delivery.order:
        overtaken = any(other > seq + TOLERANCE or other == eos_seq for other in seen)
        if not overtaken and seq not in seen and not (seq == eos_seq and delivery.empty_eos) and seq not in heard:
            lost.append(seq)
        seen.append(seq)
    return lost


def miscounted_duplicates(delivery: Delivery) -> int:
    """Duplicates the hops count beyond the copies delivered."""
    copies = len(delivery.order) - len(set(delivery.order))
    return max(0, sum(hop.duplicate_frames for hop, _ in run(delivery).hops) - copies)


#: The first frame to arrive is past the tolerance and the one it overtook comes next: until the windower
#: started such a session the tolerance before its first frame, it dropped that frame as a duplicate.
LATE_FIRST_FRAME = Delivery(frames=6, eos=False, empty_eos=False, order=(5, 4), windows=(1.28, 1.28))


@PROPERTY_SETTINGS
@example(delivery=LATE_FIRST_FRAME)
@given(delivery=deliveries())
def test_a_frame_within_the_reorder_tolerance_is_never_lost(delivery: Delivery) -> None:
    assert lost_within_tolerance(delivery) == []


@PROPERTY_SETTINGS
@example(delivery=LATE_FIRST_FRAME)
@given(delivery=deliveries())
def test_duplicates_counted_are_at_most_the_copies_delivered(delivery: Delivery) -> None:
    assert miscounted_duplicates(delivery) == 0


@PROPERTY_SETTINGS
@example(frames=8, pause_at=1)
@given(frames=st.integers(2, 40), pause_at=st.integers(1, 39))
def test_hop_seqs_of_a_session_keep_increasing_across_an_idle_pause(frames: int, pause_at: int) -> None:
    """Frames in order with a pause past the idle timeout before frame ``pause_at``: the session is expired,
    and its frames after the pause go on from the hops it had."""
    assume(pause_at < frames)
    delivery = Delivery(frames, False, False, tuple(range(frames)), (AUDIO.window_secs,) * frames)
    windower = Windower(AUDIO)
    trace = Trace()
    pause_ms = 0.0
    for seq in range(frames):
        if seq == pause_at:
            pause_ms = idle_out(windower, trace, received(seq - 1)) - received(seq - 1)
        outcome = windower.accept(frame(delivery, seq), AUDIO.window_secs, received_ts_ms=received(seq) + pause_ms)
        trace.take(outcome, AUDIO.window_secs)
    hop_seqs = [hop.hop_seq for hop, _ in trace.hops]
    assert hop_seqs == sorted(set(hop_seqs))
