"""The one error type users see, and its exit codes."""

from __future__ import annotations


class PachhookError(Exception):
    """Something the user can act on: what happened, where, and what to do.

    `exit_code` follows the command-line contract: 2 for bad configuration,
    input or usage; 1 for a build, push or deploy that failed.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(PachhookError):
    """Bad configuration, a bad spec or Dockerfile, or bad usage: nothing was changed."""

    exit_code = 2


def located(path: str, line: int | None = None) -> str:
    """`path` or `path:line`, the prefix of every message about a file."""
    return f"{path}:{line}" if line else path


def one_line(text: str, limit: int) -> str:
    """`text` on one line of at most `limit` characters, for a message."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
