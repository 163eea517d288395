"""The lexicon/LM beam decoder on hand-made posteriors over the shipped tokens, lexicon and LM."""

from __future__ import annotations

import pytest
import torch

from workers.asr.checkpoint import ASSETS
from workers.asr.decoder import LexiconBeamDecoder, read_lexicon


@pytest.fixture(scope="module")
def decoder() -> LexiconBeamDecoder:
    tokens = (ASSETS / "tokens.txt").read_text().split()
    return LexiconBeamDecoder(tokens, read_lexicon(ASSETS / "lexicon.txt"), ASSETS / "lm.arpa")


def posteriors(decoder: LexiconBeamDecoder, frames: list[dict[str, float]]) -> torch.Tensor:
    """Each frame: {token: prob}; the rest of the mass is spread over the other tokens."""
    lp = torch.full((len(frames), len(decoder.tokens)), 1e-4)
    for t, probs in enumerate(frames):
        for tok, p in probs.items():
            lp[t, decoder.index[tok]] = p
    return (lp / lp.sum(-1, keepdim=True)).log()


def spell(decoder: LexiconBeamDecoder, words: str, repeat: int = 2, blanks: int = 1) -> list[dict[str, float]]:
    lexicon = read_lexicon(ASSETS / "lexicon.txt")
    frames: list[dict[str, float]] = [{"<blank>": 0.99}]
    for word in words.split():
        for phone in lexicon[word][0]:
            frames += [{phone: 0.95}] * repeat + [{"<blank>": 0.95}] * blanks
    return frames


def test_blanks_and_repeats_collapse_into_words(decoder: LexiconBeamDecoder) -> None:
    lp = posteriors(decoder, spell(decoder, "can i get two large fries", repeat=3, blanks=2))
    for beam in (1, 2, 4):
        assert [w.word for w in decoder.decode(lp, beam)] == ["can", "i", "get", "two", "large", "fries"]


def test_a_blank_separates_a_doubled_phoneme_across_words(decoder: LexiconBeamDecoder) -> None:
    # "what time": t | t. With a blank between them they are two tokens and both words survive.
    lp = posteriors(decoder, spell(decoder, "what time is it", blanks=1))
    assert [w.word for w in decoder.decode(lp, 4)] == ["what", "time", "is", "it"]


def test_word_timings_follow_the_path(decoder: LexiconBeamDecoder) -> None:
    frames = spell(decoder, "hello", repeat=2, blanks=0) + [{"<blank>": 0.99}] * 10
    frames += spell(decoder, "hello", repeat=2, blanks=0)[1:]
    words = decoder.decode(posteriors(decoder, frames), 4)
    assert [w.word for w in words] == ["hello", "hello"]
    assert words[0].start_frame == 1 and words[0].end_frame < words[1].start_frame
    assert words[1].end_frame == len(frames)


def test_lexicon_constraint_maps_off_lexicon_phonemes_to_a_word(decoder: LexiconBeamDecoder) -> None:
    # Greedy phonemes read "k a n t" (no such word); the lexicon search must still answer real words.
    frames = [*spell(decoder, "can"), {"t": 0.6, "<blank>": 0.4}]
    lp = posteriors(decoder, frames)
    assert decoder.greedy_phonemes(lp) == ["k", "a", "n", "t"]
    words = [w.word for w in decoder.decode(lp, 4)]
    lexicon = read_lexicon(ASSETS / "lexicon.txt")
    assert words and all(w in lexicon for w in words)


def test_beam_search_beats_greedy_phonemes_on_an_ambiguous_vowel(decoder: LexiconBeamDecoder) -> None:
    # The vowel of "get" is blurred towards "a" frame by frame; greedy spells "g a t", the search says "get".
    frames = spell(decoder, "can i")
    frames += [{"g": 0.9}, {"a": 0.5, "E": 0.45}, {"t": 0.9}, {"<blank>": 0.9}]
    frames += spell(decoder, "two large fries")[1:]
    lp = posteriors(decoder, frames)
    assert "a" in decoder.greedy_phonemes(lp)[4:6]
    assert [w.word for w in decoder.decode(lp, 4)] == ["can", "i", "get", "two", "large", "fries"]


def test_wider_beams_never_score_worse(decoder: LexiconBeamDecoder) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        base = spell(decoder, "my order number is five five two")
        lp = posteriors(decoder, base) + 2.0 * torch.randn(len(base), len(decoder.tokens), generator=gen)
        lp = lp.log_softmax(-1)
        scores = [decoder.search(lp, beam)[1] for beam in (1, 2, 4)]
        assert scores[0] <= scores[1] + 1e-3 <= scores[2] + 2e-3


def test_bad_beam_is_rejected(decoder: LexiconBeamDecoder) -> None:
    with pytest.raises(ValueError, match="beam"):
        decoder.decode(torch.zeros(3, len(decoder.tokens)), 3)


def test_empty_input_decodes_to_nothing(decoder: LexiconBeamDecoder) -> None:
    assert decoder.decode(torch.zeros(0, len(decoder.tokens)), 4) == []
