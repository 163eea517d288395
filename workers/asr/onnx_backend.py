"""The onnx backend: a standard exported CTC acoustic model run with onnxruntime.

``load_onnx_recognizer(model.onnx)`` reads the feature spec next to it (``onnx_spec``), checks the
graph's inputs and outputs against it at load time (and runs one silent window, so symbolic
dimensions are checked too) and returns the same ``Recognizer`` the torch backend does: the worker,
assembler and everything downstream see no difference. Models over the project's phonemes get the
lexicon/LM beam search; any other token set gets greedy CTC (``ctc_greedy``). One tier: "full".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from workers.asr.checkpoint import CheckpointError
from workers.asr.ctc_greedy import GreedyCtcDecoder
from workers.asr.features import mel_filterbank
from workers.asr.onnx_spec import FbankSpec, ModelSpec, read_spec, read_tokens, spec_path
from workers.asr.recognizer import FrameTiming, Recognizer, WordDecoder, check_tier, lexicon_decoder
from workers.asr.tiers import TIER_FULL

#: Length of the silent window run at load time to check the graph's symbolic dimensions.
PROBE_SECONDS = 1.0


class LogMelFeatures:
    """The spec's fbank in torch: [B, samples] -> [B, frames, n_mels], a frame seeing only its own samples."""

    def __init__(self, spec: FbankSpec, sample_rate: int) -> None:
        self.win = round(spec.frame_length_ms * sample_rate / 1000)
        self.hop = round(spec.frame_shift_ms * sample_rate / 1000)
        self.n_fft = spec.n_fft or 1 << (self.win - 1).bit_length()
        if self.n_fft < self.win:
            raise ValueError(f"n_fft {self.n_fft} is shorter than the {self.win}-sample window")
        make_window = torch.hann_window if spec.window == "hann" else torch.hamming_window
        self.window = make_window(self.win, periodic=True)
        high = spec.high_freq_hz or sample_rate / 2
        self.fbank = mel_filterbank(spec.n_mels, self.n_fft, sample_rate, spec.low_freq_hz, high)
        self.spec = spec

    def num_frames(self, num_samples: np.ndarray) -> np.ndarray:
        return np.maximum((num_samples - self.win) // self.hop + 1, 0)

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        frames = audio.unfold(-1, self.win, self.hop)
        if self.spec.remove_dc_offset:
            frames = frames - frames.mean(-1, keepdim=True)
        spec = torch.fft.rfft(frames * self.window, n=self.n_fft)
        feats = torch.log((spec.real.square() + spec.imag.square()) @ self.fbank + self.spec.log_floor)
        if self.spec.mean is not None:
            feats = feats - torch.tensor(self.spec.mean)
        if self.spec.std is not None:
            feats = feats / torch.tensor(self.spec.std)
        return feats


def _providers(device: str) -> tuple[list[str | tuple[str, dict[str, Any]]], torch.device]:
    """onnxruntime execution providers for a device setting (auto | cpu | cuda | cuda:N)."""
    cuda_ok = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cpu" or (device == "auto" and not cuda_ok):
        return ["CPUExecutionProvider"], torch.device("cpu")
    if device == "auto" or device.startswith("cuda"):
        if not cuda_ok:
            raise CheckpointError(f"device {device}: this onnxruntime has no CUDA execution provider")
        index = torch.device(device if device != "auto" else "cuda").index or 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], torch.device("cuda", index)
    raise CheckpointError(f"device {device!r}: the onnx backend runs on auto, cpu, cuda or cuda:N")


