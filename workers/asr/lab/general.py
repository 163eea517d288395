"""General English for the recognizer: the vocabulary, the LM's general text and the held-out set.

- Vocabulary: the most frequent English words by `wordfreq` (letters and in-word apostrophes only,
  e.g. "don't", "mother's"; past the 3,000 commonest, only words WordNet knows), on top of the domain
  generator's words and the spelled letters.
- General text: WordNet 3.0's example sentences (Debian's `wordnet-base`, ~48,000 short everyday
  phrases such as "he was elected to a seat in the senate"), normalised like the domain text. It feeds
  the general part of the LM and the general part of the acoustic training text.
- Held-out: `general_heldout.txt`, sentences written by hand for the evaluation, never in the LM or
  the training text (both filter them out).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
WORDNET_HINT = "WordNet is missing: install it with `sudo apt-get install wordnet-base` (the LM's general text)"
HELDOUT_FILE = Path(__file__).with_name("general_heldout.txt")
VOCABULARY_SIZE = 20000
ALWAYS_KEPT = 3000
_INFLECTIONS = (
    ("s", ""),
    ("es", ""),
    ("ies", "y"),
    ("ed", ""),
    ("ed", "e"),
    ("ied", "y"),
    ("ing", ""),
    ("ing", "e"),
    ("er", ""),
    ("er", "e"),
    ("est", ""),
    ("ly", ""),
    ("ers", ""),
    ("ers", "e"),
    ("ings", ""),
)
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_QUOTED = re.compile(r'"([^"]+)"')


def normalize(text: str) -> str | None:
    """Lower case, hyphens and slashes as spaces, edge punctuation dropped; None if a word stays odd.

    Sentences with digits or other symbols are dropped rather than guessed at: the LM would learn a
    spoken form nobody says.
    """
    words = []
    for raw in re.sub(r"[-/]", " ", text.lower()).split():
        word = raw.strip(".,;:!?()[]'`")
        if not word:
            continue
        if not _WORD.fullmatch(word):
            return None
        words.append(word)
    return " ".join(words) or None


def top_words(n: int) -> list[str]:
    """The n most frequent English words (wordfreq's 'best' list) that a dictionary would list.

    Below the first `ALWAYS_KEPT` ranks (function words, common names, "ok") a word must be a WordNet
    lemma or a regular inflection of one, or a contraction of a kept word: web-text tokens such as
    "kanye", "hc" or "eb" otherwise take the place of words people say, and a name that sounds like
    two short words ("kanye" / "can i") steals them from the decoder.
    """
    from wordfreq import top_n_list

    lemmas = _wordnet_lemmas()
    out: list[str] = []
    kept: set[str] = set()
    for rank, word in enumerate(top_n_list("en", int(n * 1.6) + 100)):
        stem = word.split("'")[0]
        if _WORD.fullmatch(word) and (rank < ALWAYS_KEPT or _is_lemma(word, lemmas) or stem in kept):
            out.append(word)
            kept.add(word)
            if len(out) == n:
                break
    return out


def _is_lemma(word: str, lemmas: frozenset[str]) -> bool:
    """WordNet knows the word, or the word is a regular inflection of a word it knows."""
    if word in lemmas:
        return True
    return any(
        word.endswith(suffix) and word[: len(word) - len(suffix)] + base in lemmas for suffix, base in _INFLECTIONS
    )


@cache
def _wordnet_lemmas() -> frozenset[str]:
    """Every WordNet lemma and irregular form (index.* and *.exc files), multi-word lemmas excluded."""
    if not (WORDNET / "data.noun").is_file():
        raise FileNotFoundError(WORDNET_HINT)
    lemmas: set[str] = set()
    for pos in ("noun", "verb", "adj", "adv"):
        for name in (f"index.{pos}", f"{pos}.exc"):
            for line in (WORDNET / name).read_text(encoding="latin-1").splitlines():
                if line and not line.startswith(" "):
                    lemmas.add(line.split()[0])
    return frozenset(lemmas)


def vocabulary(n: int = VOCABULARY_SIZE) -> list[str]:
    """The lexicon's words: the n most frequent English words, the domain's words, the spelled letters."""
    from workers.asr.lab import domain

    return sorted(set(top_words(n)) | set(domain.vocabulary()) | set(LETTERS))


def word_frequency(word: str) -> float:
    """Relative frequency of a word in general English (0 when wordfreq does not know it)."""
    from wordfreq import word_frequency as frequency

    return float(frequency(word, "en"))


@cache
def heldout_sentences() -> tuple[str, ...]:
    lines = HELDOUT_FILE.read_text(encoding="utf-8").splitlines()
    return tuple(s for line in lines if line.strip() and not line.startswith("#") if (s := normalize(line)))


@cache
def wordnet_sentences() -> tuple[str, ...]:
    """WordNet's quoted usage examples, normalised and deduplicated, minus the held-out sentences."""
    if not (WORDNET / "data.noun").is_file():
        raise FileNotFoundError(WORDNET_HINT)
    held_out = set(heldout_sentences())
    seen: dict[str, None] = {}
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (WORDNET / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue  # the licence header
            for example in _QUOTED.findall(line.split("|", 1)[1]):
                sentence = normalize(example)
                if sentence and len(sentence.split()) >= 2 and sentence not in held_out:
                    seen[sentence] = None
    return tuple(seen)


def training_texts(seed: int, vocabulary: list[str], domain_share: float = 0.3) -> Iterator[str]:
    """Endless acoustic training text: domain sentences, WordNet examples, and strings of vocabulary words.

    The word strings (4-12 words drawn uniformly from the vocabulary) make sure every lexicon word is
    spoken during training, rare ones included; the examples give natural general phrasing.
    """
    from workers.asr.lab import domain

    rng = random.Random(f"general-{seed}")
    examples = wordnet_sentences()
    domain_text = domain.sentences(seed, held_out=False)
    held_out = set(heldout_sentences())
    while True:
        roll = rng.random()
        if roll < domain_share:
            yield next(domain_text)
        elif roll < domain_share + (1 - domain_share) / 2:
            yield rng.choice(examples)
        else:
            text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(4, 12)))
            if text not in held_out:
                yield text
