"""The micro-batch policy under a fake clock, and its threaded shell."""

from __future__ import annotations

import itertools
import random
import threading
from concurrent.futures import Future

import pytest

from tests.plugins.clock import FakeClock
from workers.batching.policy import Batch, BatchPolicy, InferenceStride, MicroBatcher, Pending, Superseded


def hop(session: str, seq: int, final: bool = False) -> Pending[str]:
    return Pending(session_id=session, seq=seq, is_final=final, item=f"{session}#{seq}")


def make_policy(
    clock: FakeClock, max_batch_size: int = 4, max_latency_s: float = 0.02, coalesce: bool = True
) -> BatchPolicy[str]:
    return BatchPolicy(max_batch_size=max_batch_size, max_latency_s=max_latency_s, coalesce_stale=coalesce, clock=clock)


def test_a_session_whose_next_hop_is_not_due_before_the_deadline_does_not_hold_the_batch() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    run_alone(policy, "c")
    clock.advance(0.05)  # c's next hop is due about 110 ms from now, long after a 20 ms cap
    policy.offer(hop("a", 0))
    assert policy.seconds_until_ready() == 0.0
    clock.advance(0.08)  # now c's next hop (due at 1000.16, 20 ms slack) may land within the cap
    run_alone(policy, "a", 1)
    policy.offer(hop("b", 0))
    assert policy.seconds_until_ready() == pytest.approx(0.02)


def run_alone(policy: BatchPolicy[str], session: str, seq: int = 0, final: bool = False) -> None:
    """One hop of ``session`` goes through on its own: the session is now active (or ended, if final)."""
    policy.offer(hop(session, seq, final))
    batch = policy.take(force=True)
    assert batch is not None
    policy.finish(batch)


def test_batch_closes_when_first_hop_reaches_max_latency() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    run_alone(policy, "c")
    clock.advance(0.13)  # c's next hop is due at 1000.16, within a batch opened now
    policy.offer(hop("a", 0))
    clock.advance(0.005)
    policy.offer(hop("b", 0))
    assert policy.seconds_until_ready() == pytest.approx(0.015)
    clock.advance(0.0149)
    assert policy.take() is None
    clock.advance(0.0001)
    batch = policy.take()
    assert batch is not None
    assert batch.items == ["a#0", "b#0"]
    assert batch.closed_at == pytest.approx(1000.15)
    assert [e.closed_at - e.received_at for e in batch.entries] == pytest.approx([0.02, 0.015])


def test_full_batch_closes_at_once_without_waiting_for_the_deadline() -> None:
    clock = FakeClock()
    policy = make_policy(clock, max_batch_size=3)
    for session in "abc":
        policy.offer(hop(session, 0))
        clock.advance(0.001)
    policy.offer(hop("d", 0))
    batch = policy.take()
    assert batch is not None
    assert batch.items == ["a#0", "b#0", "c#0"]
    assert batch.closed_at == pytest.approx(1000.002)
    assert policy.depth == 1


def test_only_one_batch_in_flight_and_the_next_keeps_filling() -> None:
    clock = FakeClock()
    policy = make_policy(clock, max_batch_size=2)
    policy.offer(hop("a", 0))
    policy.offer(hop("b", 0))
    first = policy.take()
    assert first is not None
    policy.offer(hop("c", 0))
    policy.offer(hop("d", 0))
    clock.advance(1.0)
    assert policy.take() is None
    assert policy.seconds_until_ready() is None
    assert policy.depth == 2
    policy.finish(first)
    second = policy.take()
    assert second is not None
    assert second.items == ["c#0", "d#0"]


def test_wait_for_a_busy_gpu_is_not_counted_as_batch_wait() -> None:
    clock = FakeClock()
    policy = make_policy(clock, max_batch_size=8, max_latency_s=0.02)
    policy.offer(hop("a", 0))
    running = policy.take(force=True)
    assert running is not None
    policy.offer(hop("b", 0))
    clock.advance(0.1)
    policy.offer(hop("c", 0))
    clock.advance(0.05)
    policy.finish(running)
    batch = policy.take()
    assert batch is not None
    closed_b, closed_c = (e.closed_at for e in batch.entries)
    assert closed_b == pytest.approx(1000.02)
    assert closed_c == pytest.approx(1000.1)
    assert batch.taken_at == pytest.approx(1000.15)


