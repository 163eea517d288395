"""The one way in to a recognizer: ``HOPLINE_WORKER__RECOGNIZER`` picks the backend for every entry point.

The worker, ``hopline asr transcribe|eval``, ``hopline bench asr`` and ``hopline bench stitching``
all load through :func:`load_recognizer`. Import-light: each backend loads inside the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import CliError

if TYPE_CHECKING:
    from pipeline.settings import WorkerSettings
    from workers.asr.recognizer import Recognizer

#: ``torch``: the project's checkpoint (float + int8 tiers); ``onnx``: an exported CTC model (docs/byo-model.md).
BACKENDS = ("torch", "onnx")


def load_recognizer(
    backend: str, model: Path | None = None, device: str = "auto", threads: int | None = None
) -> Recognizer:
    """``model``: a torch checkpoint (None = the shipped one) or, for onnx, the ``.onnx`` file (required).

    Also keeps freed memory mapped for the process (``workers.asr.allocator``): batches stop page-faulting.
    """
    from workers.asr.allocator import retain_freed_memory

    if backend not in BACKENDS:
        raise CliError(f"unknown recognizer {backend!r}: choose one of {', '.join(BACKENDS)}")
    retain_freed_memory()
    if backend == "torch":
        from workers.asr.recognizer import Recognizer

        return Recognizer.load(model, device=device, threads=threads)
    if model is None:
        raise CliError("the onnx recognizer needs its model: set HOPLINE_WORKER__CHECKPOINT=path/to/model.onnx")
    from workers.asr.onnx_backend import load_onnx_recognizer

    return load_onnx_recognizer(model, device=device, threads=threads)


def recognizer_from_settings(worker: WorkerSettings) -> Recognizer:
    """The recognizer ``HOPLINE_WORKER__RECOGNIZER`` / ``__CHECKPOINT`` / ``__DEVICE`` / ``__TORCH_THREADS`` name."""
    model = Path(worker.checkpoint) if worker.checkpoint else None
    return load_recognizer(worker.recognizer, model, device=worker.device, threads=worker.torch_threads)
