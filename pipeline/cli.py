"""``hopline``: one command for every service, tool and benchmark.

Each role registers its own sub-commands from a light module (heavy imports such as torch
and faust happen inside the handlers), so ``hopline --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from pipeline.errors import CliError, Shutdown
from pipeline.settings import Settings

#: Modules exposing ``register(commands, bench)``; each adds its role's sub-commands.
COMMAND_MODULES = (
    "pipeline.cli_infra",
    "pipeline.cli_ingress",
    "pipeline.cli_control",
    "pipeline.cli_assembler",
    "workers.cli",
    "workers.asr.cli",
    "pipeline.cli_demo",
)

Handler = Callable[[argparse.Namespace, Settings], int | None]


class _Parser(argparse.ArgumentParser):
    """Bad arguments end in one line on stderr, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"hopline: error: {message} (see '{self.prog} --help')\n")


def help_handler(parser: argparse.ArgumentParser) -> Handler:
    """For command groups run without a sub-command: show what they offer."""

    def show_help(args: argparse.Namespace, settings: Settings) -> int:
        parser.print_help()
        return 2

    return show_help


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    bench_parser = commands.add_parser("bench", help="benchmarks that print figures (not tests)")
    bench = bench_parser.add_subparsers(dest="bench", metavar="BENCHMARK", parser_class=_Parser)
    bench_parser.set_defaults(handler=help_handler(bench_parser))
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(commands, bench)
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
            settings.kafka.bootstrap_servers = args.bootstrap_servers
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
