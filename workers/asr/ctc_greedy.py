"""Greedy CTC decoding for models whose tokens are not the project's phonemes (no lexicon, no LM).

Frame-wise argmax, repeats collapsed, blanks dropped; words are split on a boundary token (``|``,
wav2vec2 style) or start at a SentencePiece ``▁`` prefix. A word spans its tokens' frames; its
confidence is the mean max-probability of those frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from workers.asr.decoder import DecodedWord

SENTENCEPIECE_PREFIX = "▁"
WordDelimiter = Literal["boundary_token", "sentencepiece"]


@dataclass
class _OpenWord:
    start_frame: int
    end_frame: int
    pieces: list[str] = field(default_factory=list)


class GreedyCtcDecoder:
    """[T, tokens] log-probabilities -> words with frame spans; the beam width is ignored."""

    def __init__(self, tokens: list[str], blank: int, delimiter: WordDelimiter, boundary_token: str = "|") -> None:
        self.tokens = tokens
        self.blank = blank
        self.delimiter = delimiter
        self.boundary = tokens.index(boundary_token) if delimiter == "boundary_token" else -1
        self.words: tuple[str, ...] = ()  # open vocabulary: any token sequence is a word

    def greedy_phonemes(self, log_probs: torch.Tensor) -> list[str]:
        """The collapsed token sequence without blanks and boundaries (what the model alone says)."""
        path = log_probs.argmax(-1).tolist()
        return [
            self.tokens[tok]
            for i, tok in enumerate(path)
            if tok not in (self.blank, self.boundary) and (i == 0 or path[i - 1] != tok)
        ]

    def decode(self, log_probs: torch.Tensor, beam: int = 4) -> list[DecodedWord]:
        if len(log_probs) == 0:
            return []
        best = log_probs.detach().to("cpu", torch.float32).max(-1)
        path = best.indices.tolist()
        frame_probs = best.values.exp().numpy()
        words: list[DecodedWord] = []
        current: _OpenWord | None = None

        def close() -> None:
            nonlocal current
            if current is not None and "".join(current.pieces):
                conf = float(np.mean(frame_probs[current.start_frame : current.end_frame]))
                words.append(DecodedWord("".join(current.pieces), current.start_frame, current.end_frame, conf))
            current = None

        previous = self.blank
        for frame, tok in enumerate(path):
            repeated = tok == previous
            previous = tok
            if tok == self.blank:
                continue
            if tok == self.boundary:
                close()
                continue
            if repeated and current is not None:
                current.end_frame = frame + 1
                continue
            piece = self.tokens[tok]
            if self.delimiter == "sentencepiece" and piece.startswith(SENTENCEPIECE_PREFIX):
                close()
                piece = piece[len(SENTENCEPIECE_PREFIX) :]
            if current is None:
                current = _OpenWord(frame, frame + 1)
            current.pieces.append(piece)
            current.end_frame = frame + 1
        close()
        return words
