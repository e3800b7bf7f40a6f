"""The command line: thin commands over the planner and executor.

argparse rather than a CLI library: a git hook with nothing to do must return in a
few tens of milliseconds, and a CLI library's import alone costs about that.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from pachhook import __version__
from pachhook.errors import InputError, error_handler

# Each names a module of pachhook.commands; the order is the order of --help.
COMMANDS = ("plan", "run", "deps", "explain", "status", "init", "install", "hook", "watch")

DESCRIPTION = """\
Rebuild only the images that changed; update only the Pachyderm pipelines that use them.

Exit codes: 0 done or nothing to do; 1 a build, push or deploy failed;
2 bad configuration, bad input or bad usage."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, like every other error, and exit 2 through the one error path.
        command = self.prog.partition(" ")[2]
        raise InputError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def parser() -> argparse.ArgumentParser:
    top = Parser(
        prog="pachhook",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"pachhook {__version__}")
    subparsers = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"pachhook.commands.{name}").register(subparsers)
    return top


def dispatch(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not getattr(args, "func", None):
        parser().print_help()
        return 2
    return int(args.func(args))


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: errors become one line on standard error and an exit code."""
    code = 0

    def failed(message: str, exit_code: int) -> None:
        nonlocal code
        sys.stdout.flush()
        sys.stderr.write(f"pachhook: {message}\n")
        code = exit_code

    try:
        with error_handler(failed):
            code = dispatch(argv)
    except KeyboardInterrupt:
        sys.stderr.write("pachhook: interrupted\n")
        code = 130
    except BrokenPipeError:
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
