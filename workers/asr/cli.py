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

if TYPE_CHECKING:
    from workers.asr.recognizer import Recognizer


def asr_commands(commands: Any) -> Any:
    """The ``asr`` command group, created by whichever of the runtime and lab CLIs registers first."""
    if "asr" not in commands.choices:
        asr = commands.add_parser("asr", help="speech recognizer: synthesize data, train, evaluate, transcribe")
        asr.add_subparsers(dest="asr_command", required=True)
    return next(a for a in commands.choices["asr"]._actions if isinstance(a, argparse._SubParsersAction))


def register(commands: Any, bench: Any) -> None:
    """Add ``asr transcribe``."""
    sub = asr_commands(commands)
    p = sub.add_parser("transcribe", help="print the transcript of a WAV file (any rate; resampled)")
    p.add_argument("wav", type=Path)
    p.add_argument("--beam", type=int, choices=[1, 2, 4], default=4)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print words with times and confidences as JSON")
    p.set_defaults(handler=entry(_transcribe))


def entry(command: Callable[[argparse.Namespace], None]) -> Callable[..., int]:
    """The hopline CLI calls ``handler(args, settings)``; the engine's commands need no pipeline settings."""

    def handler(args: argparse.Namespace, settings: object = None) -> int:
        command(args)
        return 0

    return handler


def load_recognizer(args: argparse.Namespace) -> Recognizer:
    from workers.asr.recognizer import Recognizer

    return Recognizer.load(args.checkpoint, device=args.device, threads=getattr(args, "threads", None))


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
