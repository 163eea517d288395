"""Latency of Recognizer.transcribe on the worker's shapes: 1.28 s windows, batch 8 and 1, per beam."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np
import torch

from workers.asr.recognizer import Recognizer
from workers.asr.tiers import TIER_FULL

WINDOW = 20480  # 1.28 s at 16 kHz


def windows_from(sources: list[np.ndarray], count: int, seed: int = 0, length: int = WINDOW) -> list[np.ndarray]:
    """Crops of ``length`` samples (1.28 s by default) of real speech, silence-padded if a source is shorter."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        src = sources[k % len(sources)]
        if len(src) <= length:
            out.append(np.pad(src, (0, length - len(src))).astype(np.float32))
        else:
            s = int(rng.integers(0, len(src) - length))
            out.append(src[s : s + length].astype(np.float32))
    return out


def _time(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        out.append(1000 * (time.perf_counter() - t0))
    return out


def bench(rec: Recognizer, sources: list[np.ndarray], runs: int = 50, warmup: int = 10, tier: str = TIER_FULL) -> dict:
    """Median/p95 ms per transcribe call; batch 8 at each beam, batch 1 at beam 4, model-only too."""
    rec.prepare_tier(tier)
    win8 = windows_from(sources, 8)
    result: dict[str, float | int | str] = {
        "device": str(rec.device),
        "threads": torch.get_num_threads(),
        "window_s": WINDOW / 16000,
        "runs": runs,
        "tier": tier,
    }
    for beam in (4, 2, 1):
        ts = _time(functools.partial(rec.transcribe, win8, beam, tier), runs, warmup)
        result[f"batch8_beam{beam}_ms_p50"] = round(float(np.median(ts)), 2)
        result[f"batch8_beam{beam}_ms_p95"] = round(float(np.percentile(ts, 95)), 2)
    result["batch8_ms_p50"] = result["batch8_beam4_ms_p50"]
    result["batch8_ms_p95"] = result["batch8_beam4_ms_p95"]
    ts = _time(lambda: rec.transcribe(win8[:1], 4, tier), runs, warmup)
    result["batch1_ms_p50"] = round(float(np.median(ts)), 2)
    result["batch1_ms_p95"] = round(float(np.percentile(ts, 95)), 2)
    ts = _time(lambda: rec.log_probs(win8, tier), runs, warmup)
    result["batch8_model_ms_p50"] = round(float(np.median(ts)), 2)
    return result
