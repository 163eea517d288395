"""Fixtures for the ASR engine tests: the shipped recognizer (loaded once) and the shipped samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.demo import SAMPLES_DIR as SAMPLES
from workers.asr import Recognizer
from workers.asr.audio import load_audio


@pytest.fixture(scope="session")
def recognizer() -> Recognizer:
    return Recognizer.load(device="cpu", threads=2)


@pytest.fixture(scope="session")
def samples() -> list[tuple[dict, np.ndarray]]:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    return [(entry, load_audio(SAMPLES / entry["file"])) for entry in manifest["samples"]]
