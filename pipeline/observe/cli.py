"""``hopline latency report`` (the analyst's view of the latency topic) and ``hopline bench broker``."""

from __future__ import annotations

import argparse

from pipeline.command import help_handler
from pipeline.settings import Settings


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    latency = commands.add_parser("latency", help="analyse the latency topic")
    actions = latency.add_subparsers(dest="latency_action", metavar="ACTION")
    report = actions.add_parser(
        "report",
        help="p50/p95 per component, batch sizes, the p95 driver and the controller's decisions",
        description="Reads the latency and control topics from the beginning, keeps what happened within "
        "--since, and prints the per-component breakdown.",
    )
    report.add_argument("--since", default=None, help="only the last SPAN, e.g. 90s, 10m, 2h (default: everything)")
    report.add_argument("--plot", default=None, metavar="OUT.png", help="draw the breakdown over time to this file")
    report.add_argument(
        "--by",
        choices=("worker", "session", "level"),
        default=None,
        help="also break the figures down per worker, session or degradation level",
    )
    report.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    report.set_defaults(handler=_latency_report)
    latency.set_defaults(handler=help_handler(latency))

    bench_broker = bench.add_parser(
        "broker",
        help="the pipeline's produce pattern for N sessions without its compute: how long the broker holds",
        description="Starts an embedded broker (unless --bootstrap-servers is given) and streams N sessions' "
        "traffic in real time (frames every 20 ms; hops, state changelogs, hypotheses, transcripts and latency "
        "events every 160 ms) with one reader per topic; prints produce -> consume p50/p95 per 10 s and holds_s, "
        "the seconds until p95 first exceeds --limit-ms.",
    )
    bench_broker.add_argument("--sessions", type=int, default=10, help="concurrent sessions (default 10)")
    bench_broker.add_argument("--seconds", type=float, default=120.0, help="streaming time (default 120)")
    bench_broker.add_argument("--limit-ms", type=float, default=50.0, help="p95 transport time that ends 'holds'")
    bench_broker.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions per topic (default: HOPLINE_BROKER__TOPIC_PARTITIONS on the embedded broker, "
        "HOPLINE_TOPICS__PARTITIONS on --bootstrap-servers)",
    )
    bench_broker.add_argument("--json", action="store_true", help="print one JSON object")
    bench_broker.set_defaults(handler=_bench_broker)


def _latency_report(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.observe.report import run_report

    return run_report(settings, since=args.since, plot=args.plot, as_json=args.json, by=args.by)


def _bench_broker(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from pipeline.errors import CliError
    from pipeline.observe.broker_bench import format_report, run_bench

    if args.sessions < 1 or args.seconds <= 0 or args.limit_ms <= 0:
        raise CliError("--sessions must be at least 1, --seconds and --limit-ms above 0")
    if args.partitions is not None:
        settings = settings.override(
            topics={"partitions": args.partitions}, broker={"topic_partitions": args.partitions}
        )
    result = run_bench(
        settings, args.sessions, args.seconds, args.limit_ms, external_broker=args.bootstrap_servers is not None
    )
    print(json.dumps(result) if args.json else format_report(result))
    return 0
