"""``hopline asr synth|train|eval`` and ``hopline bench asr``: the recognizer's training lab.

Kept import-light like every CLI module: torch and the engine load inside the handlers. Also
runnable alone (``python -m workers.asr.lab.cli asr train ...``) on a GPU box used only for training.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.demo import SAMPLES_DIR as SAMPLES
from pipeline.errors import CliError
from pipeline.settings import Settings
from workers.asr import TIER_FULL, TIERS
from workers.asr.cli import asr_commands, entry, load_recognizer


def register(commands: Any, bench: Any) -> None:
    """Add the lab's sub-commands to ``asr`` and ``asr`` to ``bench``."""
    sub = asr_commands(commands)
    p = sub.add_parser(
        "synth", help="synthesize the espeak-ng corpus (domain and general training text, held-out sets)"
    )
    p.add_argument("--out", type=Path, default=Path("data/corpus"))
    p.add_argument("--train", type=int, default=0, help="domain-only training clips (split train)")
    p.add_argument(
        "--gtrain", type=int, default=24000, help="general training clips: domain, WordNet and lexicon-word text"
    )
    p.add_argument("--heldout", type=int, default=400, help="held-out domain clips (unseen sentences and voices)")
    p.add_argument("--ood", type=int, default=30, help="out-of-domain clips")
    p.add_argument("--general", type=int, default=1000, help="general-English held-out clips (at most the set's size)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--rebuild-assets",
        action="store_true",
        help="also rewrite the lexicon and the LM in workers/asr/assets from the gtrain split",
    )
    p.add_argument("--samples", type=Path, default=None, help="also write the demo samples to this folder")
    p.set_defaults(handler=entry(_synth))

    p = sub.add_parser("train", help="train the acoustic model (resumable; progress bar)")
    add_train_arguments(p)
    p.set_defaults(handler=entry(_train))

    p = sub.add_parser("eval", help="WER/CER per beam width: 16 kHz, 8 kHz mu-law, rolling windows, OOD")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N held-out clips")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tier", choices=TIERS, default=TIER_FULL, help="acoustic model tier (int8: CPU only)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=entry(_eval))
    p = bench.add_parser("asr", help="recognizer latency on 1.28 s windows, batch 8 and 1, per beam")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--corpus", type=Path, default=None, help="take windows from this corpus's held-out clips")
    p.add_argument("--tier", choices=TIERS, default=TIER_FULL, help="acoustic model tier (int8: CPU only)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=entry(_bench))


def add_train_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Training options, shared by `hopline asr train` and `python -m workers.asr.train`."""
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--split", choices=("gtrain", "train"), default="gtrain", help="training split of the corpus")
    ap.add_argument("--run-dir", type=Path, default=Path("runs/asr"))
    ap.add_argument("--export", type=Path, default=Path("runs/asr/asr.pt"), help="inference checkpoint to write")
    ap.add_argument("--minutes", type=float, default=120.0, help="wall-clock training budget")
    ap.add_argument("--resume", action="store_true", help="continue from RUN_DIR/state.pt")
    ap.add_argument("--init", type=Path, default=None, help="fine-tune from this inference checkpoint")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch-seconds", type=float, default=400.0, help="padded audio per batch")
    ap.add_argument("--crop-share", type=float, default=0.25, help="share of batches made of short crops")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--d-model", type=int, default=144)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=float, default=2.0, help="minutes between checkpoints")
    ap.add_argument("--log-every", type=int, default=50)
    return ap


def _synth(args: argparse.Namespace) -> None:
    from workers.asr.lab.espeak import INSTALL_HINT, espeak_available

    if not espeak_available():
        raise CliError(INSTALL_HINT)
    from workers.asr.lab import synth

    for split, n, seed in (
        ("train", args.train, args.seed),
        ("gtrain", args.gtrain, args.seed),
        ("heldout", args.heldout, args.seed + 1),
        ("ood", args.ood, args.seed),
        ("general", args.general, args.seed),
    ):
        if n > 0:
            done = synth.synthesize(args.out, split, n, seed, args.workers)
            print(f"{split}: {done} clips in {args.out}", flush=True)
    if args.rebuild_assets:
        from workers.asr.checkpoint import ASSETS

        print(json.dumps(synth.make_general_assets(args.out, ASSETS)))
    if args.samples is not None:
        from workers.asr.lab.samples import write_samples

        print(f"wrote {write_samples(args.samples)} samples to {args.samples}")


def _train(args: argparse.Namespace) -> None:
    from workers.asr.lab import train

    if not any(args.corpus.glob(f"{args.split}-*.npz")):
        raise CliError(f"{args.corpus}: no {args.split} shards (run `hopline asr synth --out {args.corpus}` first)")
    print(json.dumps(train.train(args)))


def _eval(args: argparse.Namespace) -> None:
    from workers.asr.lab.evaluate import evaluate

    if not any(args.corpus.glob("heldout-*.npz")):
        raise CliError(f"{args.corpus}: no held-out shards (run `hopline asr synth --out {args.corpus}` first)")
    result = evaluate(load_recognizer(args), args.corpus, args.limit, tier=args.tier)
    if args.json:
        print(json.dumps(result))
        return
    print(f"held-out utterances: {result['n_heldout']}  device: {result['device']}  tier: {result['tier']}")
    print("condition                 beam  WER %   CER %")
    for beam in (1, 2, 4):
        print(f"16 kHz full utterance     {beam:>4}  {result[f'wer_beam{beam}']:>5}   {result[f'cer_beam{beam}']:>5}")
    print(f"8 kHz mu-law              {4:>4}  {result['wer_mulaw8k']:>5}   {result['cer_mulaw8k']:>5}")
    for beam in (1, 4):
        print(
            f"1.28 s rolling windows    {beam:>4}  {result[f'wer_rolling_beam{beam}']:>5}   "
            f"{result[f'cer_rolling_beam{beam}']:>5}"
        )
    if "wer_ood" in result:
        print(f"out-of-domain sentences   {4:>4}  {result['wer_ood']:>5}   {result['cer_ood']:>5}")
    for beam in (1, 4):
        if f"wer_general_beam{beam}" in result:
            print(
                f"general English held-out  {beam:>4}  {result[f'wer_general_beam{beam}']:>5}   "
                f"{result[f'cer_general_beam{beam}']:>5}"
            )
    oov = {k.removeprefix("oov_"): v for k, v in result.items() if k.startswith("oov_")}
    if oov:
        print("OOV % against the lexicon: " + ", ".join(f"{k} {v}" for k, v in oov.items()))


def _bench(args: argparse.Namespace) -> None:
    from workers.asr.bench import bench

    sources = _bench_sources(args.corpus)
    result = bench(load_recognizer(args), sources, runs=args.runs, tier=args.tier)
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"device {result['device']}, {result['threads']} threads, tier {result['tier']}, "
        f"1.28 s windows, {args.runs} runs"
    )
    for beam in (4, 2, 1):
        print(
            f"batch 8 beam {beam}: p50 {result[f'batch8_beam{beam}_ms_p50']} ms  "
            f"p95 {result[f'batch8_beam{beam}_ms_p95']} ms"
        )
    print(f"batch 1 beam 4: p50 {result['batch1_ms_p50']} ms  p95 {result['batch1_ms_p95']} ms")
    print(f"batch 8 model only: p50 {result['batch8_model_ms_p50']} ms")


def _bench_sources(corpus: Path | None) -> list:
    from workers.asr.audio import load_audio

    if corpus is not None:
        from workers.asr.lab.evaluate import load_eval_audio

        audios, _ = load_eval_audio(corpus, "heldout", 16)
        if audios:
            return audios
    wavs = sorted(SAMPLES.glob("*.wav"))
    if not wavs:
        raise CliError(f"{SAMPLES}: no sample WAVs to benchmark with (pass --corpus DIR)")
    return [load_audio(w) for w in wavs]


def main(argv: list[str] | None = None) -> int:
    """Run the lab alone, without the pipeline's services (e.g. on a training box)."""
    from workers.asr.cli import register as register_runtime
    from workers.asr.cli import standalone_parser

    parser, commands, bench = standalone_parser("python -m workers.asr.lab.cli")
    register_runtime(commands, bench)
    register(commands, bench)
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args, Settings()) or 0)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
