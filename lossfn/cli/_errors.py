"""The one exception the command line turns into a message and exit code 2."""

from __future__ import annotations

__all__ = ["CLIError"]


class CLIError(Exception):
    """Bad input to the command line: printed as one line on stderr, exit code 2."""
