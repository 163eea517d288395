"""The engine the GPU workers call: batched windows in, text + word timings + confidence out.

A ``Recognizer`` is an acoustic backend (windows -> CTC log-probabilities) plus a word decoder
(log-probabilities -> words with frame spans) plus the backend's frame timing. ``Recognizer.load``
builds the project's own torch checkpoint; ``workers.asr.onnx_backend`` builds one around an
exported ONNX model; ``workers.asr.backends.load_recognizer`` picks between them from the settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from workers.asr import checkpoint as checkpoint_io
from workers.asr.checkpoint import ASSETS, DEFAULT_CHECKPOINT, CheckpointError
from workers.asr.decoder import BEAMS, DecodedWord, DecoderConfig, LexiconBeamDecoder, read_lexicon
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


@dataclass(frozen=True)
class FrameTiming:
    """Where a word's frames lie in the window: start = frame * frame_s + start_offset_s, likewise the end."""

    frame_s: float
    start_offset_s: float = 0.0
    end_offset_s: float = 0.0


#: The project's conformer: 40 ms frames, centred past the front end's receptive field, ends one frame late.
CONFORMER_TIMING = FrameTiming(FRAME_S, _FRAME_OFFSET_S, _FRAME_OFFSET_S + _END_BIAS_S)


class AcousticBackend(Protocol):
    """Windows -> per-window [frames, tokens] CTC log-probabilities on the CPU; one per recognizer."""

    @property
    def device(self) -> torch.device: ...

    def log_probs(self, windows: Sequence[np.ndarray], tier: str) -> list[torch.Tensor]: ...

    def tiers_available(self) -> tuple[str, ...]: ...

    def prepare_tier(self, tier: str) -> None: ...


class WordDecoder(Protocol):
    """One window's log-probabilities -> words with frame spans (the lexicon beam search or greedy CTC)."""

    @property
    def words(self) -> Sequence[str]:
        """The vocabulary it can output; empty for an open-vocabulary (greedy) decoder."""
        ...

    def decode(self, log_probs: torch.Tensor, beam: int = 4) -> list[DecodedWord]: ...

    def greedy_phonemes(self, log_probs: torch.Tensor) -> list[str]: ...


def check_tier(tier: str) -> None:
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")


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


def lexicon_decoder(tokens: list[str], source: Path, config: DecoderConfig | None = None) -> LexiconBeamDecoder:
    """The shipped lexicon + LM beam search over ``tokens``, which must cover the lexicon's phonemes.

    ``source`` names the model in the one-line error when its token set does not fit.
    """
    for asset in (ASSETS / "lexicon.txt", ASSETS / "lm.arpa"):
        if not asset.is_file():
            raise CheckpointError(f"{asset}: missing (it ships with the repository; restore it with git)")
    lexicon = read_lexicon(ASSETS / "lexicon.txt")
    unknown = sorted({p for prons in lexicon.values() for pr in prons for p in pr} - set(tokens))
    if unknown or tokens[:2] != ["<blank>", "|"]:
        raise CheckpointError(
            f"{source}: token set does not match {ASSETS / 'lexicon.txt'} "
            f"(phonemes missing: {' '.join(unknown[:5]) or 'blank/boundary'})"
        )
    try:
        with _quiet_stderr():
            return LexiconBeamDecoder(tokens, lexicon, ASSETS / "lm.arpa", config or DecoderConfig())
    except Exception as exc:  # KenLM raises its own error types for a damaged ARPA file
        raise CheckpointError(f"{ASSETS / 'lm.arpa'}: not a usable ARPA language model ({exc!s:.120})") from exc


