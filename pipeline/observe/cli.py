"""``hopline latency report``: the analyst's view of the latency topic."""

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


def _latency_report(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.observe.report import run_report

    return run_report(settings, since=args.since, plot=args.plot, as_json=args.json, by=args.by)
