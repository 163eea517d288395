"""``hopline controller``: the degradation loop."""

from __future__ import annotations

import argparse

from pipeline.settings import Settings


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    controller = commands.add_parser(
        "controller",
        help="consume latency events and publish degradation commands until SIGTERM",
        description="Keeps sliding-window p50/p95 per latency component and walks the degradation ladder "
        "(emit 160->320 ms, window 1.28->0.96 s, beam 4->2->1, admission closed) on queue_wait and e2e p95. "
        "Thresholds: HOPLINE_CONTROLLER__*.",
    )
    controller.set_defaults(handler=_run_controller)


def _run_controller(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.control.service import run_controller

    return run_controller(settings)
