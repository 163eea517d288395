"""The ARPA language model built from the domain's sentences."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from workers.asr.lab.lm import estimate, interpolate, write_arpa


def _read_arpa(path: Path) -> dict[int, dict[tuple[str, ...], tuple[float, float]]]:
    grams: dict[int, dict[tuple[str, ...], tuple[float, float]]] = defaultdict(dict)
    order = 0
    for line in path.read_text().splitlines():
        if line.endswith("-grams:"):
            order = int(line[1])
        elif order and line.strip() and not line.startswith("\\"):
            parts = line.split("\t")
            bow = float(parts[2]) if len(parts) > 2 else 0.0
            grams[order][tuple(parts[1].split())] = (float(parts[0]), bow)
    return grams


def test_arpa_distributions_sum_to_one(tmp_path: Path) -> None:
    sentences = ["i want a coffee", "i want a tea", "i want two coffee", "a tea please", "i want a tea"]
    write_arpa(estimate(sentences, ["i", "want", "a", "coffee", "tea", "two", "please", "extra"]), tmp_path / "lm.arpa")
    g = _read_arpa(tmp_path / "lm.arpa")
    words = [w for (w,) in g[1] if w != "<s>"]

    def prob(hist: tuple[str, ...], w: str) -> float:
        if (*hist, w) in g[len(hist) + 1]:
            return 10 ** g[len(hist) + 1][(*hist, w)][0]
        bow = 10 ** g[len(hist)][hist][1] if hist in g[len(hist)] else 1.0
        return bow * prob(hist[1:], w)

    for hist in [(), ("i",), ("<s>",), ("want", "a"), ("i", "want"), ("coffee",)]:
        assert math.isclose(sum(prob(hist, w) for w in words), 1.0, rel_tol=1e-3), hist


def _distribution_sums(path: Path, histories: list[tuple[str, ...]]) -> list[float]:
    g = _read_arpa(path)
    words = [w for (w,) in g[1] if w != "<s>"]

    def prob(hist: tuple[str, ...], w: str) -> float:
        if (*hist, w) in g[len(hist) + 1]:
            return 10 ** g[len(hist) + 1][(*hist, w)][0]
        bow = 10 ** g[len(hist)][hist][1] if hist in g[len(hist)] else 1.0
        return bow * prob(hist[1:], w)

    return [sum(prob(h, w) for w in words) for h in histories]


def test_interpolated_model_is_normalised_and_between_its_parts(tmp_path: Path) -> None:
    vocab = ["i", "want", "a", "coffee", "tea", "two", "please", "the", "dog", "runs", "fast", "cat"]
    domain = estimate(["i want a coffee", "i want a tea", "i want two coffee", "a tea please"] * 2, vocab)
    general = estimate(["the dog runs fast", "the cat runs", "a dog runs", "i want the cat"] * 2, vocab)
    mixed = interpolate(domain, general, 0.5)
    write_arpa(mixed, tmp_path / "mixed.arpa")
    for total in _distribution_sums(tmp_path / "mixed.arpa", [(), ("i",), ("the",), ("i", "want"), ("dog", "runs")]):
        assert math.isclose(total, 1.0, rel_tol=1e-3)
    for gram in [("want", "a"), ("dog", "runs"), ("the", "cat")]:
        low, high = sorted([domain.prob(gram), general.prob(gram)])
        assert low <= mixed.prob(gram) <= high
    assert mixed.prob(("dog", "runs")) > domain.prob(("dog", "runs")) * 10


def test_unigram_prior_ranks_unseen_words_by_frequency() -> None:
    model = estimate(
        ["i want a coffee"],
        ["i", "want", "a", "coffee", "money", "zeppelin"],
        unigram_prior={"money": 1e-4, "zeppelin": 1e-7},
    )
    assert model.prob(("money",)) > 100 * model.prob(("zeppelin",))
    uniform = estimate(["i want a coffee"], ["i", "want", "a", "coffee", "money", "zeppelin"])
    assert math.isclose(uniform.prob(("money",)), uniform.prob(("zeppelin",)))
