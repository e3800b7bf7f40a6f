"""The one error type users see, and its exit codes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


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


DEBUG_VARIABLE = "PACHHOOK_DEBUG"


@contextmanager
def error_handler(
    on_error: Callable[[str, int], None], *, traceback_to: TextIO | None = None
) -> Iterator[None]:
    """The one place an error becomes a line and an exit code, told to `on_error`:
    a `PachhookError` gives its own message and code; anything else is a bug, said in one
    line with code 1 (its traceback goes to `traceback_to`, when given; with
    PACHHOOK_DEBUG set it is raised instead). Ctrl-C, exits and closed pipes pass through."""
    try:
        yield
    except PachhookError as exc:
        on_error(exc.message, exc.exit_code)
    except BrokenPipeError:
        raise  # the reader went away: not a bug, and nothing to tell it
    except Exception as exc:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        if traceback_to is not None:
            import traceback

            traceback.print_exc(file=traceback_to)
        on_error(
            f"internal error: {type(exc).__name__}: {exc} "
            f"(set {DEBUG_VARIABLE}=1 to see the traceback, and please report it)",
            1,
        )
