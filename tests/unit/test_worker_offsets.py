"""Offset commits for at-least-once: only past offsets whose outcome is durable."""

from __future__ import annotations

from workers.worker.offsets import OffsetTracker

TOPIC = "t.hops"


def tracker_with(partition: int, *offsets: int) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.register(TOPIC, partition, offset)
    return tracker


def test_nothing_to_commit_until_the_first_offset_is_done() -> None:
    tracker = tracker_with(0, 10, 11, 12)
    tracker.done(TOPIC, 0, 11)
    tracker.done(TOPIC, 0, 12)
    assert tracker.to_commit() == {}
    tracker.done(TOPIC, 0, 10)
    assert tracker.to_commit() == {(TOPIC, 0): 13}


def test_commit_position_stops_at_the_first_gap_in_acknowledgements() -> None:
    tracker = tracker_with(0, 0, 1, 2, 3)
    for offset in (0, 1, 3):
        tracker.done(TOPIC, 0, offset)
    assert tracker.to_commit() == {(TOPIC, 0): 2}
    assert tracker.outstanding(TOPIC, 0) == 2


def test_partitions_advance_independently() -> None:
    tracker = tracker_with(0, 0, 1)
    tracker.register(TOPIC, 1, 5)
    tracker.done(TOPIC, 1, 5)
    assert tracker.to_commit() == {(TOPIC, 1): 6}


def test_offsets_with_gaps_between_them_are_contiguous_by_registration() -> None:
    tracker = tracker_with(0, 3, 7, 20)
    tracker.done(TOPIC, 0, 3)
    tracker.done(TOPIC, 0, 7)
    assert tracker.to_commit() == {(TOPIC, 0): 8}


def test_a_skipped_hop_cannot_be_committed_past_its_unacknowledged_superseder() -> None:
    """Hop at offset 4 is skipped for the newer hop at offset 6 of the same session (same partition)."""
    tracker = tracker_with(0, 4, 5, 6)
    tracker.done(TOPIC, 0, 4)
    tracker.done(TOPIC, 0, 5)
    assert tracker.to_commit() == {(TOPIC, 0): 6}
    tracker.done(TOPIC, 0, 6)
    assert tracker.to_commit() == {(TOPIC, 0): 7}


def test_committed_positions_are_not_offered_again() -> None:
    tracker = tracker_with(0, 0, 1)
    tracker.done(TOPIC, 0, 0)
    positions = tracker.to_commit()
    tracker.committed(positions)
    assert tracker.to_commit() == {}
    tracker.done(TOPIC, 0, 1)
    assert tracker.to_commit() == {(TOPIC, 0): 2}


def test_a_forgotten_partition_ignores_late_acknowledgements() -> None:
    tracker = tracker_with(2, 0, 1)
    tracker.forget(TOPIC, 2)
    tracker.done(TOPIC, 2, 0)
    assert tracker.to_commit() == {}
    assert tracker.outstanding(TOPIC, 2) == 0


def test_a_rewound_partition_starts_over_from_the_replayed_offset() -> None:
    tracker = tracker_with(0, 5, 6, 7)
    tracker.done(TOPIC, 0, 5)
    tracker.register(TOPIC, 0, 6)
    assert tracker.to_commit() == {}
    assert tracker.outstanding(TOPIC, 0) == 1
    tracker.done(TOPIC, 0, 6)
    assert tracker.to_commit() == {(TOPIC, 0): 7}