class TorchAcoustics:
    """The project's checkpoint in torch: the float model and its int8 copy (CPU only; built on first use)."""

    def __init__(self, model: AcousticModel, device: torch.device) -> None:
        self.model = model.to(device).eval()
        self._device = device
        self._int8: AcousticModel | None = None

    @property
    def device(self) -> torch.device:
        return self._device

    def tiers_available(self) -> tuple[str, ...]:
        return TIERS if self._device.type == "cpu" else (TIER_FULL,)

    def prepare_tier(self, tier: str) -> None:
        self._tier_model(tier)

    def _tier_model(self, tier: str) -> AcousticModel:
        check_tier(tier)
        if tier != TIER_INT8 or tier not in self.tiers_available():
            return self.model
        if self._int8 is None:
            self._int8 = quantize_int8(self.model)
        return self._int8

    def log_probs(self, windows: Sequence[np.ndarray], tier: str) -> list[torch.Tensor]:
        model = self._tier_model(tier)
        if not windows:
            return []
        lengths = [len(w) for w in windows]
        longest = max(max(lengths), MIN_SAMPLES)
        batch = np.zeros((len(windows), longest), dtype=np.float32)
        for i, w in enumerate(windows):
            batch[i, : len(w)] = w
        audio = torch.from_numpy(batch).to(self._device, non_blocking=True)
        n = torch.tensor(lengths, device=self._device)
        cuda = self._device.type == "cuda"
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            lp, frames = model(audio, n)
        lp_cpu = lp.float().cpu()
        return [lp_cpu[i, : int(t)] for i, t in enumerate(frames.cpu())]


class Recognizer:
    """Acoustic backend + word decoder. One instance per process; not thread-safe.

    Tiers (``TIERS``): "full" is the float model; "int8" runs the torch model's Linear layers in int8
    (a copy built on first use or by ``prepare_tier``; the full model is untouched). int8 kernels are
    CPU-only, so on CUDA, and on backends without an int8 model (onnx), "int8" runs the full model and
    ``tiers_available`` leaves it out.
    """

    sample_rate: int = 16000

    def __init__(
        self,
        model: AcousticModel | AcousticBackend,
        tokens: list[str],
        decoder: WordDecoder,
        device: torch.device,
        info: dict,
        timing: FrameTiming = CONFORMER_TIMING,
    ) -> None:
        """``model``: the project's torch model (run on ``device``) or any other acoustic backend."""
        self.acoustics: AcousticBackend = TorchAcoustics(model, device) if isinstance(model, AcousticModel) else model
        self.tokens = tokens
        self.decoder = decoder
        self.info = info
        self.timing = timing

    @classmethod
    def load(cls, checkpoint: Path | None = None, device: str = "auto", threads: int | None = None) -> Recognizer:
        """The torch backend. None -> the shipped checkpoint; 'auto' -> cuda if available else cpu."""
        path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
        if threads:
            torch.set_num_threads(threads)
        model, tokens, info = checkpoint_io.load(path)
        decoder = lexicon_decoder(tokens, path, DecoderConfig(**info.get("decoder", {})))
        return cls(model, tokens, decoder, resolve_device(device), {"backend": "torch", **info})

    @property
    def device(self) -> torch.device:
        return self.acoustics.device

    @property
    def model(self) -> AcousticModel:
        """The torch backend's float model (the int8 tier runs a copy of it)."""
        if not isinstance(self.acoustics, TorchAcoustics):
            raise AttributeError(f"the {self.info.get('backend')} backend has no torch model")
        return self.acoustics.model

    def tiers_available(self) -> tuple[str, ...]:
        """The tiers that differ on this backend and device: only "full" on CUDA and for onnx."""
        return self.acoustics.tiers_available()

    def prepare_tier(self, tier: str) -> None:
        """Build a tier's model now (the worker's start-up) rather than inside its first batch."""
        self.acoustics.prepare_tier(tier)

    def log_probs(self, windows: Sequence[np.ndarray], tier: str = TIER_FULL) -> list[torch.Tensor]:
        """Per window [frames, tokens] CTC log-probabilities on the CPU, from one padded batch."""
        return self.acoustics.log_probs(windows, tier)

    def decode(self, log_probs: torch.Tensor, beam: int, duration_s: float) -> Recognition:
        """Decode one window's log-probabilities into a Recognition with word times."""
        words = self.decoder.decode(log_probs, beam)
        t = self.timing
        timed = tuple(
            WordTiming(
                w.word,
                round(min(max(w.start_frame * t.frame_s + t.start_offset_s, 0.0), duration_s), 3),
                round(min(w.end_frame * t.frame_s + t.end_offset_s, duration_s), 3),
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