def test_batch_never_holds_two_hops_of_one_session_without_coalescing() -> None:
    clock = FakeClock()
    policy = make_policy(clock, coalesce=False)
    assert policy.offer(hop("a", 0)) == []
    assert policy.offer(hop("a", 1)) == []
    policy.offer(hop("b", 0))
    clock.advance(0.02)
    first = policy.take()
    assert first is not None
    assert first.items == ["a#0", "b#0"]
    policy.finish(first)
    clock.advance(0.02)
    second = policy.take()
    assert second is not None
    assert second.items == ["a#1"]
    assert policy.skipped == 0


def test_coalescing_skips_the_older_waiting_hop_and_counts_it() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    first = hop("a", 0)
    policy.offer(first)
    policy.offer(hop("b", 0))
    skipped = policy.offer(hop("a", 1))
    assert skipped == [first]
    skipped_again = policy.offer(hop("a", 2))
    assert [p.seq for p in skipped_again] == [1]
    clock.advance(0.02)
    batch = policy.take()
    assert batch is not None
    assert batch.items == ["b#0", "a#2"]
    assert [e.skipped_before for e in batch.entries] == [0, 2]
    assert policy.skipped == 2


def test_a_late_older_hop_is_skipped_in_favour_of_the_waiting_newer_one() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    newer = hop("a", 5)
    policy.offer(newer)
    late = hop("a", 4)
    assert policy.offer(late) == [late]
    assert newer.skipped_before == 1
    assert policy.depth == 1


def test_final_hops_are_never_skipped() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    final = hop("a", 7, final=True)
    policy.offer(final)
    assert policy.offer(hop("a", 8, final=True)) == []
    assert policy.depth == 2
    clock.advance(0.02)
    batch = policy.take()
    assert batch is not None
    assert batch.items == ["a#7"]


def test_a_final_hop_supersedes_an_older_waiting_hop() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    older = hop("a", 3)
    policy.offer(older)
    assert policy.offer(hop("a", 4, final=True)) == [older]
    clock.advance(0.02)
    batch = policy.take()
    assert batch is not None
    assert batch.items == ["a#4"]
    assert batch.entries[0].skipped_before == 1


def test_coalescing_off_keeps_every_hop() -> None:
    clock = FakeClock()
    policy = make_policy(clock, coalesce=False)
    for seq in range(5):
        assert policy.offer(hop("a", seq)) == []
    assert policy.depth == 5


def test_randomised_arrivals_respect_every_rule() -> None:
    """Whatever arrives when, no batch exceeds its size, holds a session twice, or waits past the cap."""
    rng = random.Random(7)
    clock = FakeClock()
    max_batch, max_latency = 3, 0.02
    policy = make_policy(clock, max_batch_size=max_batch, max_latency_s=max_latency)
    next_seq = dict.fromkeys("abcdefgh", 0)
    offered = skipped = processed = 0
    running: Batch[str] | None = None
    gpu_free_at = clock.now
    for _ in range(3000):
        clock.advance(rng.uniform(0, 0.01))
        if rng.random() < 0.6:
            session = rng.choice(sorted(next_seq))
            final = rng.random() < 0.05
            skipped += len(policy.offer(hop(session, next_seq[session], final)))
            next_seq[session] += 1
            offered += 1
        if running is not None and clock.now >= gpu_free_at:
            policy.finish(running)
            running = None
        if running is None and (batch := policy.take()) is not None:
            assert 1 <= len(batch) <= max_batch
            assert len({e.session_id for e in batch.entries}) == len(batch)
            for entry in batch.entries:
                assert 0 <= entry.closed_at - entry.received_at <= max_latency + 1e-9
                assert entry.closed_at <= batch.taken_at
            running = batch
            processed += len(batch)
            gpu_free_at = clock.now + rng.uniform(0.001, 0.06)
    assert offered == processed + skipped + policy.depth
    assert policy.skipped == skipped
    assert skipped > 0


