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


MAX_PROBLEMS = 20  # errors reported at once; past that, how many more there are


class Problems:
    """The input errors of one run, gathered so that all of them are reported at once
    (up to `limit`) instead of one per run."""

    def __init__(self, limit: int = MAX_PROBLEMS) -> None:
        self.limit = limit
        self.messages: list[str] = []

    def add(self, error: InputError) -> None:
        for message in error.message.splitlines():
            if message and message not in self.messages:
                self.messages.append(message)

    @contextmanager
    def gather(self) -> Iterator[None]:
        """Record an InputError raised inside the block and carry on after it."""
        try:
            yield
        except InputError as exc:
            self.add(exc)

    def check(self) -> None:
        """Raise every error gathered as one InputError, one line each."""
        if not self.messages:
            return
        shown = self.messages[: self.limit]
        if len(self.messages) > self.limit:
            shown.append(f"... and {len(self.messages) - self.limit} more error(s) of the same run")
        raise InputError("\n".join(shown))


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
