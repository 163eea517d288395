"""What every stage's CLI module shares: the parser class and the handler contract.

A stage's ``cli`` module exposes ``register(commands, bench)``; ``pipeline.cli`` finds those through
the ``hopline.commands`` entry points (pyproject.toml), so the composition root imports no stage and
no stage imports the composition root.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pipeline.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int | None]


class Parser(argparse.ArgumentParser):
    """Bad arguments end in one line on stderr, not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"hopline: error: {message} (see '{self.prog} --help')\n")


def help_handler(parser: argparse.ArgumentParser) -> Handler:
    """For command groups run without a sub-command: show what they offer."""

    def show_help(args: argparse.Namespace, settings: Settings) -> int:
        parser.print_help()
        return 2

    return show_help
