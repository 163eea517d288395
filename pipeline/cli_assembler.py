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


def _run_assembler(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.assembler import run

    return run(settings)
