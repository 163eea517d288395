"""Errors that cross module boundaries."""


class CliError(Exception):
    """A user-facing error: the CLI prints it as one line and exits with code 2."""
