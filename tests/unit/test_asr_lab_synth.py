from __future__ import annotations

import pytest

from workers.asr.lab.espeak import espeak_available
from workers.asr.lab.synth import _clip_record, build_lexicon

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")


def test_synthesis_gives_audio_with_word_and_phoneme_alignments() -> None:
    from workers.asr.lab.espeak import Espeak

    settings = {"voice": "en-us+f3", "rate": 170, "pitch": 50, "range": 50, "wordgap": 0}
    audio, meta = _clip_record(Espeak(), "can i get two large fries", settings)
    assert len(audio) / meta["rate_hz"] > 1.0
    assert [w for w, _, _ in meta["words"]] == ["can", "i", "get", "two", "large", "fries"]
    starts = [s for _, s, _ in meta["words"]]
    assert starts == sorted(starts)
    assert all(not p.startswith("_") for p, _, _ in meta["phones"])
    lexicon = build_lexicon([meta])
    assert lexicon["fries"] == ["f r aI z"]
