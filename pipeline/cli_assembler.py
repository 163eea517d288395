"""``hopline assembler``: the transcript assembler service (heavy imports inside the handler)."""

from __future__ import annotations

import argparse

from pipeline.settings import Settings


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    assembler = commands.add_parser(
        "assembler",
        help="stitch hypotheses into partial/final transcripts and publish per-hop latency events",
        description="Consumes <prefix>.hypotheses, publishes <prefix>.transcripts (partials at most every "
        "emit interval, finals at endpoints) and one <prefix>.latency event per hop. Follows the control "
        "topic's emit interval. Runs until Ctrl-C/SIGTERM. Settings: HOPLINE_ASSEMBLER__*.",
    )
    assembler.set_defaults(handler=_run_assembler)

    bench_assembler = bench.add_parser(
        "assembler",
        help="real-time synthetic hypotheses through a real assembler on the embedded broker: post latency",
        description="Starts the embedded broker and an assembler, feeds N sessions of synthetic hypotheses "
        "(one per session per hop) in real time and prints the post component (hypothesis produced -> "
        "transcript published) p50/p95, plus the stitching cost per hypothesis without Kafka.",
    )
    bench_assembler.add_argument("--sessions", type=int, default=10, help="concurrent sessions (default 10)")
    bench_assembler.add_argument("--duration", type=float, default=10.0, help="seconds of hops (default 10)")
    bench_assembler.add_argument("--json", action="store_true", help="print one JSON object")
    bench_assembler.set_defaults(handler=_bench_assembler)

    bench_stitching = bench.add_parser(
        "stitching",
        help="real recognizer on rolling windows of the bundled samples: stitched WER vs whole-utterance WER",
        description="Cuts each sample into the windower's rolling windows, recognizes every window, stitches "
        "the hypotheses like the assembler and compares the finals' WER with one decode of the whole "
        "utterance; prints how long (in audio time) after a word ends it is first shown and committed. "
        "The window is HOPLINE_AUDIO__WINDOW_SECS (1.28; 0.96 is the controller's shrunk window).",
    )
    bench_stitching.add_argument("--samples", type=int, default=5, help="how many bundled samples (default 5)")
    bench_stitching.add_argument("--beam", type=int, choices=(1, 2, 4), default=4, help="beam width (default 4)")
    bench_stitching.add_argument("--json", action="store_true", help="print one JSON object")
    bench_stitching.set_defaults(handler=_bench_stitching)


def _bench_assembler(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from pipeline.assembler_bench import format_report, run_bench
    from pipeline.errors import CliError

    if args.sessions < 1 or args.duration <= 0:
        raise CliError("--sessions must be at least 1 and --duration above 0")
    result = run_bench(settings, sessions=args.sessions, duration_s=args.duration)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _bench_stitching(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from pipeline.errors import CliError
    from pipeline.stitching_bench import format_report, run_bench

    if args.samples < 1:
        raise CliError("--samples must be at least 1")
    summary, results = run_bench(settings, samples=args.samples, beam=args.beam)
    print(json.dumps(summary) if args.json else format_report(summary, results))
    return 0


def _run_assembler(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.assembler import run

    return run(settings)
