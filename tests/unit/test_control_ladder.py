import itertools

from pipeline.control.ladder import ladder
from pipeline.settings import Settings


def test_ladder_only_ever_lowers_quality() -> None:
    steps = ladder(Settings())
    for lower, higher in itertools.pairwise(steps):
        assert higher.level == lower.level + 1
        assert higher.emit_interval_ms >= lower.emit_interval_ms
        assert higher.window_secs <= lower.window_secs
        assert higher.beam <= lower.beam
    assert [s.admit_new_sessions for s in steps] == [True] * 5 + [False]


def test_the_int8_tier_comes_with_greedy_decoding_and_stays() -> None:
    assert [s.tier for s in ladder(Settings())] == ["full"] * 4 + ["int8"] * 2
