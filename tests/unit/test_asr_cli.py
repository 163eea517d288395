from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.demo import SAMPLES_DIR
from workers.asr import cli
from workers.asr.lab import cli as lab_cli

ROOT = Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    ap, commands, bench = cli.standalone_parser("test")
    lab_cli.register(commands, bench)
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
    code = "import sys, workers.asr.cli, workers.asr.lab.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_transcribe_prints_the_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    manifest = json.loads((SAMPLES_DIR / "manifest.json").read_text())["samples"]
    assert main(["asr", "transcribe", str(SAMPLES_DIR / manifest[0]["file"]), "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == manifest[0]["text"]
    assert len(out["words"]) == len(out["text"].split())


def test_user_errors_are_one_line_with_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asr", "transcribe", str(tmp_path / "missing.wav")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.wav" in err
    (tmp_path / "bad.wav").write_bytes(b"RIFF nonsense")
    assert main(["asr", "transcribe", str(tmp_path / "bad.wav")]) == 2
    assert main(["asr", "eval", "--corpus", str(tmp_path)]) == 2
    assert main(["asr", "transcribe", str(SAMPLES_DIR / "call01.wav"), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "none.pt: checkpoint not found" in capsys.readouterr().err
