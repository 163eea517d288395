"""Errors that cross module boundaries."""


class Shutdown(KeyboardInterrupt):
    """SIGTERM: unwinds like Ctrl-C so every service runs its clean-shutdown path, then exits 0."""


class CliError(Exception):
    """A user-facing error: the CLI prints it as one line and exits with code 2."""
