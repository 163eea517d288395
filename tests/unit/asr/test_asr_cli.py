from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from workers.asr import cli

ROOT = Path(__file__).resolve().parents[3]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    commands = ap.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench").add_subparsers(dest="bench_command", required=True)
    cli.register(commands, bench)
    return ap


def test_register_adds_asr_commands_and_the_benchmark() -> None:
    ap = _parser()
    for argv in (
        ["asr", "synth"],
        ["asr", "train"],
        ["asr", "eval", "--json"],
        ["asr", "transcribe", "x.wav"],
        ["bench", "asr", "--json"],
    ):
        assert callable(ap.parse_args(argv).handler)


def test_cli_module_does_not_import_torch() -> None:
    code = "import sys, workers.asr.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_transcribe_prints_the_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((ROOT / "samples" / "manifest.json").read_text())["samples"]
    args = _parser().parse_args(
        ["asr", "transcribe", str(ROOT / "samples" / manifest[0]["file"]), "--json", "--device", "cpu"]
    )
    assert cli.run(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == manifest[0]["text"]
    assert len(out["words"]) == len(out["text"].split())


def test_user_errors_are_one_line_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["asr", "transcribe", str(tmp_path / "missing.wav")])
    assert cli.run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.wav" in err
    (tmp_path / "bad.wav").write_bytes(b"RIFF nonsense")
    assert cli.run(_parser().parse_args(["asr", "transcribe", str(tmp_path / "bad.wav")])) == 2
    assert cli.run(_parser().parse_args(["asr", "eval", "--corpus", str(tmp_path)])) == 2
    args = _parser().parse_args(
        ["asr", "transcribe", str(ROOT / "samples" / "call01.wav"), "--checkpoint", str(tmp_path / "none.pt")]
    )
    assert cli.run(args) == 2
    assert "none.pt: checkpoint not found" in capsys.readouterr().err
