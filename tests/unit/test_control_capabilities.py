"""What the workers' measured knob savings add up to for the controller (pipeline/control/capabilities.py)."""

import math

from pipeline import contracts
from pipeline.control.capabilities import CapabilityBook, combined_savings


def capabilities(worker_id: str, measured_ts_ms: float = 1_000.0, **savings: float) -> contracts.WorkerCapabilities:
    return contracts.WorkerCapabilities(
        worker_id=worker_id,
        device="cpu",
        measured_ts_ms=measured_ts_ms,
        batch_size=8,
        base_batch_ms=40.0,
        savings=savings,
        tiers=("full", "int8"),
    )


def test_a_knob_is_worth_what_it_saves_on_the_worker_where_it_saves_least() -> None:
    records = {
        "gpu": capabilities("gpu", window=0.3, beam2=0.4, greedy=0.6),
        "cpu": capabilities("cpu", window=0.25, beam2=0.02, greedy=0.05, int8=0.3),
    }
    assert combined_savings(records, 3600.0) == {"beam2": 0.02, "greedy": 0.05, "window": 0.25}
    assert combined_savings({}, 3600.0) == {}


def test_workers_measured_long_before_the_newest_are_left_out() -> None:
    records = {
        "gone": capabilities("gone", measured_ts_ms=0.0, window=0.01),
        "live": capabilities("live", measured_ts_ms=7_200_000.0, window=0.25),
    }
    assert combined_savings(records, 3600.0) == {"window": 0.25}


def test_the_book_keeps_the_newest_record_per_worker_and_refuses_nonsense() -> None:
    book = CapabilityBook()
    assert book.apply(capabilities("w1", measured_ts_ms=2_000.0, window=0.2).encode())
    assert not book.apply(capabilities("w1", measured_ts_ms=1_000.0, window=0.9).encode()), "an older measurement"
    assert not book.apply(capabilities("w2", window=1.5).encode()), "a saving of 150%"
    assert not book.apply(capabilities("w2", window=math.nan).encode())
    assert not book.apply(b"not a record")
    assert book.version == 1 and book.savings() == {"window": 0.2}
    assert book.apply(capabilities("w1", measured_ts_ms=3_000.0, window=0.3).encode())
    assert book.version == 2 and book.savings() == {"window": 0.3}


def test_the_book_says_why_it_refuses_a_record_but_not_when_one_is_merely_older() -> None:
    """The follower dead-letters what the book refuses; an older measurement is a re-read, not poison."""
    book = CapabilityBook()
    refusals: list[tuple[str, BaseException | None]] = []

    def refused(reason: str, error: BaseException | None) -> None:
        refusals.append((reason, error))

    book.apply(capabilities("w1", measured_ts_ms=2_000.0).encode(), refused)
    book.apply(capabilities("w1", measured_ts_ms=1_000.0).encode(), refused)
    assert refusals == []
    book.apply(b"not a record", refused)
    book.apply(capabilities("w2", window=1.5).encode(), refused)
    (unreadable, unreadable_error), (implausible, implausible_error) = refusals
    assert "unreadable" in unreadable and isinstance(unreadable_error, contracts.ContractError)
    assert "w2" in implausible and "outside [0, 1)" in implausible and implausible_error is None


def test_the_controller_prices_the_knobs_the_worker_measures() -> None:
    """pipeline never imports workers, so the knob names live on both sides; they must agree."""
    from pipeline.control import costs
    from workers.asr import knob_costs

    assert (costs.KNOB_WINDOW, costs.KNOB_BEAM2, costs.KNOB_GREEDY, costs.KNOB_INT8) == knob_costs.KNOBS
