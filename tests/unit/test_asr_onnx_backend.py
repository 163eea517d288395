"""The onnx backend on tiny random CTC models exported in the test: shapes, lengths, frame timing,
features, tiers, greedy CTC decoding and the spec's one-line errors."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.plugins.asr import TINY_FRAME_S, TINY_STRIDE, TINY_TOKENS, TINY_WINDOW, export_tiny_ctc_model
from workers.asr import CheckpointError, Recognizer
from workers.asr.backends import load_recognizer
from workers.asr.ctc_greedy import GreedyCtcDecoder
from workers.asr.features import LogMel
from workers.asr.onnx_backend import LogMelFeatures
from workers.asr.onnx_export import project_spec
from workers.asr.recognizer import FrameTiming

LENGTHS = (16000, 8000, 20480, 3000)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {kind: export_tiny_ctc_model(root / kind, kind) for kind in ("waveform", "fbank")}


def windows(lengths: tuple[int, ...] = LENGTHS, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def test_waveform_model_gives_one_row_per_frame_for_windows_of_different_lengths(
    tiny_models: dict[str, Path],
) -> None:
    rec = load_recognizer("onnx", tiny_models["waveform"], device="cpu", threads=1)
    batch = windows()
    log_probs = rec.log_probs(batch)
    assert [tuple(lp.shape) for lp in log_probs] == [
        ((n - TINY_WINDOW) // TINY_STRIDE + 1, len(TINY_TOKENS)) for n in LENGTHS
    ]
    for lp, window in zip(log_probs, batch, strict=True):
        torch.testing.assert_close(lp.exp().sum(-1), torch.ones(len(lp)), msg="logits get a log_softmax")
        torch.testing.assert_close(lp, rec.log_probs([window])[0], atol=1e-4, rtol=1e-4)
    assert rec.log_probs([]) == []


def test_fbank_model_without_length_output_uses_the_subsampling_factor(tiny_models: dict[str, Path]) -> None:
    rec = load_recognizer("onnx", tiny_models["fbank"], device="cpu", threads=1)
    feature_frames = [(n - 400) // 160 + 1 for n in LENGTHS]
    assert [len(lp) for lp in rec.log_probs(windows())] == [math.ceil(f / 2) for f in feature_frames]


def test_word_times_come_from_the_frames_and_stay_inside_the_window(tiny_models: dict[str, Path]) -> None:
    rec = load_recognizer("onnx", tiny_models["waveform"], device="cpu", threads=1)
    batch = windows()
    results = rec.transcribe(batch, beam=4)
    assert len(results) == len(batch) and any(r.words for r in results)
    for result, window in zip(results, batch, strict=True):
        frames = (len(window) - TINY_WINDOW) // TINY_STRIDE + 1
        assert result.text == " ".join(w.word for w in result.words)
        for word in result.words:
            assert set(word.word) <= set("".join(TINY_TOKENS[2:]))
            assert 0 <= word.start_s < word.end_s <= min(frames * TINY_FRAME_S, len(window) / 16000)
            assert round(word.start_s / TINY_FRAME_S, 6).is_integer(), "starts lie on frame boundaries"
            assert 0 < word.confidence <= 1


def test_onnx_offers_only_the_full_tier_and_int8_falls_back_to_it(tiny_models: dict[str, Path]) -> None:
    rec = load_recognizer("onnx", tiny_models["waveform"], device="cpu", threads=1)
    assert rec.tiers_available() == ("full",)
    assert rec.device.type == "cpu" and rec.sample_rate == 16000 and rec.tokens == TINY_TOKENS
    assert rec.info["backend"] == "onnx"
    rec.prepare_tier("int8")
    batch = windows()
    assert rec.transcribe(batch, beam=2, tier="int8") == rec.transcribe(batch, beam=2, tier="full")
    with pytest.raises(ValueError, match="tier must be one of"):
        rec.transcribe(batch, tier="fp4")
    with pytest.raises(ValueError, match="beam must be one of"):
        rec.transcribe(batch, beam=3)


def test_fbank_follows_the_spec_like_the_project_front_end() -> None:
    spec = project_spec().fbank
    assert spec is not None
    audio = torch.from_numpy(np.stack(windows((20480, 20480))))
    torch.testing.assert_close(LogMelFeatures(spec, 16000)(audio), LogMel()(audio), atol=1e-4, rtol=1e-5)
    normalised = spec.model_copy(update={"mean": [1.0] * 80, "std": [2.0] * 80})
    torch.testing.assert_close(
        LogMelFeatures(normalised, 16000)(audio), (LogMelFeatures(spec, 16000)(audio) - 1.0) / 2.0
    )


# --- greedy CTC on hand-made log-probabilities -------------------------------------------------


def posteriors(tokens: list[str], path: list[str], probs: list[float] | None = None) -> torch.Tensor:
    """Log-probabilities whose argmax follows ``path`` (one token per frame) with the given max-probs."""
    probs = probs or [0.9] * len(path)
    lp = torch.full((len(path), len(tokens)), 1e-6)
    for frame, (token, p) in enumerate(zip(path, probs, strict=True)):
        lp[frame] = (1 - p) / (len(tokens) - 1)
        lp[frame, tokens.index(token)] = p
    return lp.log()


BOUNDARY_TOKENS = ["<blank>", "|", "a", "b", "c"]


def test_greedy_collapses_repeats_drops_blanks_and_splits_on_the_boundary() -> None:
    decoder = GreedyCtcDecoder(BOUNDARY_TOKENS, 0, "boundary_token")
    path = ["|", "a", "a", "<blank>", "a", "b", "|", "|", "c", "c", "<blank>", "|", "<blank>"]
    probs = [0.9, 0.5, 0.7, 0.9, 0.9, 0.6, 0.9, 0.9, 0.8, 0.8, 0.9, 0.9, 0.9]
    words = decoder.decode(posteriors(BOUNDARY_TOKENS, path, probs))
    assert [(w.word, w.start_frame, w.end_frame) for w in words] == [("aab", 1, 6), ("c", 8, 10)]
    assert words[0].confidence == pytest.approx(np.mean([0.5, 0.7, 0.9, 0.9, 0.6]), abs=1e-5)
    assert words[1].confidence == pytest.approx(0.8, abs=1e-5)
    assert decoder.greedy_phonemes(posteriors(BOUNDARY_TOKENS, path)) == ["a", "a", "b", "c"]


def test_greedy_starts_a_word_at_each_sentencepiece_prefix() -> None:
    tokens = ["<blank>", "▁he", "llo", "▁wor", "ld", "▁", "s"]
    decoder = GreedyCtcDecoder(tokens, 0, "sentencepiece")
    path = ["llo", "<blank>", "▁he", "llo", "llo", "<blank>", "▁wor", "ld", "<blank>", "▁", "s", "s"]
    words = decoder.decode(posteriors(tokens, path))
    assert [(w.word, w.start_frame, w.end_frame) for w in words] == [
        ("llo", 0, 1),
        ("hello", 2, 5),
        ("world", 6, 8),
        ("s", 9, 12),
    ]


def test_greedy_uses_the_stated_blank_and_gives_nothing_for_silence() -> None:
    tokens = ["a", "b", "|", "<pad>"]
    decoder = GreedyCtcDecoder(tokens, 3, "boundary_token")
    assert [w.word for w in decoder.decode(posteriors(tokens, ["a", "<pad>", "a", "|", "b"]))] == ["aa", "b"]
    assert decoder.decode(posteriors(tokens, ["<pad>", "|", "<pad>", "|"])) == []
    assert decoder.decode(torch.zeros(0, len(tokens))) == []


class _FixedAcoustics:
    """An acoustic backend returning canned log-probabilities, to test the recognizer's timing alone."""

    device = torch.device("cpu")

    def __init__(self, lp: torch.Tensor) -> None:
        self.lp = lp

    def log_probs(self, windows: Any, tier: str) -> list[torch.Tensor]:
        return [self.lp for _ in windows]

    def tiers_available(self) -> tuple[str, ...]:
        return ("full",)

    def prepare_tier(self, tier: str) -> None:
        pass


