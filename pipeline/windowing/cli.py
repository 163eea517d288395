"""``hopline windower`` and ``hopline bench windower``: frames -> 160 ms hops over a rolling window."""

from __future__ import annotations

import argparse
import json

from pipeline.errors import CliError
from pipeline.settings import Settings


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    windower = commands.add_parser(
        "windower",
        help="run the hop windower (faust agent: frames -> 160 ms hops) until SIGTERM/Ctrl-C",
    )
    windower.set_defaults(handler=_windower)

    bench_windower = bench.add_parser(
        "windower",
        help="N real-time sessions through a real windower process on the embedded broker",
        description="Starts an embedded broker (unless --bootstrap-servers is given), a windower process and "
        "N paced sessions; prints frames/s, hop emission latency (ready -> published) and CPU per session.",
    )
    bench_windower.add_argument("--sessions", type=int, default=100)
    bench_windower.add_argument("--seconds", type=float, default=20.0, help="measured audio per session")
    bench_windower.add_argument("--json", action="store_true", help="print one JSON object")
    bench_windower.set_defaults(handler=_bench_windower)


def _windower(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.windowing.service import run_windower

    return run_windower(settings)


def _bench_windower(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.windowing.bench import run_bench

    if args.sessions < 1 or args.seconds <= 0:
        raise CliError("--sessions must be at least 1 and --seconds positive")
    result = run_bench(settings, args.sessions, args.seconds, external_broker=args.bootstrap_servers is not None)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:36s} {value}")
    return 0
