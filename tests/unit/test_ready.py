"""The readiness signal (pipeline/ready.py): one fixed-token line, matched exactly."""

from __future__ import annotations

import pytest

from pipeline.ready import READY_TOKEN, announce_ready, ready_line, ready_service


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
