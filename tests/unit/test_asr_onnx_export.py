"""``hopline asr export-onnx``: the project's checkpoint through the onnx backend gives the torch backend's
transcripts, word times and log-probabilities on the shipped samples."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from pipeline.cli import main
from tests.plugins.asr import Samples
from workers.asr import Recognizer
from workers.asr.backends import load_recognizer
from workers.asr.onnx_spec import read_spec

SAMPLES_COMPARED = 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert main(["asr", "export-onnx", "--out", str(out)]) == 0
    return out / "model.onnx"


def test_export_writes_the_model_its_spec_and_tokens(exported: Path, recognizer: Recognizer) -> None:
    spec = read_spec(exported.with_suffix(".json"))
    assert (spec.input, spec.output, spec.words, spec.seconds_per_frame) == ("fbank", "log_probs", "lexicon", 0.04)
    assert (exported.parent / "tokens.txt").read_text().splitlines() == recognizer.tokens


def test_the_export_runs_each_depthwise_convolution_as_one_conv_op(exported: Path, recognizer: Recognizer) -> None:
    """The CPU fast path (shifted multiply-adds) stays out of the graph: one grouped Conv per block."""
    graph = onnx.load(str(exported)).graph
    grouped = [n for n in graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(grouped) == recognizer.model.config.n_layers


def test_exported_model_transcribes_the_samples_like_the_torch_backend(
    exported: Path, recognizer: Recognizer, samples: Samples
) -> None:
    onnx = load_recognizer("onnx", exported, device="cpu", threads=2)
    audios = [audio for _, audio in samples[:SAMPLES_COMPARED]]
    expected = recognizer.transcribe(audios, beam=4)
    got = onnx.transcribe(audios, beam=4)
    assert [r.text for r in got] == [r.text for r in expected]
    for ours, theirs in zip(got, expected, strict=True):
        ours_times = [t for w in ours.words for t in (w.start_s, w.end_s)]
        assert ours_times == pytest.approx([t for w in theirs.words for t in (w.start_s, w.end_s)], abs=1e-3)
    windows = [audios[0][:20480], audios[1][:15360], audios[2][:4000]]
    for ours_lp, theirs_lp in zip(onnx.log_probs(windows), recognizer.log_probs(windows), strict=True):
        torch.testing.assert_close(ours_lp, theirs_lp, atol=2e-3, rtol=1e-3)


def test_export_of_a_missing_checkpoint_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["asr", "export-onnx", "--out", str(tmp_path), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.pt: checkpoint not found" in err
    assert json.dumps(sorted(p.name for p in tmp_path.iterdir())) == "[]"
