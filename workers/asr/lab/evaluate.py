"""WER/CER of a recognizer on synthesized held-out speech, per beam width and condition.

Conditions: clean 16 kHz full utterances; the same audio through an 8 kHz G.711 mu-law round trip;
1.28 s rolling windows (hop 0.64 s) stitched by word midpoints, as a streaming worker sees the
audio; out-of-domain sentences the generator never produces; and the hand-written general-English
held-out set (`general_heldout.txt`), with each set's OOV rate against the lexicon.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch

from pipeline.observe.wer import edit_distance
from workers.asr import TIER_FULL
from workers.asr.audio import SAMPLE_RATE, resample, telephone
from workers.asr.lab.synth import load_split
from workers.asr.recognizer import Recognizer

WINDOW_S = 1.28
HOP_S = 0.64


def error_rates(refs: list[str], hyps: list[str]) -> tuple[float, float]:
    """Corpus-level WER and CER (characters including spaces), in percent."""
    words = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True))
    chars = sum(edit_distance(r, h) for r, h in zip(refs, hyps, strict=True))
    n_words = max(1, sum(len(r.split()) for r in refs))
    n_chars = max(1, sum(len(r) for r in refs))
    return round(100 * words / n_words, 2), round(100 * chars / n_chars, 2)


def load_eval_audio(root: Path, split: str, limit: int | None = None) -> tuple[list[np.ndarray], list[dict]]:
    """Clips of a synthesized split, resampled to 16 kHz float32."""
    audios, metas = load_split(root, split)
    if limit:
        audios, metas = audios[:limit], metas[:limit]
    out = []
    for a, m in zip(audios, metas, strict=True):
        x = torch.from_numpy(a.astype(np.float32) / 32768)
        out.append(resample(x, int(m["rate_hz"]), SAMPLE_RATE).numpy())
    return out, metas


def _batched_log_probs(
    rec: Recognizer, audios: list[np.ndarray], tier: str = TIER_FULL, batch: int = 16
) -> list[torch.Tensor]:
    order = np.argsort([len(a) for a in audios])
    lps: list[torch.Tensor | None] = [None] * len(audios)
    for s in range(0, len(order), batch):
        idx = order[s : s + batch]
        for i, lp in zip(idx, rec.log_probs([audios[i] for i in idx], tier), strict=True):
            lps[i] = lp
    return [lp for lp in lps if lp is not None]


def rolling_transcript(rec: Recognizer, audio: np.ndarray, beam: int, tier: str = TIER_FULL) -> str:
    """Transcribe 1.28 s windows every 0.64 s; keep each word in the window where its midpoint is central."""
    win, hop = int(WINDOW_S * SAMPLE_RATE), int(HOP_S * SAMPLE_RATE)
    starts = list(range(0, max(1, len(audio) - win + hop), hop))
    windows = [audio[s : s + win] for s in starts]
    words: list[str] = []
    for k, (s, r) in enumerate(zip(starts, rec.transcribe(windows, beam, tier), strict=True)):
        lo = 0.0 if k == 0 else (s + (win - hop) / 2) / SAMPLE_RATE
        hi = np.inf if k == len(starts) - 1 else (s + (win + hop) / 2) / SAMPLE_RATE
        words += [w.word for w in r.words if lo <= s / SAMPLE_RATE + (w.start_s + w.end_s) / 2 < hi]
    return " ".join(words)


def evaluate(
    rec: Recognizer, root: Path, limit: int | None = None, rolling_limit: int = 100, tier: str = TIER_FULL
) -> dict:
    """The model card's table as one flat dict (percentages), with the acoustic model of ``tier``."""
    audios, metas = load_eval_audio(root, "heldout", limit)
    refs = [m["text"] for m in metas]
    result: dict[str, float | int | str] = {"n_heldout": len(refs), "device": str(rec.device), "tier": tier}
    lps = _batched_log_probs(rec, audios, tier)
    durations = [len(a) / SAMPLE_RATE for a in audios]
    ref_phones = [[p for p, _, _ in m["phones"]] for m in metas]
    errors = sum(edit_distance(r, rec.decoder.greedy_phonemes(lp)) for r, lp in zip(ref_phones, lps, strict=True))
    result["per_greedy"] = round(100 * errors / max(1, sum(len(r) for r in ref_phones)), 2)
    for beam in (1, 2, 4):
        t0 = time.perf_counter()
        hyps = [rec.decode(lp, beam, d).text for lp, d in zip(lps, durations, strict=True)]
        result[f"decode_ms_per_s_beam{beam}"] = round(1000 * (time.perf_counter() - t0) / sum(durations), 3)
        result[f"wer_beam{beam}"], result[f"cer_beam{beam}"] = error_rates(refs, hyps)
    phone = [telephone(torch.from_numpy(a)).numpy() for a in audios]
    hyps = [rec.decode(lp, 4, d).text for lp, d in zip(_batched_log_probs(rec, phone, tier), durations, strict=True)]
    result["wer_mulaw8k"], result["cer_mulaw8k"] = error_rates(refs, hyps)
    n_roll = min(rolling_limit, len(audios))
    for beam in (1, 4):
        hyps = [rolling_transcript(rec, a, beam, tier) for a in audios[:n_roll]]
        result[f"wer_rolling_beam{beam}"], result[f"cer_rolling_beam{beam}"] = error_rates(refs[:n_roll], hyps)
    result["n_rolling"] = n_roll
    if rec.decoder.words:  # an open-vocabulary (greedy) decoder has no lexicon to be out of
        result["oov_heldout"] = oov_rate(refs, rec.decoder.words)
    for split, name, beams in (("ood", "ood", (4,)), ("general", "general", (1, 4))):
        result.update(_score_split(rec, root, split, name, beams, tier))
    return result


def oov_rate(refs: list[str], lexicon: Collection[str]) -> float:
    """Share of reference words the lexicon lacks, in percent (each one is an error the decoder can't avoid)."""
    known = set(lexicon)
    words = [w for r in refs for w in r.split()]
    return round(100 * sum(w not in known for w in words) / max(1, len(words)), 2)


def _score_split(
    rec: Recognizer, root: Path, split: str, name: str, beams: tuple[int, ...], tier: str
) -> dict[str, float | int]:
    """WER/CER per beam and the OOV rate of an extra held-out split; nothing when it was not synthesized."""
    audio, metas = load_eval_audio(root, split)
    if not audio:
        return {}
    refs = [m["text"] for m in metas]
    lps = _batched_log_probs(rec, audio, tier)
    out: dict[str, float | int] = {f"n_{name}": len(audio)}
    if rec.decoder.words:
        out[f"oov_{name}"] = oov_rate(refs, rec.decoder.words)
    for beam in beams:
        hyps = [rec.decode(lp, beam, len(a) / SAMPLE_RATE).text for lp, a in zip(lps, audio, strict=True)]
        suffix = "" if beams == (4,) else f"_beam{beam}"
        out[f"wer_{name}{suffix}"], out[f"cer_{name}{suffix}"] = error_rates(refs, hyps)
    return out
