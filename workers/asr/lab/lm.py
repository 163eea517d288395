"""Word trigram LMs written as ARPA for KenLM: estimated from text, and mixed.

Estimation: interpolated absolute discounting; the highest order keeps n-grams seen at least
`min_count` times (the rest of their mass goes to the back-off), which keeps the shipped file small.
The unigram floor spreads the discounted mass uniformly over the vocabulary, or by a prior (word
frequencies) when one is given, so a word the text never shows still gets a sensible probability.

Mixing: a static linear interpolation of two models, P = w * P_a + (1 - w) * P_b, on the union of
their listed n-grams, with back-off weights recomputed so every history's distribution sums to one
(SRILM's `-mix-lm` does the same).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
Gram = tuple[str, ...]


@dataclass(frozen=True)
class NgramModel:
    """Listed probabilities per order (index 0: unigrams, always complete) and back-off weights."""

    probs: tuple[dict[Gram, float], dict[Gram, float], dict[Gram, float]]
    backoffs: tuple[dict[Gram, float], dict[Gram, float]]

    def prob(self, gram: Gram) -> float:
        """p(last word | the words before it), backing off through unlisted histories."""
        listed = self.probs[len(gram) - 1]
        if gram in listed:
            return listed[gram]
        if len(gram) == 1:
            return self.probs[0][(UNK,)]
        return self.backoffs[len(gram) - 2].get(gram[:-1], 1.0) * self.prob(gram[1:])


def estimate(
    sentences: Iterable[str],
    vocabulary: Iterable[str],
    discount: float = 0.7,
    min_count: int = 2,
    unigram_prior: Mapping[str, float] | None = None,
) -> NgramModel:
    """Count 1-3-grams over `sentences` and discount them (see the module docstring)."""
    counts: list[Counter[Gram]] = [Counter(), Counter(), Counter()]
    for s in sentences:
        words = [BOS, *s.split(), EOS]
        for n in range(3):
            for i in range(len(words) - n):
                counts[n][tuple(words[i : i + n + 1])] += 1
    vocab = sorted(set(vocabulary) | {w for (w,) in counts[0]} - {BOS})
    floor = _floor(vocab, unigram_prior)

    total = sum(c for (w,), c in counts[0].items() if w != BOS)
    seen = sum(1 for (w,) in counts[0] if w != BOS)
    p1: dict[Gram, float] = {}
    for w in [*vocab, UNK]:
        c = counts[0].get((w,), 0)
        p1[(w,)] = max(c - discount, 0) / total + discount * seen / total * floor[w]

    def higher(order: int, lower: dict[Gram, float]) -> dict[Gram, float]:
        hist_total: Counter[Gram] = Counter()
        hist_types: Counter[Gram] = Counter()
        for g, c in counts[order].items():
            hist_total[g[:-1]] += c
            hist_types[g[:-1]] += 1
        probs: dict[Gram, float] = {}
        keep_min = min_count if order == 2 else 1
        for g, c in counts[order].items():
            if c < keep_min:
                continue
            h = g[:-1]
            lam = discount * hist_types[h] / hist_total[h]
            probs[g] = (c - discount) / hist_total[h] + lam * _lookup(lower, g[1:])
        return probs

    p2 = higher(1, p1)
    p3 = higher(2, p2)
    return _with_backoffs(p1, p2, p3)


def interpolate(a: NgramModel, b: NgramModel, weight_a: float) -> NgramModel:
    """w * a + (1 - w) * b over the union of both models' n-grams (unigrams: the union of vocabularies)."""
    if not 0.0 <= weight_a <= 1.0:
        raise ValueError(f"weight_a must be in [0, 1], got {weight_a}")
    mixed = []
    for order in range(3):
        grams = set(a.probs[order]) | set(b.probs[order])
        mixed.append({g: weight_a * a.prob(g) + (1 - weight_a) * b.prob(g) for g in grams})
    return _with_backoffs(mixed[0], mixed[1], mixed[2])


def write_arpa(model: NgramModel, path: Path) -> dict[str, int]:
    """Write the model as ARPA; returns the n-gram counts per order."""
    p1, p2, p3 = model.probs
    bow1, bow2 = model.backoffs
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


def _floor(vocab: list[str], prior: Mapping[str, float] | None) -> dict[str, float]:
    """Where the unigram's discounted mass goes: uniform, or by the prior with a uniform share for <unk>."""
    uniform = 1.0 / (len(vocab) + 1)
    if prior is None:
        return dict.fromkeys([*vocab, UNK], uniform)
    smallest = min((p for p in prior.values() if p > 0), default=uniform)
    weights = {w: max(prior.get(w, 0.0), smallest) for w in vocab}
    weights[UNK] = smallest
    total = sum(weights.values())
    return {w: p / total for w, p in weights.items()}


def _with_backoffs(p1: dict[Gram, float], p2: dict[Gram, float], p3: dict[Gram, float]) -> NgramModel:
    return NgramModel((p1, p2, p3), (_backoffs(p2, p1), _backoffs(p3, p2)))


def _lookup(probs: dict[Gram, float], g: Gram) -> float:
    """Probability of n-gram g under a model given by its listed n-grams (lower orders are always full)."""
    return probs.get(g, probs.get((UNK,), 1e-9)) if len(g) == 1 else probs.get(g, 0.0)


def _backoffs(upper: dict[Gram, float], lower: dict[Gram, float]) -> dict[Gram, float]:
    """bow(h) so that each history's distribution sums to one: (1 - listed) / (1 - listed under the lower)."""
    listed: defaultdict[Gram, float] = defaultdict(float)
    listed_lower: defaultdict[Gram, float] = defaultdict(float)
    for g, p in upper.items():
        listed[g[:-1]] += p
        listed_lower[g[:-1]] += _backoff_prob(lower, g[1:])
    return {h: max(1.0 - listed[h], 1e-9) / max(1.0 - listed_lower[h], 1e-9) for h in listed}


def _backoff_prob(probs: dict[Gram, float], g: Gram) -> float:
    """p(w | h) under a back-off model whose listed probabilities are `probs` (orders 1-2 here)."""
    if g in probs:
        return probs[g]
    return probs.get(g[-1:], probs[(UNK,)])
