"""Fixtures for the ASR engine tests: the shipped recognizer (loaded once) and the shipped samples.

torch is imported by the fixtures, not by this module: a run without ASR tests does not pay for it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pytest

from pipeline.demo import SAMPLES_DIR

if TYPE_CHECKING:
    from workers.asr import Recognizer

Samples = list[tuple[dict, np.ndarray]]


@pytest.fixture(scope="session")
def recognizer() -> Recognizer:
    from workers.asr import Recognizer

    return Recognizer.load(device="cpu", threads=2)


@pytest.fixture(scope="session")
def samples() -> Samples:
    """``(manifest entry, 16 kHz float audio)`` of every bundled demo sample."""
    from workers.asr.audio import load_audio

    manifest = json.loads((SAMPLES_DIR / "manifest.json").read_text())
    return [(entry, load_audio(SAMPLES_DIR / entry["file"])) for entry in manifest["samples"]]