class OnnxAcoustics:
    """An onnxruntime session fed the way its spec says; returns per-window log-probabilities on the CPU."""

    def __init__(self, session: ort.InferenceSession, spec: ModelSpec, device: torch.device) -> None:
        self.session = session
        self.spec = spec
        self._device = device
        self.features = LogMelFeatures(spec.fbank, spec.sample_rate) if spec.fbank is not None else None
        self.input_names = [i.name for i in session.get_inputs()]
        self.has_output_lengths = len(session.get_outputs()) == 2

    @property
    def device(self) -> torch.device:
        return self._device

    def tiers_available(self) -> tuple[str, ...]:
        """No int8 model here: "int8" runs the full model, so it is not offered as a saving."""
        return (TIER_FULL,)

    def prepare_tier(self, tier: str) -> None:
        check_tier(tier)

    def log_probs(self, windows: Sequence[np.ndarray], tier: str) -> list[torch.Tensor]:
        check_tier(tier)
        if not windows:
            return []
        shortest = max(self.spec.min_samples, self.features.win if self.features else 1)
        lengths = np.maximum(np.array([len(w) for w in windows], dtype=np.int64), shortest)
        batch = np.zeros((len(windows), int(lengths.max())), dtype=np.float32)
        for i, w in enumerate(windows):
            batch[i, : len(w)] = w
        if self.features is not None:
            with torch.inference_mode():
                inputs = self.features(torch.from_numpy(batch)).numpy()
            lengths = self.features.num_frames(lengths)
        else:
            inputs = batch
        feeds = {self.input_names[0]: inputs}
        if len(self.input_names) == 2:
            feeds[self.input_names[1]] = lengths
        outputs = self.session.run(None, feeds)
        scores = torch.from_numpy(np.ascontiguousarray(outputs[0], dtype=np.float32))
        if self.spec.output == "logits":
            scores = scores.log_softmax(-1)
        if self.has_output_lengths:
            frames = np.asarray(outputs[1]).reshape(-1)
        else:
            factor = self.spec.subsampling_factor or 1
            frames = -(-lengths // factor)
        frames = np.clip(frames, 0, scores.shape[1])
        return [scores[i, : int(t)] for i, t in enumerate(frames)]


def _check_graph(session: ort.InferenceSession, spec: ModelSpec, n_tokens: int, where: Path) -> None:
    """The graph's inputs and outputs against the spec, before any audio goes in."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    rank = 2 if spec.input == "waveform" else 3
    if not 1 <= len(inputs) <= 2:
        raise CheckpointError(f"{where}: {len(inputs)} graph inputs; expected {spec.input} [+ lengths]")
    first = inputs[0]
    if len(first.shape) != rank or first.type != "tensor(float)":
        raise CheckpointError(
            f"{where}: input {first.name!r} is {first.type} {first.shape}; "
            f"input {spec.input} needs float32 of rank {rank}"
        )
    if spec.fbank is not None and isinstance(first.shape[-1], int) and first.shape[-1] != spec.fbank.n_mels:
        raise CheckpointError(f"{where}: input takes {first.shape[-1]} mel bands, the spec says {spec.fbank.n_mels}")
    if len(inputs) == 2 and (len(inputs[1].shape) != 1 or inputs[1].type != "tensor(int64)"):
        raise CheckpointError(f"{where}: second input {inputs[1].name!r} must be int64 [B] lengths")
    if not 1 <= len(outputs) <= 2 or len(outputs[0].shape) != 3:
        raise CheckpointError(f"{where}: expected outputs [B, frames, tokens] (+ int64 [B] frame lengths)")
    if len(outputs) == 1 and spec.subsampling_factor is None:
        raise CheckpointError(f"{where}: no frame-lengths output; the spec must state subsampling_factor")
    width = outputs[0].shape[-1]
    if isinstance(width, int) and width != n_tokens:
        raise CheckpointError(f"{where}: the model outputs {width} tokens per frame, the tokens file has {n_tokens}")


def _decoder(spec: ModelSpec, tokens: list[str], model: Path, tokens_path: Path) -> WordDecoder:
    if spec.blank_index >= len(tokens):
        raise CheckpointError(f"{tokens_path}: blank_index {spec.blank_index} but only {len(tokens)} tokens")
    if spec.words == "lexicon":
        if tokens[spec.blank_index] != "<blank>":
            raise CheckpointError(f"{tokens_path}: words lexicon needs <blank> at blank_index {spec.blank_index}")
        return lexicon_decoder(tokens, model)
    if spec.words == "boundary_token" and spec.boundary_token not in tokens:
        raise CheckpointError(f"{tokens_path}: no word-boundary token {spec.boundary_token!r}")
    return GreedyCtcDecoder(tokens, spec.blank_index, spec.words, spec.boundary_token)


def load_onnx_recognizer(model: Path, device: str = "auto", threads: int | None = None) -> Recognizer:
    """``model.onnx`` + its ``model.json`` spec + tokens file -> a Recognizer; problems are one-line errors."""
    if not model.is_file():
        raise CheckpointError(f"{model}: ONNX model not found")
    spec = read_spec(spec_path(model))
    tokens_path = spec_path(model).parent / spec.tokens
    tokens = read_tokens(tokens_path)
    decoder = _decoder(spec, tokens, model, tokens_path)
    providers, torch_device = _providers(device)
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
        torch.set_num_threads(threads)
    try:
        session = ort.InferenceSession(str(model), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable or invalid graphs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{model}: not a loadable ONNX model ({first[:160]})") from exc
    _check_graph(session, spec, len(tokens), model)
    try:
        acoustics = OnnxAcoustics(session, spec, torch_device)
    except ValueError as exc:
        raise CheckpointError(f"{spec_path(model)}: fbank: {exc}") from exc
    _probe(acoustics, len(tokens), model)
    timing = FrameTiming(spec.seconds_per_frame, spec.start_offset_s, spec.end_offset_s)
    info = {"backend": "onnx", "model": str(model), "spec": spec.model_dump(mode="json")}
    return Recognizer(acoustics, tokens, decoder, torch_device, info, timing)


def _probe(acoustics: OnnxAcoustics, n_tokens: int, model: Path) -> None:
    """One silent window through the graph: symbolic token dimensions and runtime failures show at load."""
    silence = np.zeros(int(PROBE_SECONDS * acoustics.spec.sample_rate), dtype=np.float32)
    try:
        (lp,) = acoustics.log_probs([silence], TIER_FULL)
    except Exception as exc:  # onnxruntime's own error types: shapes the graph refuses
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{model}: a 1 s window does not run ({first[:160]})") from exc
    if lp.shape[-1] != n_tokens:
        raise CheckpointError(
            f"{model}: the model outputs {lp.shape[-1]} tokens per frame, the tokens file has {n_tokens}"
        )
    if not torch.isfinite(lp).all():
        raise CheckpointError(f"{model}: a silent window gives non-finite log-probabilities")
