"""The general-English side of the recognizer's lab: vocabulary, text sources, held-out set, assets."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from workers.asr.lab import domain, general
from workers.asr.lab.espeak import espeak_available
from workers.asr.lab.evaluate import oov_rate
from workers.asr.lab.synth import HELDOUT_VARIANTS, TRAIN_VARIANTS, _work, complete_lexicon, load_split, plan

if TYPE_CHECKING:
    from workers.asr.recognizer import Recognizer

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
needs_wordnet = pytest.mark.skipif(not (general.WORDNET / "data.noun").is_file(), reason=general.WORDNET_HINT)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("He was elected to a seat in the Senate.", "he was elected to a seat in the senate"),
        ("a well-known self/portrait", "a well known self portrait"),
        ("'don't go,' she said", "don't go she said"),
        ("it costs $5", None),
        ("...", None),
    ],
)
def test_normalize_keeps_spoken_words_and_drops_what_it_cannot_say(raw: str, expected: str | None) -> None:
    assert general.normalize(raw) == expected


def test_vocabulary_covers_frequent_english_the_domain_and_letters() -> None:
    vocab = set(general.vocabulary(3000))
    assert {"money", "before", "waiting", "connection", "purchase", "don't"} <= vocab
    assert set(domain.vocabulary()) <= vocab
    assert set(general.LETTERS) <= vocab
    assert all(general.normalize(w) == w for w in vocab)


def test_heldout_set_is_everyday_english_that_the_full_vocabulary_nearly_covers() -> None:
    sentences = general.heldout_sentences()
    assert len(sentences) >= 100
    assert len(set(sentences)) == len(sentences)
    assert oov_rate(list(sentences), general.vocabulary()) <= 2.0
    assert oov_rate(list(sentences), domain.vocabulary()) > 10.0


@needs_wordnet
def test_no_heldout_sentence_reaches_the_lm_text_or_the_training_text() -> None:
    held_out = set(general.heldout_sentences())
    assert len(general.wordnet_sentences()) > 40000
    assert not held_out & set(general.wordnet_sentences())
    texts = list(itertools.islice(general.training_texts(3, general.vocabulary(500)), 3000))
    assert not held_out & set(texts)
    domain_text = set(itertools.islice(domain.sentences(3, held_out=False), 5000))
    domain_share = sum(t in domain_text for t in texts) / 3000
    assert 0.2 < domain_share < 0.4


@needs_wordnet
def test_general_splits_use_the_right_voices_and_texts() -> None:
    heldout = plan("general", 10_000, 1)
    assert [t for t, _ in heldout] == list(general.heldout_sentences())
    assert all(str(v["voice"]).split("+")[-1] in HELDOUT_VARIANTS for _, v in heldout if "+" in str(v["voice"]))
    train = plan("gtrain", 50, 1)
    assert len(train) == 50
    assert all(str(v["voice"]).split("+")[-1] in TRAIN_VARIANTS for _, v in train if "+" in str(v["voice"]))


@needs_espeak
def test_complete_lexicon_gives_every_word_a_pronunciation_within_the_token_set(tmp_path: Path) -> None:
    settings = {"voice": "en-us", "rate": 170, "pitch": 50, "range": 50, "wordgap": 0}
    _work((str(tmp_path / "gtrain-0000"), [("the money is waiting", settings)]))
    _, metas = load_split(tmp_path, "gtrain")
    tokens = Path("workers/asr/assets/tokens.txt")
    lexicon = complete_lexicon(metas, ["money", "waiting", "purchase"], tokens)
    assert set(lexicon) == {"money", "waiting", "purchase"}
    known = set(tokens.read_text().split())
    assert all(set(p.split()) <= known for prons in lexicon.values() for p in prons)
    assert json.loads((tmp_path / "gtrain-0000.json").read_text())[0]["text"] == "the money is waiting"


@needs_espeak
@needs_wordnet
def test_eval_reports_every_set_with_its_oov_rate(tmp_path: Path, recognizer: Recognizer) -> None:
    from workers.asr.lab.evaluate import evaluate
    from workers.asr.lab.synth import synthesize

    for split, n in (("heldout", 3), ("general", 4)):
        assert synthesize(tmp_path, split, n, seed=1, workers=1) == n
    result = evaluate(recognizer, tmp_path)
    for key in ("wer_beam4", "wer_beam1", "wer_general_beam4", "oov_general", "wer_mulaw8k", "wer_rolling_beam4"):
        assert 0.0 <= float(result[key]) <= 100.0, key
    assert result["n_general"] == 4
    assert result["oov_heldout"] == 0.0
    assert float(result["wer_general_beam4"]) < 50.0  # general words are recognised at all: not 70% OOV errors
    assert "wer_ood" not in result  # a set that was not synthesized is left out, not scored as empty
