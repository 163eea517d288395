"""Properties of the stitcher under any sequence of hypotheses.

The recognizer's words for overlapping windows disagree, shift in time and change their minds;
hops come duplicated, late and out of order; sessions go idle. Whatever comes, a word once
committed is never committed again nor changed, and each segment has at most one final.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline import contracts
from pipeline.assembly.policy import Stitcher, StitchingPolicy
from tests.plugins import builders
from tests.plugins.clock import FakeClock

HOP_MS = 160.0
POLICY = StitchingPolicy()
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None)
VOCABULARY = ("turn", "the", "lights", "off", "oh", "open", "Off!", "")

Speech = tuple[tuple[str, float, float], ...]


@st.composite
def speech(draw: st.DrawFn) -> Speech:
    """Words one after another with pauses between, some repeated, empty or punctuated."""
    words = []
    at = 0.0
    for text, pause, length in draw(
        st.lists(st.tuples(st.sampled_from(VOCABULARY), st.integers(0, 900), st.integers(40, 600)), max_size=12)
    ):
        words.append((text, at + pause, at + pause + length))
        at += pause + length
    return tuple(words)


Heard = tuple[tuple[str, float, float], ...]


@st.composite
def heard(draw: st.DrawFn, said: Speech, window_start: float, window_end: float) -> Heard:
    """What one hop's recognizer makes of the window: words dropped, misheard, shifted, cut, invented."""
    words = []
    for word in builders.window_words(said, window_start, window_end):
        text, start, end = word.word, word.start_ms, word.end_ms
        how = draw(st.sampled_from(["same", "same", "drop", "other", "shift"]))
        if how == "drop":
            continue
        if how == "other":
            text = draw(st.sampled_from(VOCABULARY))
        if how == "shift":
            delta = float(draw(st.integers(-300, 300)))
            start, end = start + delta, end + delta
        words.append((text, start, end))
    if draw(st.booleans()):
        start = float(draw(st.integers(int(window_start), int(window_end))))
        words.append((draw(st.sampled_from(VOCABULARY)), start, start + float(draw(st.integers(-50, 400)))))
    # A recognizer's words are in time order and do not overlap one another.
    ordered: list[tuple[str, float, float]] = []
    for candidate in sorted(words, key=lambda w: w[1]):
        if not ordered or candidate[1] >= ordered[-1][2]:
            ordered.append(candidate)
    return tuple(ordered)


@dataclass(frozen=True)
class Step:
    """The clock moving on by ``wall_ms``, then hop ``seq`` of ``session`` arriving, or (seq None) an expiry check."""

    wall_ms: float
    session: str = ""
    seq: int | None = None
    words: Heard = ()
    window_ms: float = 1280.0
    is_final: bool = False
    emit_interval_ms: float = 160.0

    def hypothesis(self) -> contracts.Hypothesis:
        assert self.seq is not None
        return builders.hypothesis(
            self.session,
            self.seq,
            words=builders.words(*self.words),
            window_ms=self.window_ms,
            first_capture_ts_ms=1_700_000_000_000.0 + self.seq * HOP_MS,
            is_final=self.is_final,
        )


@st.composite
def steps(draw: st.DrawFn, pauses: tuple[float, ...]) -> list[Step]:
    """Hypotheses of one or two sessions in arrival order, with expiry checks after ``pauses`` among them."""
    sessions = draw(st.lists(speech(), min_size=1, max_size=2))
    result = []
    for index, said in enumerate(sessions):
        hops = draw(st.integers(1, 30))
        window_ms = draw(st.sampled_from([960.0, 1280.0]))
        final = draw(st.booleans())
        spread = draw(st.sampled_from([0, 1, 3]))
        copies = draw(st.lists(st.sampled_from([0, 1, 1, 1, 2]), min_size=hops, max_size=hops))
        sent = [seq for seq, n in enumerate(copies) for _ in range(n)]
        keys = [seq + draw(st.integers(0, spread)) for seq in sent]
        for _, seq in sorted(zip(keys, sent, strict=True)):
            end = (seq + 1) * HOP_MS
            words = draw(heard(said, max(0.0, end - window_ms), end))
            wall_ms = float(draw(st.integers(0, 400)))
            emit_interval_ms = draw(st.sampled_from([160.0, 320.0]))
            is_final = final and seq == hops - 1
            result.append(Step(wall_ms, f"s{index}", seq, words, window_ms, is_final, emit_interval_ms))
    for pause in draw(st.lists(st.sampled_from(pauses), max_size=3)):
        result.insert(draw(st.integers(0, len(result))), Step(pause))
    return result


#: Expiry checks anywhere, at most one after a pause long enough to close an idle session.
ONE_IDLE_PAUSE = steps((0.0, 0.0, POLICY.idle_timeout_ms)).filter(
    lambda s: sum(step.wall_ms >= POLICY.idle_timeout_ms for step in s if step.seq is None) <= 1
)
#: Expiry checks after pauses long enough to close an idle session and to forget a closed one.
LONG_PAUSES = steps((0.0, POLICY.idle_timeout_ms, POLICY.closed_retention_ms))


