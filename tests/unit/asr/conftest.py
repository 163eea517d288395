"""Fixtures for the ASR engine tests: the shipped recognizer (loaded once) and the shipped samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workers.asr import Recognizer
from workers.asr.audio import load_audio

SAMPLES = Path(__file__).resolve().parents[3] / "samples"


@pytest.fixture(scope="session")
def recognizer() -> Recognizer:
    return Recognizer.load(device="cpu", threads=2)


@pytest.fixture(scope="session")
def samples() -> list[tuple[dict, np.ndarray]]:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    return [(entry, load_audio(SAMPLES / entry["file"])) for entry in manifest["samples"]]
