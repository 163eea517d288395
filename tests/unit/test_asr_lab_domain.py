"""The synthetic call-centre domain: numbers, the sentence generator, held-out sentences, the lexicon."""

from __future__ import annotations

import itertools

from workers.asr.checkpoint import ASSETS
from workers.asr.decoder import read_lexicon
from workers.asr.lab import domain


def test_numbers_are_spelled_as_spoken() -> None:
    assert domain.number_words(0) == "zero"
    assert domain.number_words(42) == "forty two"
    assert domain.number_words(1905) == "one thousand nine hundred five"


def test_generator_is_deterministic_and_stays_in_the_vocabulary() -> None:
    vocab = set(domain.vocabulary())
    first = list(itertools.islice(domain.sentences(3, held_out=False), 300))
    assert first == list(itertools.islice(domain.sentences(3, held_out=False), 300))
    assert {w for s in first for w in s.split()} <= vocab
    assert len(vocab) > 1000


def test_held_out_sentences_never_reach_training_or_the_lm() -> None:
    held = list(itertools.islice(domain.sentences(5, held_out=True), 50))
    train = set(itertools.islice(domain.sentences(5, held_out=False), 5000))
    assert all(domain.is_held_out(s) for s in held)
    assert not train & set(held)


def test_shipped_lexicon_covers_the_vocabulary() -> None:
    lexicon = read_lexicon(ASSETS / "lexicon.txt")
    tokens = set((ASSETS / "tokens.txt").read_text().split())
    assert set(domain.vocabulary()) <= set(lexicon)
    assert all(p in tokens for prons in lexicon.values() for pron in prons for p in pron)
