"""``hopline``: one command for every service, tool and benchmark.

Each stage registers its own sub-commands from its light ``cli`` module (heavy imports such as
torch and faust happen inside the handlers), so ``hopline --help`` stays instant. The stages are
found through the ``hopline.commands`` entry points declared in pyproject.toml.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from pydantic import ValidationError

from pipeline.command import Handler, Parser, help_handler
from pipeline.errors import CliError, Shutdown
from pipeline.settings import Settings

#: Entry-point group of the stage CLIs: each names a ``register(commands, bench)`` function.
COMMAND_GROUP = "hopline.commands"
#: ``hopline --help`` lists the stages in data-flow order; a stage not named here comes last.
STAGE_ORDER = (
    "kafka",
    "ingress",
    "gateway",
    "windowing",
    "worker",
    "asr",
    "asr-lab",
    "assembly",
    "control",
    "observe",
    "demo",
)


def _stage_rank(name: str) -> tuple[int, str]:
    return (STAGE_ORDER.index(name) if name in STAGE_ORDER else len(STAGE_ORDER), name)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="hopline",
        description="Kafka streaming speech recognition under a p95 latency SLA. "
        "Settings come from HOPLINE_* environment variables (see pipeline/settings.py).",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default: HOPLINE_LOG_LEVEL or INFO)")
    parser.add_argument(
        "--bootstrap-servers",
        default=None,
        help="Kafka bootstrap servers (default: HOPLINE_KAFKA__BOOTSTRAP_SERVERS)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    bench_parser = commands.add_parser("bench", help="benchmarks that print figures (not tests)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK", parser_class=Parser)
    bench_parser.set_defaults(handler=help_handler(bench_parser))
    for command in sorted(entry_points(group=COMMAND_GROUP), key=lambda ep: _stage_rank(ep.name)):
        command.load()(commands, bench)
    return parser


def _terminate_on_sigterm() -> None:
    def handler(signum: int, frame: object) -> None:
        raise Shutdown

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        settings = Settings()
        if args.bootstrap_servers:
            settings = settings.override(kafka={"bootstrap_servers": args.bootstrap_servers})
        logging.basicConfig(
            level=(args.log_level or settings.log_level).upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        _terminate_on_sigterm()
        return handler(args, settings) or 0
    except CliError as exc:
        print(f"hopline: error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"hopline: error: invalid setting {where}: {first['msg']}", file=sys.stderr)
        return 2
    except Shutdown:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
