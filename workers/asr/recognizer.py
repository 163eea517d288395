"""The engine the GPU workers call: batched windows in, text + word timings + confidence out."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from workers.asr import checkpoint as checkpoint_io
from workers.asr.checkpoint import ASSETS, DEFAULT_CHECKPOINT, CheckpointError
from workers.asr.decoder import BEAMS, DecoderConfig, LexiconBeamDecoder, read_lexicon
from workers.asr.features import HOP, MIN_SAMPLES, WIN
from workers.asr.model import FRAME_S, AcousticModel, quantize_int8
from workers.asr.tiers import TIER_FULL, TIER_INT8, TIERS

# Centre of output frame i is 4i feature frames in plus the receptive field's middle: i*40 ms + ~42 ms.
_FRAME_OFFSET_S = (3 * HOP + WIN / 2) / 16000 - FRAME_S / 2
# CTC emits a word's last phoneme before that phoneme ends: on the shipped samples, ends came out
# 47 ms early on average (starts 5 ms late), so ends are moved one frame later.
_END_BIAS_S = FRAME_S


@dataclass(frozen=True)
class WordTiming:
    word: str
    start_s: float  # seconds from the start of the window passed in
    end_s: float
    confidence: float


@dataclass(frozen=True)
class Recognition:
    text: str
    words: tuple[WordTiming, ...]
    confidence: float


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """KenLM prints a progress bar to fd 2 while loading; the CLI and the workers want clean output."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Recognizer:
    """Acoustic model + lexicon/LM beam decoder. One instance per process; not thread-safe.

    Tiers (``TIERS``): "full" is the float model; "int8" runs its Linear layers in int8 (a copy built
    on first use or by ``prepare_tier``; the full model is untouched). int8 kernels are CPU-only, so
    on CUDA "int8" runs the full model and ``tiers_available`` leaves it out.
    """

    sample_rate: int = 16000

    def __init__(
        self, model: AcousticModel, tokens: list[str], decoder: LexiconBeamDecoder, device: torch.device, info: dict
    ) -> None:
        self.model = model.to(device).eval()
        self.tokens = tokens
        self.decoder = decoder
        self.device = device
        self.info = info
        self._int8: AcousticModel | None = None

    @classmethod
    def load(cls, checkpoint: Path | None = None, device: str = "auto", threads: int | None = None) -> Recognizer:
        """None -> the shipped checkpoint; 'auto' -> cuda if available else cpu."""
        path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        if threads:
            torch.set_num_threads(threads)
        model, tokens, info = checkpoint_io.load(path)
        for asset in (ASSETS / "lexicon.txt", ASSETS / "lm.arpa"):
            if not asset.is_file():
                raise CheckpointError(f"{asset}: missing (it ships with the repository; restore it with git)")
        lexicon = read_lexicon(ASSETS / "lexicon.txt")
        unknown = sorted({p for prons in lexicon.values() for pr in prons for p in pr} - set(tokens))
        if unknown or tokens[:2] != ["<blank>", "|"]:
            raise CheckpointError(
                f"{path}: token set does not match {ASSETS / 'lexicon.txt'} "
                f"(phonemes missing: {' '.join(unknown[:5]) or 'blank/boundary'})"
            )
        config = DecoderConfig(**info.get("decoder", {}))
        try:
            with _quiet_stderr():
                decoder = LexiconBeamDecoder(tokens, lexicon, ASSETS / "lm.arpa", config)
        except Exception as exc:  # KenLM raises its own error types for a damaged ARPA file
            raise CheckpointError(f"{ASSETS / 'lm.arpa'}: not a usable ARPA language model ({exc!s:.120})") from exc
        return cls(model, tokens, decoder, resolve_device(device), info)

    def tiers_available(self) -> tuple[str, ...]:
        """The tiers that differ on this device: only "full" on CUDA, where "int8" runs the full model."""
        return TIERS if self.device.type == "cpu" else (TIER_FULL,)

    def prepare_tier(self, tier: str) -> None:
        """Build a tier's model now (the worker's start-up) rather than inside its first batch."""
        self._tier_model(tier)

    def _tier_model(self, tier: str) -> AcousticModel:
        if tier not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
        if tier != TIER_INT8 or tier not in self.tiers_available():
            return self.model
        if self._int8 is None:
            self._int8 = quantize_int8(self.model)
        return self._int8

    def log_probs(self, windows: Sequence[np.ndarray], tier: str = TIER_FULL) -> list[torch.Tensor]:
        """Per window [frames, tokens] CTC log-probabilities on the CPU, from one padded batch."""
        model = self._tier_model(tier)
        if not windows:
            return []
        lengths = [len(w) for w in windows]
        longest = max(max(lengths), MIN_SAMPLES)
        batch = np.zeros((len(windows), longest), dtype=np.float32)
        for i, w in enumerate(windows):
            batch[i, : len(w)] = w
        audio = torch.from_numpy(batch).to(self.device, non_blocking=True)
        n = torch.tensor(lengths, device=self.device)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            lp, frames = model(audio, n)
        lp_cpu = lp.float().cpu()
        return [lp_cpu[i, : int(t)] for i, t in enumerate(frames.cpu())]

    def decode(self, log_probs: torch.Tensor, beam: int, duration_s: float) -> Recognition:
        """Beam-search one window's log-probabilities into a Recognition with word times."""
        words = self.decoder.decode(log_probs, beam)
        timed = tuple(
            WordTiming(
                w.word,
                round(min(max(w.start_frame * FRAME_S + _FRAME_OFFSET_S, 0.0), duration_s), 3),
                round(min(w.end_frame * FRAME_S + _FRAME_OFFSET_S + _END_BIAS_S, duration_s), 3),
                round(w.confidence, 4),
            )
            for w in words
        )
        if timed:
            conf = float(np.mean([w.confidence for w in timed]))
        elif len(log_probs):
            conf = float(log_probs.max(-1).values.exp().mean())
        else:
            conf = 0.0
        return Recognition(" ".join(w.word for w in timed), timed, round(conf, 4))

    def transcribe(self, windows: Sequence[np.ndarray], beam: int = 4, tier: str = TIER_FULL) -> list[Recognition]:
        """Float32 mono 16 kHz windows in [-1, 1] (0.1-30 s) -> one Recognition each, batched.

        ``tier`` picks the acoustic model (see the class docstring); "int8" on CUDA runs the full model.
        """
        if beam not in BEAMS:
            raise ValueError(f"beam must be one of {BEAMS}, got {beam}")
        lps = self.log_probs(windows, tier)
        return [self.decode(lp, beam, len(w) / self.sample_rate) for lp, w in zip(lps, windows, strict=True)]
