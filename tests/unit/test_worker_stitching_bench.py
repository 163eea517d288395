"""The stitching bench's bookkeeping, with a fake recognizer that reads window positions from the audio."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np

from pipeline.settings import Settings
from workers.worker.stitching_bench import stitch_utterance, summarize

RATE = 16000
#: (word, start_s, end_s) in the utterance.
SCRIPT = [("please", 0.30, 0.70), ("hold", 0.80, 1.10), ("the", 1.15, 1.25), ("line", 1.30, 1.80)]


def fake_transcribe(windows: Sequence[np.ndarray], beam: int) -> list[SimpleNamespace]:
    """Each sample's value is its position in the utterance (x 1e-6): the fake knows where a
    window lies and "hears" the script's words that start in it, the last one cut at its end."""
    recognitions = []
    for window in windows:
        start_s = round(float(window[0]) * 1e6) / RATE
        end_s = start_s + len(window) / RATE
        words = [
            SimpleNamespace(word=w, start_s=s - start_s, end_s=min(e, end_s) - start_s, confidence=0.9)
            for w, s, e in SCRIPT
            if start_s <= s < end_s
        ]
        recognitions.append(SimpleNamespace(text=" ".join(w.word for w in words), words=words))
    return recognitions


def test_stitched_finals_match_a_clean_recognizer_and_delays_are_in_audio_time() -> None:
    audio = (np.arange(int(2.6 * RATE)) * 1e-6).astype(np.float32)
    result = stitch_utterance(fake_transcribe, audio, "Please hold the line.", "clip", Settings())
    assert result.stitched == result.whole == "please hold the line"
    assert result.hops == 17 and result.finals == 1
    assert len(result.shown_delay_ms) == len(result.commit_delay_ms) == len(SCRIPT)
    pairs = zip(result.shown_delay_ms, result.commit_delay_ms, strict=True)
    assert all(shown <= committed and committed >= 0 for shown, committed in pairs)
    assert min(result.shown_delay_ms) < 0  # a word still being spoken already shows in the tail
    summary = summarize([result])
    assert summary["wer_stitched"] == summary["wer_whole_utterance"] == 0.0
    assert summary["shown_after_word_end_ms_p50"] < summary["committed_after_word_end_ms_p95"]