def test_word_times_follow_the_stated_frame_timing() -> None:
    lp = posteriors(BOUNDARY_TOKENS, ["<blank>", "a", "a", "b", "|", "<blank>", "c", "<blank>"])
    decoder = GreedyCtcDecoder(BOUNDARY_TOKENS, 0, "boundary_token")
    timing = FrameTiming(frame_s=0.02, start_offset_s=0.01, end_offset_s=0.03)
    rec = Recognizer(_FixedAcoustics(lp), BOUNDARY_TOKENS, decoder, torch.device("cpu"), {}, timing)
    (result,) = rec.transcribe([np.zeros(3200, np.float32)], beam=1)
    assert [(w.word, w.start_s, w.end_s) for w in result.words] == [("ab", 0.03, 0.11), ("c", 0.13, 0.17)]
    assert result.text == "ab c"
    (first, _) = decoder.decode(lp)
    assert (first.word, first.start_frame, first.end_frame) == ("ab", 1, 4)
    assert first.confidence == pytest.approx(0.9, abs=1e-5)


# --- the spec's one-line errors ------------------------------------------------------------------


def _broken(tiny: Path, tmp_path: Path, change: Callable[[Path, dict], None]) -> Path:
    """A copy of an exported tiny model with ``change(folder, spec)`` applied to its files."""
    folder = tmp_path / "broken"
    shutil.copytree(tiny.parent, folder)
    spec = json.loads((folder / "model.json").read_text())
    change(folder, spec)
    if (folder / "model.json").exists():
        (folder / "model.json").write_text(json.dumps(spec))
    return folder / "model.onnx"


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _append_token(folder: Path, spec: dict) -> None:
    with (folder / "tokens.txt").open("a") as f:
        f.write("z\n")


