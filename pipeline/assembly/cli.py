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


def _bench_assembler(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from pipeline.assembly.bench import format_report, run_bench
    from pipeline.errors import CliError

    if args.sessions < 1 or args.duration <= 0:
        raise CliError("--sessions must be at least 1 and --duration above 0")
    result = run_bench(settings, sessions=args.sessions, duration_s=args.duration)
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _run_assembler(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.assembly.service import run

    return run(settings)
