"""The acoustic model's CPU fast paths compute exactly the convolutions its modules hold."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

from workers.asr.allocator import retain_freed_memory
from workers.asr.model import AcousticModel, ModelConfig, _depthwise_over_time


def _tiny_model() -> AcousticModel:
    torch.manual_seed(0)
    return AcousticModel(ModelConfig(n_tokens=12, d_model=32, n_layers=2, front_channels=8, kernel=7)).eval()


def test_the_patch_front_end_equals_the_two_stride_two_convolutions() -> None:
    model = _tiny_model()
    for frames in (7, 8, 64, 131):
        feats = torch.randn(3, frames, 80)
        with torch.inference_mode():
            torch.testing.assert_close(model._front_end(feats), model.front(feats[:, None]), atol=1e-5, rtol=1e-5)


def test_the_shifted_depthwise_equals_the_conv_and_trains_the_same() -> None:
    conv = _tiny_model().blocks[0].conv.dw
    frames = torch.randn(2, 19, conv.in_channels, requires_grad=True)
    reference = conv(frames.transpose(1, 2)).transpose(1, 2)
    shifted = _depthwise_over_time(frames, conv)
    torch.testing.assert_close(shifted, reference, atol=1e-6, rtol=1e-5)
    grads = torch.autograd.grad(reference.square().sum(), (frames, conv.weight, conv.bias))
    shifted_grads = torch.autograd.grad(shifted.square().sum(), (frames, conv.weight, conv.bias))
    for got, want in zip(shifted_grads, grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_loaded_recognizer_stops_page_faulting_between_batches() -> None:
    """glibc's default thresholds cost ~2,400 minor faults per batch-8 call; retained memory costs none."""
    assert retain_freed_memory()
    script = textwrap.dedent(
        """
        import resource, sys
        import numpy as np
        from workers.asr.backends import load_recognizer
        from workers.asr.recognizer import Recognizer

        tuned = sys.argv[1] == "tuned"
        rec = load_recognizer("torch", device="cpu", threads=1) if tuned else Recognizer.load(device="cpu", threads=1)
        windows = [np.random.default_rng(k).standard_normal(20480).astype(np.float32) * 0.1 for k in range(8)]
        for _ in range(10):
            rec.transcribe(windows)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(10):
            rec.transcribe(windows)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
        """
    )

    def faults_per_batch(mode: str) -> float:
        run = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
        return float(run.stdout.split()[-1])

    default = faults_per_batch("default")
    assert default > 500
    # Not zero: the host's memory reclaim (DAMON here) takes back idle pages now and then (0-84 seen).
    assert faults_per_batch("tuned") < default / 10
