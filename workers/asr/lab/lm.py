"""A word trigram LM estimated from the domain generator's text, written as ARPA for KenLM.

Interpolated absolute discounting; the highest order keeps n-grams seen at least `min_count` times
(the rest of their mass goes to the back-off), which keeps the shipped ARPA file small.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def build_arpa(
    sentences: Iterable[str], vocabulary: Iterable[str], path: Path, discount: float = 0.7, min_count: int = 2
) -> dict[str, int]:
    """Count 1-3-grams over `sentences` and write the ARPA file; returns the n-gram counts per order."""
    counts: list[Counter[tuple[str, ...]]] = [Counter(), Counter(), Counter()]
    for s in sentences:
        words = [BOS, *s.split(), EOS]
        for n in range(3):
            for i in range(len(words) - n):
                counts[n][tuple(words[i : i + n + 1])] += 1
    vocab = sorted(set(vocabulary) | {w for (w,) in counts[0]} - {BOS})

    total = sum(c for (w,), c in counts[0].items() if w != BOS)
    seen = sum(1 for (w,) in counts[0] if w != BOS)
    uniform = 1.0 / (len(vocab) + 1)  # +1 for <unk>
    p1: dict[tuple[str, ...], float] = {}
    for w in [*vocab, UNK]:
        c = counts[0].get((w,), 0)
        p1[(w,)] = max(c - discount, 0) / total + discount * seen / total * uniform

    def higher(order: int, lower: dict[tuple[str, ...], float]) -> tuple[dict, dict]:
        hist_total: Counter[tuple[str, ...]] = Counter()
        hist_types: Counter[tuple[str, ...]] = Counter()
        for g, c in counts[order].items():
            hist_total[g[:-1]] += c
            hist_types[g[:-1]] += 1
        probs: dict[tuple[str, ...], float] = {}
        keep_min = min_count if order == 2 else 1
        for g, c in counts[order].items():
            if c < keep_min:
                continue
            h = g[:-1]
            lam = discount * hist_types[h] / hist_total[h]
            probs[g] = (c - discount) / hist_total[h] + lam * _lookup(lower, g[1:])
        return probs, hist_total

    p2, _ = higher(1, p1)
    p3, _ = higher(2, p2)
    bow1 = _backoffs(p2, p1)
    bow2 = _backoffs(p3, p2)

    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\\data\\\n")
        f.write(f"ngram 1={len(p1) + 1}\nngram 2={len(p2)}\nngram 3={len(p3)}\n\n\\1-grams:\n")
        f.write(f"-99\t{BOS}\t{math.log10(bow1.get((BOS,), 1.0)):.5f}\n")
        for g, p in sorted(p1.items()):
            f.write(f"{math.log10(p):.5f}\t{g[0]}\t{math.log10(bow1.get(g, 1.0)):.5f}\n")
        f.write("\n\\2-grams:\n")
        for g, p in sorted(p2.items()):
            f.write(f"{math.log10(p):.5f}\t{' '.join(g)}\t{math.log10(bow2.get(g, 1.0)):.5f}\n")
        f.write("\n\\3-grams:\n")
        for g, p in sorted(p3.items()):
            f.write(f"{math.log10(p):.5f}\t{' '.join(g)}\n")
        f.write("\n\\end\\\n")
    return {"1": len(p1) + 1, "2": len(p2), "3": len(p3)}


def _lookup(probs: dict[tuple[str, ...], float], g: tuple[str, ...]) -> float:
    """Probability of n-gram g under a model given by its listed n-grams (lower orders are always full)."""
    return probs.get(g, probs.get((UNK,), 1e-9)) if len(g) == 1 else probs.get(g, 0.0)


def _backoffs(upper: dict[tuple[str, ...], float], lower: dict[tuple[str, ...], float]) -> dict:
    """bow(h) so that each history's distribution sums to one: (1 - listed) / (1 - listed under the lower)."""
    listed: defaultdict[tuple[str, ...], float] = defaultdict(float)
    listed_lower: defaultdict[tuple[str, ...], float] = defaultdict(float)
    for g, p in upper.items():
        listed[g[:-1]] += p
        listed_lower[g[:-1]] += _backoff_prob(lower, g[1:])
    return {h: max(1.0 - listed[h], 1e-9) / max(1.0 - listed_lower[h], 1e-9) for h in listed}


def _backoff_prob(probs: dict[tuple[str, ...], float], g: tuple[str, ...]) -> float:
    """p(w | h) under a back-off model whose listed probabilities are `probs` (orders 1-2 here)."""
    if g in probs:
        return probs[g]
    return probs.get(g[-1:], probs[(UNK,)])
