"""The Recognizer contract the workers code against, on the shipped checkpoint and samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import CliError
from tests.plugins.asr import Samples
from workers.asr import DEFAULT_CHECKPOINT, CheckpointError, Recognition, Recognizer, WordTiming
from workers.asr import checkpoint as ckpt
from workers.asr.lab.evaluate import error_rates
from workers.asr.model import AcousticModel, ModelConfig

# The model card documents 1.4% WER on these (3 errors in 214 words); the margin covers CPU differences.
SAMPLES_MAX_WER = 5.0


def test_shipped_checkpoint_transcribes_the_shipped_samples(recognizer: Recognizer, samples: Samples) -> None:
    refs = [entry["text"] for entry, _ in samples]
    results = recognizer.transcribe([audio for _, audio in samples], beam=4)
    wer, _ = error_rates(refs, [r.text for r in results])
    assert wer <= SAMPLES_MAX_WER


def test_word_times_agree_with_the_synthesis(recognizer: Recognizer, samples: Samples) -> None:
    errors = []
    for entry, audio in samples:
        result = recognizer.transcribe([audio])[0]
        if [w.word for w in result.words] != entry["text"].split():
            continue  # timing is compared on exactly recognized samples only
        for got, ref in zip(result.words, entry["words"], strict=True):
            errors += [got.start_s - ref["start_s"], got.end_s - ref["end_s"]]
            assert 0.0 <= got.confidence <= 1.0
    assert len(errors) > 100
    assert float(np.mean(np.abs(errors))) < 0.05 and float(np.max(np.abs(errors))) < 0.3


def test_batched_and_single_windows_give_the_same_result(recognizer: Recognizer, samples: Samples) -> None:
    audio = samples[1][1]
    windows = [audio[:1600], audio[3000 : 3000 + 15360], audio[:20480], audio[8000 : 8000 + 40000]]
    batched = recognizer.transcribe(windows, beam=4)
    single = [recognizer.transcribe([w], beam=4)[0] for w in windows]
    assert batched == single
    for lp_b, w in zip(recognizer.log_probs(windows), windows, strict=True):
        torch.testing.assert_close(lp_b, recognizer.log_probs([w])[0], atol=2e-4, rtol=1e-4)


def test_contract_types_and_beams(recognizer: Recognizer, samples: Samples) -> None:
    window = samples[2][1][:20480]
    for beam in (1, 2, 4):
        (result,) = recognizer.transcribe([window], beam=beam)
        assert isinstance(result, Recognition) and all(isinstance(w, WordTiming) for w in result.words)
        assert result.text == " ".join(w.word for w in result.words)
        assert all(0.0 <= w.start_s <= w.end_s <= 1.28 for w in result.words)
    with pytest.raises(ValueError, match="beam"):
        recognizer.transcribe([window], beam=3)
    assert recognizer.transcribe([]) == []
    assert recognizer.sample_rate == 16000 and recognizer.device.type == "cpu"


def test_silence_gives_no_words(recognizer: Recognizer) -> None:
    (result,) = recognizer.transcribe([np.zeros(16000, dtype=np.float32)])
    assert result.text == "" and result.words == ()


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    tokens = (ckpt.ASSETS / "tokens.txt").read_text().split()
    model = AcousticModel(ModelConfig(n_tokens=len(tokens), d_model=32, n_layers=1, front_channels=8)).eval()
    path = tmp_path / "tiny.pt"
    ckpt.save(path, model, tokens, {"note": "test"})
    loaded, loaded_tokens, info = ckpt.load(path)
    assert loaded_tokens == tokens and info == {"note": "test"} and loaded.config == model.config
    audio, n = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 5000])
    # Weights are stored as fp16: the loaded model equals the original with its weights rounded to fp16.
    model.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    with torch.inference_mode():
        torch.testing.assert_close(loaded(audio, n)[0], model(audio, n)[0])
    rec = Recognizer.load(path, device="cpu")
    assert len(rec.transcribe([np.zeros(4000, np.float32)])) == 1


def test_checkpoint_problems_are_one_line_errors(tmp_path: Path) -> None:
    assert issubclass(CheckpointError, CliError)
    missing = tmp_path / "absent.pt"
    with pytest.raises(CheckpointError, match=r"absent\.pt: checkpoint not found"):
        Recognizer.load(missing)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"garbage\.pt: not a readable checkpoint"):
        Recognizer.load(garbage)
    blob = torch.load(DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)
    blob["tokens"] = blob["tokens"][:-3]
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match=r"mismatch\.pt: checkpoint does not match") as info:
        Recognizer.load(tmp_path / "mismatch.pt")
    assert "\n" not in str(info.value)


def test_missing_or_damaged_assets_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import workers.asr.recognizer as recognizer_module

    monkeypatch.setattr(recognizer_module, "ASSETS", tmp_path)
    with pytest.raises(CheckpointError, match=r"lexicon\.txt: missing"):
        Recognizer.load()
    (tmp_path / "lexicon.txt").write_text((ckpt.ASSETS / "lexicon.txt").read_text())
    (tmp_path / "lm.arpa").write_text("\\data\\\nngram 1=oops\n")
    with pytest.raises(CheckpointError, match=r"lm\.arpa: not a usable ARPA"):
        Recognizer.load()
