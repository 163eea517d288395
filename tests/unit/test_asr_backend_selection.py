"""HOPLINE_WORKER__RECOGNIZER picks the backend for every entry point: the worker, the ASR CLI and the
stitching bench all load through ``workers.asr.backends``; a bad choice is one line, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.cli import main
from pipeline.demo import SAMPLES_DIR
from pipeline.errors import CliError
from pipeline.settings import Settings, WorkerSettings
from tests.plugins.asr import TINY_TOKENS, export_tiny_ctc_model
from workers.asr.backends import load_recognizer, recognizer_from_settings
from workers.worker import service, stitching_bench

ROOT = Path(__file__).resolve().parents[2]
TINY_LETTERS = set("".join(TINY_TOKENS[2:]))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_ctc_model(tmp_path_factory.mktemp("tiny"), "waveform")


def onnx_settings(model: Path) -> Settings:
    return Settings().override(worker={"recognizer": "onnx", "checkpoint": str(model), "device": "cpu"})


def test_the_setting_defaults_to_torch_and_takes_onnx_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert WorkerSettings().recognizer == "torch"
    monkeypatch.setenv("HOPLINE_WORKER__RECOGNIZER", "onnx")
    assert Settings().worker.recognizer == "onnx"
    assert Settings().to_env()["HOPLINE_WORKER__RECOGNIZER"] == "onnx", "child services inherit the choice"
    monkeypatch.setenv("HOPLINE_WORKER__RECOGNIZER", "tensorflow")
    with pytest.raises(ValidationError):
        Settings()


def test_the_worker_loads_the_backend_the_settings_name(tiny_model: Path) -> None:
    rec = service.load_recognizer(onnx_settings(tiny_model))
    assert rec.info["backend"] == "onnx" and rec.tokens == TINY_TOKENS
    capabilities = service.measure_capabilities(rec, onnx_settings(tiny_model))
    assert capabilities.tiers == ("full",) and capabilities.savings.get("int8", 0.0) == 0.0


def test_the_stitching_bench_loads_the_backend_the_settings_name(tiny_model: Path) -> None:
    summary, results = stitching_bench.run_bench(onnx_settings(tiny_model), samples=1, beam=1)
    assert summary["hops"] > 0
    assert set(results[0].whole.replace(" ", "")) <= TINY_LETTERS, "the tiny model's letters, not English"


def test_onnx_needs_a_model_and_unknown_backends_are_refused() -> None:
    with pytest.raises(CliError, match="onnx recognizer needs its model"):
        load_recognizer("onnx", None)
    with pytest.raises(CliError, match="unknown recognizer 'tensorflow': choose one of torch, onnx"):
        load_recognizer("tensorflow", None)
    with pytest.raises(CliError, match="onnx recognizer needs its model"):
        recognizer_from_settings(WorkerSettings(recognizer="onnx"))


def test_transcribe_goes_through_the_setting(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOPLINE_WORKER__RECOGNIZER", "onnx")
    monkeypatch.setenv("HOPLINE_WORKER__CHECKPOINT", str(tiny_model))
    assert main(["asr", "transcribe", str(SAMPLES_DIR / "call01.wav"), "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["words"] and set(out["text"].replace(" ", "")) <= TINY_LETTERS
    assert all(0 <= w["start_s"] < w["end_s"] for w in out["words"])


def test_bad_choices_are_one_line_cli_errors(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = str(SAMPLES_DIR / "call01.wav")
    assert main(["asr", "transcribe", wav, "--recognizer", "onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs its model" in err
    assert main(["asr", "transcribe", wav, "--recognizer", "onnx", "--checkpoint", str(tiny_model.parent)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ONNX model not found" in err
    monkeypatch.setenv("HOPLINE_WORKER__RECOGNIZER", "tensorflow")
    assert main(["asr", "transcribe", wav]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid setting worker.recognizer" in err


def test_the_factory_and_cli_import_no_engine() -> None:
    code = (
        "import sys, workers.asr.backends, workers.asr.cli; "
        "print(sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
