"""``hopline soak``'s arithmetic: RSS from /proc, per-minute peaks, changelog bytes per session per minute."""

import os
import time
from pathlib import Path

from pipeline.demo.soak import Rss, RssSampler, per_minute, per_session_per_minute, read_rss_mb, rss_mb

STATUS = "Name:\tpython\nVmPeak:\t  912340 kB\nVmHWM:\t  300000 kB\nVmRSS:\t  262144 kB\nThreads:\t12\n"


def test_rss_is_the_vmrss_line_in_mb_not_the_peak() -> None:
    assert rss_mb(STATUS) == 256.0


def test_a_status_without_vmrss_has_no_rss() -> None:
    """A kernel thread or a zombie has no VmRSS line."""
    assert rss_mb("Name:\tkworker/0:1\nState:\tI (idle)\n") is None


def test_rss_of_a_live_process_is_read_and_of_a_gone_one_is_none(tmp_path: Path) -> None:
    live = read_rss_mb(os.getpid())
    assert live is not None and live > 1.0
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "status").write_text(STATUS)
    assert read_rss_mb(42, proc=tmp_path) == 256.0
    assert read_rss_mb(43, proc=tmp_path) is None


def test_per_minute_keeps_each_minutes_peak_and_leaves_unsampled_minutes_empty() -> None:
    samples: list[tuple[float, Rss]] = [
        (0.0, {"worker": 400.0, "windower": None}),
        (59.9, {"worker": 420.0, "windower": 90.0}),
        (60.0, {"worker": 410.0, "windower": 95.0}),
        (185.0, {"worker": 450.0, "windower": None}),
    ]
    assert per_minute(samples) == {"worker": [420.0, 410.0, None, 450.0], "windower": [90.0, 95.0, None, None]}


def test_per_minute_of_no_samples_is_empty() -> None:
    assert per_minute([]) == {}


def test_changelog_bytes_are_divided_by_sessions_and_streamed_minutes() -> None:
    assert per_session_per_minute(3_000_000, sessions=10, streamed_s=180.0) == 100_000.0
    assert per_session_per_minute(1_000, sessions=2, streamed_s=30.0) == 1_000.0
    assert per_session_per_minute(1_000, sessions=2, streamed_s=0.0) == 0.0


def test_sampler_takes_the_start_on_entry_one_a_interval_and_the_end_on_exit() -> None:
    readings = iter(range(100, 200))
    with RssSampler({"worker": 7}, interval_s=0.05, read=lambda pid: float(next(readings))) as sampler:
        while len(sampler.samples) < 3:
            time.sleep(0.01)
    assert sampler.samples[0] == (0.0, {"worker": 100.0})
    taken = [rss["worker"] for _, rss in sampler.samples]
    assert len(taken) >= 3 and taken == [100.0 + i for i in range(len(taken))]
    assert 0.04 <= sampler.samples[1][0] < sampler.samples[2][0]
    assert sampler.end == {"worker": 100.0 + len(taken)}