def test_a_lone_session_hop_closes_at_once() -> None:
    clock = FakeClock()
    policy = make_policy(clock, max_latency_s=0.02)
    policy.offer(hop("a", 0))
    assert policy.seconds_until_ready() == 0.0
    batch = policy.take()
    assert batch is not None
    assert batch.closed_at == pytest.approx(1000.0)
    policy.finish(batch)
    clock.advance(0.16)
    policy.offer(hop("a", 1))
    assert policy.take() is not None, "its own previous hop does not hold the batch open"


def test_batch_closes_when_every_active_session_is_in_it_not_at_the_cap() -> None:
    clock = FakeClock()
    policy = make_policy(clock, max_batch_size=8, max_latency_s=0.02)
    for session in "abc":
        run_alone(policy, session)
    clock.advance(0.16)
    policy.offer(hop("a", 1))
    clock.advance(0.003)
    policy.offer(hop("b", 1))
    assert policy.take() is None
    assert policy.seconds_until_ready() == pytest.approx(0.017)
    clock.advance(0.003)
    policy.offer(hop("c", 1))
    batch = policy.take()
    assert batch is not None
    assert batch.items == ["a#1", "b#1", "c#1"]
    assert batch.closed_at == pytest.approx(1000.166)


def test_a_session_silent_beyond_the_horizon_no_longer_holds_batches_open() -> None:
    clock = FakeClock()
    policy = BatchPolicy[str](max_batch_size=8, max_latency_s=0.02, clock=clock, active_horizon_s=0.32)
    for session in "abc":
        run_alone(policy, session)
    clock.advance(0.31)
    policy.offer(hop("a", 1))
    policy.offer(hop("b", 1))
    assert policy.seconds_until_ready() == pytest.approx(0.01), "closes when c goes silent, before the cap"
    clock.advance(0.011)
    batch = policy.take()
    assert batch is not None
    assert batch.closed_at == pytest.approx(1000.32)
    policy.finish(batch)
    clock.advance(0.15)
    policy.offer(hop("a", 2))
    policy.offer(hop("b", 2))
    assert policy.take() is not None


def test_a_final_hop_ends_its_session_activity() -> None:
    clock = FakeClock()
    policy = make_policy(clock, max_batch_size=8, max_latency_s=0.02)
    run_alone(policy, "a")
    run_alone(policy, "b", final=True)
    clock.advance(0.16)
    policy.offer(hop("a", 1))
    batch = policy.take()
    assert batch is not None, "the ended session b is not waited for"
    assert batch.closed_at == pytest.approx(1000.16)


def test_policy_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchPolicy(max_batch_size=0, max_latency_s=0.02)
    with pytest.raises(ValueError, match="max_latency_s"):
        BatchPolicy(max_batch_size=1, max_latency_s=-1)
    with pytest.raises(ValueError, match="active_horizon_s"):
        BatchPolicy(max_batch_size=1, max_latency_s=0.02, active_horizon_s=-1)


def test_finish_of_a_batch_not_in_flight_is_an_error() -> None:
    clock = FakeClock()
    policy = make_policy(clock)
    policy.offer(hop("a", 0))
    batch = policy.take(force=True)
    assert batch is not None
    policy.finish(batch)
    with pytest.raises(ValueError, match="not in flight"):
        policy.finish(batch)


def test_micro_batcher_resolves_futures_and_runs_one_batch_at_a_time() -> None:
    running = 0
    most_running = 0
    lock = threading.Lock()
    release = threading.Event()
    batches: list[list[str]] = []

    def run_batch(batch: Batch[str]) -> list[str]:
        nonlocal running, most_running
        with lock:
            running += 1
            most_running = max(most_running, running)
        release.wait(5)
        batches.append(batch.items)
        with lock:
            running -= 1
        return [item.upper() for item in batch.items]

    policy: BatchPolicy[str] = BatchPolicy(max_batch_size=2, max_latency_s=0.001)
    batcher = MicroBatcher(policy, run_batch).start()
    futures: list[Future[str]] = [batcher.submit(s, 0, False, f"{s}#0") for s in "abcde"]
    release.set()
    assert [f.result(5) for f in futures] == ["A#0", "B#0", "C#0", "D#0", "E#0"]
    batcher.close(5)
    assert most_running == 1
    assert all(len(items) <= 2 for items in batches)


