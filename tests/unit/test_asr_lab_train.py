"""The training recipe end to end at toy scale: synthesize, train, checkpoint, resume, fine-tune."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from workers.asr import checkpoint
from workers.asr.lab.cli import add_train_arguments
from workers.asr.lab.espeak import espeak_available

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    argv = [
        "--corpus",
        str(tmp_path / "corpus"),
        "--split",
        "train",
        "--run-dir",
        str(tmp_path / "run"),
        "--export",
        str(tmp_path / "asr.pt"),
        "--minutes",
        "0.02",
        "--batch-seconds",
        "12",
        "--d-model",
        "32",
        "--layers",
        "1",
        "--crop-share",
        "0.5",
        "--threads",
        "2",
        "--device",
        "cpu",
        *extra,
    ]
    return add_train_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_train_checkpoints_resumes_and_fine_tunes(tmp_path: Path) -> None:
    from workers.asr.lab import synth, train

    assert synth.synthesize(tmp_path / "corpus", "train", 6, seed=1, workers=1) == 6
    first = train.train(_args(tmp_path))
    assert first["steps"] >= 1 and first["final_loss"] == first["final_loss"]  # not NaN
    model, _, info = checkpoint.load(tmp_path / "asr.pt")
    assert info["steps"] == first["steps"] and model.config.d_model == 32
    resumed = train.train(_args(tmp_path, "--resume", "--minutes", "0.04"))
    assert resumed["steps"] > first["steps"]
    tuned = train.train(_args(tmp_path, "--init", str(tmp_path / "asr.pt"), "--run-dir", str(tmp_path / "ft")))
    assert tuned["fine_tuned_from"]["steps"] == resumed["steps"]
