"""The readiness signal (pipeline/ready.py): one fixed-token line, matched exactly."""

from __future__ import annotations

import pytest

from pipeline.ready import READY_TOKEN, announce_ready, announce_stats, ready_line, ready_service, stats_of


def test_announce_prints_one_fixed_token_line_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    announce_ready("windower")
    captured = capsys.readouterr()
    assert captured.out == f"{READY_TOKEN} windower\n" == ready_line("windower") + "\n"
    assert captured.err == ""


@pytest.mark.parametrize(
    ("line", "service"),
    [
        ("HOPLINE-READY worker\n", "worker"),
        ("HOPLINE-READY broker", "broker"),
        ("worker w1 ready: consuming t.hops in group t-worker", None),
        ("2026-01-01 INFO x: HOPLINE-READY worker", None),
        ("HOPLINE-READY", None),
        ("HOPLINE-READY two words", None),
        ("HOPLINE-READYworker", None),
        ("broker ready on 127.0.0.1:19092 (Ctrl-C to stop)", None),
    ],
)
def test_only_the_exact_ready_line_names_a_service(line: str, service: str | None) -> None:
    assert ready_service(line) == service


def test_exit_stats_go_to_stderr_and_parse_back(capsys: pytest.CaptureFixture[str]) -> None:
    announce_stats("worker", {"produce_batches": 12, "produce_batches_per_s": 1.5})
    captured = capsys.readouterr()
    assert captured.out == ""
    assert stats_of(captured.err) == ("worker", {"produce_batches": 12, "produce_batches_per_s": 1.5})


@pytest.mark.parametrize(
    "line", ["HOPLINE-STATS worker", "HOPLINE-STATS worker {bad", "HOPLINE-STATS worker [1]", "x y {}"]
)
def test_anything_else_is_not_a_stats_line(line: str) -> None:
    assert stats_of(line) is None