def test_micro_batcher_fails_skipped_futures_with_superseded() -> None:
    hold = threading.Event()

    def run_batch(batch: Batch[str]) -> list[str]:
        hold.wait(5)
        return batch.items

    batcher = MicroBatcher(BatchPolicy[str](max_batch_size=4, max_latency_s=10.0), run_batch).start()
    old = batcher.submit("a", 0, False, "a#0")
    new = batcher.submit("a", 1, False, "a#1")
    assert isinstance(old.exception(1), Superseded)
    hold.set()
    batcher.close(5)
    assert new.result(1) == "a#1"


def test_micro_batcher_close_drains_without_waiting_for_deadlines() -> None:
    batcher = MicroBatcher(BatchPolicy[str](max_batch_size=8, max_latency_s=3600.0), lambda b: b.items).start()
    futures = [batcher.submit(s, 0, False, s) for s in "xyz"]
    batcher.close(5)
    assert [f.result(0) for f in futures] == ["x", "y", "z"]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("q", 0, False, "q")


def test_micro_batcher_turns_a_failing_batch_into_failed_futures() -> None:
    def run_batch(batch: Batch[str]) -> list[str]:
        raise RuntimeError("model exploded")

    batcher = MicroBatcher(BatchPolicy[str](max_batch_size=8, max_latency_s=0.0), run_batch).start()
    future = batcher.submit("a", 0, False, "a")
    assert str(future.exception(5)) == "model exploded"
    follow_up = batcher.submit("b", 0, False, "b")
    assert follow_up.exception(5) is not None
    batcher.close(5)


def test_stride_runs_every_nth_hop_staggered_evenly_and_always_finals() -> None:
    stride = InferenceStride()
    sessions = [f"tenant/s{i}" for i in range(10)]
    assert all(stride.runs(s, seq, False, 1) for s in sessions for seq in range(4))
    for session in sessions:
        runs = [seq for seq in range(12) if stride.runs(session, seq, False, 2)]
        assert len(runs) == 6 and all(b - a == 2 for a, b in itertools.pairwise(runs))
    assert [sum(stride.runs(s, seq, False, 2) for s in sessions) for seq in (20, 21)] == [5, 5], "5 + 5, not 6 + 4"
    assert stride.runs(sessions[0], 7, True, 2) and stride.runs(sessions[1], 8, True, 2), "finals always run"
    assert stride.sessions == 8, "a session's slot is forgotten at its final hop"


def test_hops_not_run_are_accounted_by_the_next_hop_run() -> None:
    stride = InferenceStride()
    ran = [seq for seq in range(7) if stride.runs("s", seq, False, 2)]
    assert ran == [0, 2, 4, 6]
    assert stride.take_strided("s") == 3, "hops 1, 3 and 5 were not run"
    assert stride.take_strided("s") == 0
    assert not stride.runs("s", 7, False, 2)
    stride.carry("s", 2)
    assert stride.take_strided("s") == 3, "a stale-skipped hop's count goes to the next hop run"
    stride.runs("s", 8, True, 2)
    stride.carry("s", 4)
    assert stride.take_strided("s") == 0, "nothing is carried past a session's final hop"


def test_a_backlog_is_coalesced_only_as_far_as_the_window_covers() -> None:
    """After an outage 20 hops of one session arrive at once: skipping all but the newest would lose the audio
    of the 14 before its 6-hop window, so every 6th hop stays."""
    policy: BatchPolicy[str] = BatchPolicy(max_batch_size=8, max_latency_s=0.02, clock=FakeClock(), cover_hops=6)
    skipped = [old.seq for seq in range(20) for old in policy.offer(hop("s", seq))]
    kept = [p.seq for p in policy._waiting]
    assert len(kept) + len(skipped) == 20
    assert all(b - a <= 6 for a, b in itertools.pairwise([-1, *kept])), f"audio before a kept window lost: {kept}"
    assert kept[-1] == 19
    unbounded: BatchPolicy[str] = BatchPolicy(max_batch_size=8, max_latency_s=0.02, clock=FakeClock())
    for seq in range(20):
        unbounded.offer(hop("s", seq))
    assert [p.seq for p in unbounded._waiting] == [19], "without a window bound only the newest stays"
