"""``hopline asr transcribe``: the runtime recognizer from the command line.

Kept import-light: torch and the engine load inside the handlers, so ``hopline --help`` stays fast.
The training lab's commands (``asr synth|train|eval``, ``bench asr|stitching``) live in
``workers.asr.lab.cli`` and join the same ``asr`` group.
"""

from __future__ import annotations

import argparse
import json
import wave
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import CliError
from workers.asr.backends import BACKENDS

if TYPE_CHECKING:
    from workers.asr.recognizer import Recognizer


def asr_commands(commands: Any) -> Any:
    """The ``asr`` command group, created by whichever of the runtime and lab CLIs registers first."""
    if "asr" not in commands.choices:
        asr = commands.add_parser("asr", help="speech recognizer: synthesize data, train, evaluate, transcribe")
        asr.add_subparsers(dest="asr_command", required=True)
    return next(a for a in commands.choices["asr"]._actions if isinstance(a, argparse._SubParsersAction))


def register(commands: Any, bench: Any) -> None:
    """Add ``asr transcribe`` and ``asr export-onnx``."""
    sub = asr_commands(commands)
    p = sub.add_parser("transcribe", help="print the transcript of a WAV file (any rate; resampled)")
    p.add_argument("wav", type=Path)
    p.add_argument("--beam", type=int, choices=[1, 2, 4], default=4)
    p.add_argument(
        "--recognizer",
        choices=BACKENDS,
        default=None,
        help="backend (default: HOPLINE_WORKER__RECOGNIZER, else torch); onnx: see docs/byo-model.md",
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="model file: torch checkpoint or .onnx (default: HOPLINE_WORKER__CHECKPOINT, else the shipped one)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print words with times and confidences as JSON")
    p.set_defaults(handler=entry(_transcribe))

    p = sub.add_parser(
        "export-onnx",
        help="export a torch checkpoint as model.onnx + model.json + tokens.txt for the onnx backend",
        description="Writes the acoustic model with dynamic batch and time axes (log-mel input, computed by "
        "hopline from the spec), its feature spec and tokens. Select it with HOPLINE_WORKER__RECOGNIZER=onnx "
        "HOPLINE_WORKER__CHECKPOINT=DIR/model.onnx (docs/byo-model.md).",
    )
    p.add_argument("--out", type=Path, required=True, help="folder to write into (created)")
    p.add_argument("--checkpoint", type=Path, default=None, help="torch checkpoint (default: the shipped one)")
    p.set_defaults(handler=entry(_export_onnx))


def entry(command: Callable[[argparse.Namespace], None]) -> Callable[..., int]:
    """The hopline CLI calls ``handler(args, settings)``; the engine's commands need no pipeline settings."""

    def handler(args: argparse.Namespace, settings: object = None) -> int:
        command(args)
        return 0

    return handler


def load_recognizer(args: argparse.Namespace) -> Recognizer:
    """Every ASR command's recognizer, through the one factory: the settings pick the backend and model file,
    ``--recognizer`` (where offered) and ``--checkpoint`` override them."""
    from pipeline.settings import Settings
    from workers.asr.backends import load_recognizer as load_backend

    worker = Settings().worker
    backend = getattr(args, "recognizer", None) or worker.recognizer
    model = args.checkpoint or (Path(worker.checkpoint) if worker.checkpoint else None)
    return load_backend(backend, model, device=args.device, threads=getattr(args, "threads", None))


def _export_onnx(args: argparse.Namespace) -> None:
    from workers.asr.onnx_export import export_checkpoint

    model = export_checkpoint(args.checkpoint, args.out)
    print(
        json.dumps(
            {"model": str(model), "spec": str(model.with_suffix(".json")), "tokens": str(args.out / "tokens.txt")}
        )
    )


def _transcribe(args: argparse.Namespace) -> None:
    from workers.asr.audio import load_audio

    if not args.wav.is_file():
        raise CliError(f"{args.wav}: no such file")
    try:
        audio = load_audio(args.wav)
    except (OSError, EOFError, ValueError, wave.Error) as exc:
        raise CliError(f"{args.wav}: not a readable PCM WAV file ({exc})") from exc
    rec = load_recognizer(args)
    # Long files go through in 30 s pieces: the model's attention spans one piece.
    piece = 30 * rec.sample_rate
    words: list[dict] = []
    for s in range(0, max(len(audio), 1), piece):
        for r in rec.transcribe([audio[s : s + piece]], args.beam):
            words += [
                {
                    "word": w.word,
                    "start_s": round(w.start_s + s / rec.sample_rate, 3),
                    "end_s": round(w.end_s + s / rec.sample_rate, 3),
                    "confidence": w.confidence,
                }
                for w in r.words
            ]
    text = " ".join(w["word"] for w in words)
    print(json.dumps({"text": text, "words": words}) if args.json else text)


def standalone_parser(prog: str) -> tuple[argparse.ArgumentParser, Any, Any]:
    """A parser with ``COMMAND`` and ``bench BENCHMARK`` levels, for running the recognizer's CLIs alone."""
    parser = argparse.ArgumentParser(prog=prog)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="bench_command", required=True)
    return parser, commands, bench