CASES: dict[str, tuple[str, Callable[[Path, dict], None], str]] = {
    "missing model": ("waveform", lambda f, s: (f / "model.onnx").unlink(), "ONNX model not found"),
    "missing spec": ("waveform", lambda f, s: (f / "model.json").unlink(), "feature spec not found"),
    "missing tokens": ("waveform", lambda f, s: (f / "tokens.txt").unlink(), "tokens file not found"),
    "token count": ("waveform", _append_token, "the model outputs 22 tokens per frame, the tokens file has 23"),
    "unknown input kind": ("waveform", lambda f, s: s.update(input="mfcc"), "input: Input should be 'waveform'"),
    "wrong input kind": (
        "waveform",
        lambda f, s: s.update(input="fbank", fbank={"n_mels": 80, "frame_length_ms": 25, "frame_shift_ms": 10}),
        "input fbank needs float32 of rank 3",
    ),
    "fbank without parameters": ("waveform", lambda f, s: s.update(input="fbank"), "fbank parameters are required"),
    "dither": ("fbank", lambda f, s: s["fbank"].update(dither=0.1), "dither must be 0"),
    "wrong mel count": ("fbank", lambda f, s: s["fbank"].update(n_mels=40, mean=None, std=None), "24 mel bands"),
    "no lengths": ("fbank", lambda f, s: s.pop("subsampling_factor"), "must state subsampling_factor"),
    "unknown field": ("waveform", lambda f, s: s.update(frame_rate=50), "frame_rate: Extra inputs"),
    "boundary token": ("waveform", lambda f, s: s.update(boundary_token="#"), "no word-boundary token '#'"),
    "blank index": ("waveform", lambda f, s: s.update(blank_index=40), "blank_index 40 but only 22 tokens"),
    "lexicon": ("waveform", lambda f, s: s.update(words="lexicon"), "token set does not match"),
    "not onnx": ("waveform", lambda f, s: _write(f / "model.onnx", b"not a graph"), "not a loadable ONNX"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_spec_problems_are_one_line_errors(case: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    kind, change, message = CASES[case]
    model = _broken(tiny_models[kind], tmp_path, change)
    with pytest.raises(CheckpointError) as info:
        load_recognizer("onnx", model, device="cpu")
    assert message in str(info.value) and "\n" not in str(info.value)
