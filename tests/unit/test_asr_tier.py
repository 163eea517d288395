"""The recognizer's int8 tier and the start-up measurement of what each degradation knob saves."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.plugins.asr import Samples
from workers.asr import TIERS, KnobCosts, Recognizer, measure_knob_costs
from workers.asr.bench import bench, windows_from
from workers.asr.knob_costs import KNOB_BEAM2, KNOB_GREEDY, KNOB_INT8, KNOB_WINDOW, KNOBS
from workers.asr.lab.espeak import espeak_available
from workers.asr.lab.evaluate import error_rates, evaluate
from workers.asr.model import AcousticModel, Int8Linear, ModelConfig, quantize_int8

ROOT = Path(__file__).resolve().parents[2]
# Measured: int8 and full give identical text on the 12 samples (214 words); 1% allows two words.
MAX_INT8_VS_FULL_WER = 1.0


def _spy(monkeypatch: pytest.MonkeyPatch, rec: Recognizer, method: str) -> list[str]:
    """Record the tier of every call to ``rec.<method>`` (positional third/second argument or keyword)."""
    tiers: list[str] = []
    real: Callable[..., Any] = getattr(rec, method)
    position = 2 if method == "transcribe" else 1

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tiers.append(kwargs.get("tier", args[position] if len(args) > position else "full"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rec, method, wrapper)
    return tiers


def test_int8_tier_transcribes_the_samples_like_the_full_model(recognizer: Recognizer, samples: Samples) -> None:
    audios = [audio for _, audio in samples]
    full = [r.text for r in recognizer.transcribe(audios, beam=4, tier="full")]
    int8 = [r.text for r in recognizer.transcribe(audios, beam=4, tier="int8")]
    wer, _ = error_rates(full, int8)
    assert wer <= MAX_INT8_VS_FULL_WER


def test_int8_is_a_separate_quantized_copy(recognizer: Recognizer, samples: Samples) -> None:
    window = [samples[0][1][:20480]]
    before = recognizer.log_probs(window, "full")[0]
    recognizer.prepare_tier("int8")
    int8 = recognizer.log_probs(window, "int8")[0]
    assert not any(isinstance(m, Int8Linear) for m in recognizer.model.modules())
    torch.testing.assert_close(recognizer.log_probs(window, "full")[0], before, atol=0, rtol=0)
    assert not torch.equal(int8, before), "the int8 tier must run a different model on the CPU"
    assert (int8.argmax(-1) == before.argmax(-1)).float().mean() > 0.95


def test_int8_window_results_do_not_depend_on_batch_mates(recognizer: Recognizer, samples: Samples) -> None:
    # Per-frame activation scales: unlike per-batch dynamic quantization, batch-mates change nothing.
    windows = windows_from([audio for _, audio in samples], 8, seed=3)
    batched = recognizer.log_probs(windows, "int8")
    for lp, w in zip(batched, windows, strict=True):
        assert torch.equal(lp, recognizer.log_probs([w], "int8")[0])
    assert recognizer.transcribe(windows[::-1], tier="int8") == recognizer.transcribe(windows, tier="int8")[::-1]


def test_int8_linear_matches_the_float_layer_closely() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    x = torch.randn(3, 5, 64)
    with torch.inference_mode():
        got, want = Int8Linear(layer)(x), layer(x)
        alone = Int8Linear(layer)(x[:1])
    assert got.shape == want.shape
    assert float((got - want).abs().max()) < 0.02 * float(want.abs().max())
    torch.testing.assert_close(alone, got[:1], atol=0, rtol=0)


def test_quantize_int8_replaces_every_linear_and_nothing_else() -> None:
    model = AcousticModel(ModelConfig(n_tokens=10, d_model=32, n_layers=1, front_channels=8)).eval()
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules())
    quantized = quantize_int8(model)
    assert sum(isinstance(m, Int8Linear) for m in quantized.modules()) == n_linear > 0
    assert not any(isinstance(m, nn.Linear) for m in quantized.modules())
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == n_linear


def test_unknown_tier_is_a_value_error(recognizer: Recognizer, samples: Samples) -> None:
    window = [samples[0][1][:20480]]
    with pytest.raises(ValueError, match=r"tier must be one of \('full', 'int8'\), got 'fp4'"):
        recognizer.transcribe(window, beam=4, tier="fp4")
    with pytest.raises(ValueError, match="tier"):
        recognizer.transcribe([], tier="fp4")
    with pytest.raises(ValueError, match="tier"):
        recognizer.prepare_tier("fp4")


def test_tiers_available_on_cpu_and_elsewhere(recognizer: Recognizer) -> None:
    assert recognizer.tiers_available() == TIERS == ("full", "int8")
    tiny = AcousticModel(ModelConfig(n_tokens=len(recognizer.tokens), d_model=32, n_layers=1, front_channels=8))
    elsewhere = Recognizer(tiny, recognizer.tokens, recognizer.decoder, torch.device("meta"), {})
    assert elsewhere.tiers_available() == ("full",)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int8_on_cuda_runs_the_full_model(samples: Samples) -> None:
    rec = Recognizer.load(device="cuda")
    window = [samples[0][1][:20480]]
    assert rec.tiers_available() == ("full",)
    assert rec.transcribe(window, tier="int8") == rec.transcribe(window, tier="full")


def test_measure_knob_costs_times_the_five_configurations(
    recognizer: Recognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[int, int, str]] = []
    real = recognizer.transcribe

    def spy(windows: list[np.ndarray], beam: int = 4, tier: str = "full") -> Any:
        calls.append((len(windows[0]), beam, tier))
        return real(windows, beam, tier)

    monkeypatch.setattr(recognizer, "transcribe", spy)
    costs = measure_knob_costs(recognizer, batch_size=4, runs=1)
    # One warm-up and one timed call per configuration: base, short window, beam 2, greedy, int8.
    assert sorted(set(calls)) == sorted(
        {(20480, 4, "full"), (15360, 4, "full"), (20480, 2, "full"), (20480, 1, "full"), (20480, 4, "int8")}
    )
    assert len(calls) == 10
    assert isinstance(costs, KnobCosts) and costs.base_ms > 0
    assert set(costs.saving) == set(KNOBS) == {KNOB_WINDOW, KNOB_BEAM2, KNOB_GREEDY, KNOB_INT8}
    assert all(0.0 <= s < 1.0 for s in costs.saving.values())
    assert json.loads(json.dumps(costs.as_dict())) == {"base_ms": costs.base_ms, "saving": dict(costs.saving)}


def test_measure_knob_costs_skips_int8_where_it_saves_nothing(
    recognizer: Recognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recognizer, "tiers_available", lambda: ("full",))
    tiers = _spy(monkeypatch, recognizer, "transcribe")
    costs = measure_knob_costs(recognizer, batch_size=2, runs=1)
    assert costs.saving[KNOB_INT8] == 0.0 and "int8" not in tiers


def test_measure_knob_costs_rejects_settings_it_cannot_measure(recognizer: Recognizer) -> None:
    with pytest.raises(ValueError, match="16000 Hz"):
        measure_knob_costs(recognizer, sample_rate=8000)
    with pytest.raises(ValueError, match="min_window_secs"):
        measure_knob_costs(recognizer, window_secs=0.96, min_window_secs=1.28)
    with pytest.raises(ValueError, match="runs"):
        measure_knob_costs(recognizer, runs=0)


def test_bench_runs_every_call_on_the_tier_asked(
    recognizer: Recognizer, samples: Samples, monkeypatch: pytest.MonkeyPatch
) -> None:
    transcribe_tiers = _spy(monkeypatch, recognizer, "transcribe")
    model_tiers = _spy(monkeypatch, recognizer, "log_probs")
    result = bench(recognizer, [audio for _, audio in samples], runs=1, warmup=0, tier="int8")
    assert result["tier"] == "int8" and result["batch8_beam4_ms_p50"] > 0
    assert transcribe_tiers and model_tiers and set(transcribe_tiers + model_tiers) == {"int8"}


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
def test_evaluate_runs_every_call_on_the_tier_asked(
    recognizer: Recognizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.asr.lab import synth

    synth.synthesize(tmp_path, "heldout", 3, seed=2, workers=1)
    transcribe_tiers = _spy(monkeypatch, recognizer, "transcribe")
    model_tiers = _spy(monkeypatch, recognizer, "log_probs")
    result = evaluate(recognizer, tmp_path, rolling_limit=1, tier="int8")
    assert result["tier"] == "int8" and result["n_heldout"] == 3 and 0 <= result["wer_beam4"] <= 100
    assert transcribe_tiers and model_tiers and set(transcribe_tiers + model_tiers) == {"int8"}


def test_eval_and_bench_commands_take_a_tier() -> None:
    from workers.asr import cli
    from workers.asr.lab import cli as lab_cli

    ap, commands, bench_commands = cli.standalone_parser("test")
    lab_cli.register(commands, bench_commands)
    assert ap.parse_args(["asr", "eval", "--tier", "int8"]).tier == "int8"
    assert ap.parse_args(["bench", "asr"]).tier == "full"
    with pytest.raises(SystemExit):
        ap.parse_args(["bench", "asr", "--tier", "fp4"])


def test_knob_names_load_without_torch() -> None:
    code = "import sys, workers.asr.knob_costs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
