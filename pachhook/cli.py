"""The command line: thin commands over the planner and executor.

argparse rather than a CLI library: a git hook with nothing to do must return in a
few tens of milliseconds, and a CLI library's import alone costs about that.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, NoReturn

from pachhook import __version__
from pachhook.errors import InputError, error_handler

# Each names a module of pachhook.commands; the order is the order of --help.
COMMANDS = ("plan", "run", "diff", "deps", "explain", "status", "init", "install", "hook", "watch")
MODULE_OF = {"uninstall": "install"}  # commands registered by another command's module

DESCRIPTION = """\
Rebuild only the images that changed; update only the Pachyderm pipelines that use them.

Exit codes: 0 done or nothing to do; 1 a build, push or deploy failed;
2 bad configuration, bad input or bad usage."""


class Parser(argparse.ArgumentParser):
    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for every add_argument, and its default one imports
        # shutil (and the compression modules) to ask for the terminal's width.
        make: Any = self.formatter_class  # every HelpFormatter takes a width
        formatter: argparse.HelpFormatter = make(prog=self.prog, width=_columns() - 2)
        return formatter

    def error(self, message: str) -> NoReturn:
        # One line, like every other error, and exit 2 through the one error path.
        command = self.prog.partition(" ")[2]
        raise InputError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def _columns() -> int:
    """The terminal's width, as shutil.get_terminal_size finds it (COLUMNS, then the
    terminal of standard output, else 80)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line. Given the arguments, only the named command's parser is built:
    a git hook pays for its own options, not for every command's."""
    top = Parser(
        prog="pachhook",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=f"pachhook {__version__}")
    # Naming prog spares argparse a help formatter (and its terminal-size imports) here.
    subparsers = top.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=Parser, prog="pachhook"
    )
    named = next((a for a in argv or () if not a.startswith("-")), None)
    module = MODULE_OF.get(named or "", named)
    for name in (module,) if module in COMMANDS else COMMANDS:
        importlib.import_module(f"pachhook.commands.{name}").register(subparsers)
    return top


def dispatch(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parser(argv).parse_args(argv)
    except InputError as exc:
        if "--detailed-exitcode" in argv:
            exc.exit_code = 1  # there, 2 means "changes planned"
        raise
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
        # Several errors of one run (errors.Problems) come one per line.
        sys.stderr.write("".join(f"pachhook: {line}\n" for line in message.splitlines() or [""]))
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