def run(steps: list[Step]) -> list[contracts.Transcript]:
    """Every transcript the stitcher emits, in order, the idle expiry that ends every session included."""
    clock = FakeClock(1_700_000_000_000.0)
    stitcher = Stitcher(POLICY, clock)
    transcripts: list[contracts.Transcript] = []
    for step in steps:
        clock.advance(step.wall_ms)
        if step.seq is None:
            transcripts += stitcher.expire().finals
        else:
            transcripts += stitcher.accept(step.hypothesis(), step.emit_interval_ms).transcripts
    clock.advance(POLICY.idle_timeout_ms)
    transcripts += stitcher.expire().finals
    return transcripts


def by_session(transcripts: list[contracts.Transcript]) -> dict[str, list[contracts.Transcript]]:
    sessions: dict[str, list[contracts.Transcript]] = defaultdict(list)
    for transcript in transcripts:
        sessions[transcript.session_id].append(transcript)
    return sessions


def key(word: contracts.Word) -> tuple[str, float, float]:
    return (word.word, word.start_ms, word.end_ms)


def assert_one_final_per_segment(transcripts: list[contracts.Transcript]) -> None:
    for session in by_session(transcripts).values():
        finals = [t.segment for t in session if t.kind == "final"]
        assert finals == sorted(set(finals))
        closed = -1
        for transcript in session:
            assert transcript.segment > closed
            if transcript.kind == "final":
                closed = transcript.segment


@PROPERTY_SETTINGS
@given(steps=ONE_IDLE_PAUSE)
def test_each_segment_has_at_most_one_final_and_nothing_after_it(steps: list[Step]) -> None:
    assert_one_final_per_segment(run(steps))


@PROPERTY_SETTINGS
@example(
    steps=[
        Step(0.0, "s0", 0, (("turn", 0.0, 40.0),)),
        Step(POLICY.closed_retention_ms),
        Step(0.0),
        Step(0.0, "s0", 1, (("turn", 0.0, 40.0),)),
    ]
)
@given(steps=LONG_PAUSES)
def test_each_segment_has_at_most_one_final_even_after_long_pauses(steps: list[Step]) -> None:
    assert_one_final_per_segment(run(steps))


@PROPERTY_SETTINGS
@given(steps=ONE_IDLE_PAUSE)
def test_a_committed_word_is_never_committed_twice_nor_changed(steps: list[Step]) -> None:
    for transcripts in by_session(run(steps)).values():
        committed: list[tuple[str, float, float]] = []  # the finals' words, in order
        segment_words: dict[int, list[tuple[str, float, float]]] = {}
        for transcript in transcripts:
            words = [key(w) for w in transcript.words]
            before = segment_words.get(transcript.segment, [])
            assert words[: len(before)] == before, "a committed word changed"
            segment_words[transcript.segment] = words
            if transcript.kind == "final":
                committed += words
        assert len(committed) == len(set(committed)), "a word was committed twice"


def same_word(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    """The same word heard twice: equal but for case and punctuation, and overlapping in time."""
    text_a, start_a, end_a = a
    text_b, start_b, end_b = b
    return normal(text_a) == normal(text_b) and start_a < end_b and start_b < end_a


def normal(text: str) -> str:
    return re.sub(r"[^\w']+", "", text.lower())


@PROPERTY_SETTINGS
@given(steps=ONE_IDLE_PAUSE)
def test_a_word_heard_again_with_shifted_timing_is_not_committed_again(steps: list[Step]) -> None:
    """Speech words never overlap here, so two committed words that overlap with the same text are one word twice."""
    for transcripts in by_session(run(steps)).values():
        committed = [key(w) for t in transcripts if t.kind == "final" for w in t.words]
        twice = [(a, b) for i, a in enumerate(committed) for b in committed[i + 1 :] if same_word(a, b)]
        assert twice == []


@PROPERTY_SETTINGS
@given(steps=ONE_IDLE_PAUSE)
def test_a_transcripts_text_is_its_committed_words_then_its_tail(steps: list[Step]) -> None:
    for transcript in run(steps):
        assert transcript.committed_text == " ".join(w.word for w in transcript.words)
        assert transcript.text == " ".join(t for t in (transcript.committed_text, transcript.tail_text) if t)
        assert transcript.kind == "partial" or not transcript.tail_text


def test_the_generated_steps_reach_partials_finals_and_later_segments() -> None:
    """The generator reaches the cases the properties are about (a property of nothing proves nothing)."""
    seen: set[str] = set()

    @settings(max_examples=100, deadline=None, database=None)
    @given(steps=ONE_IDLE_PAUSE)
    def collect(steps: list[Step]) -> None:
        transcripts = run(steps)
        seen.update(t.kind for t in transcripts)
        if any(t.kind == "final" and t.words for t in transcripts):
            seen.add("final with words")
        if any(t.kind == "final" and t.segment > 0 for t in transcripts):
            seen.add("second segment")

    collect()
    assert seen >= {"partial", "final", "final with words", "second segment"}
