"""`pachhook install` / `pachhook uninstall`: pachhook's raw git hooks.

Hooks go where git looks for them: `core.hooksPath` when set, else the hooks folder
of the common git dir, which every worktree shares. A hook that is already there is
kept as `<hook>.pre-pachhook` and runs first; `uninstall` puts it back.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pachhook.commands import out, repo

# pachhook.hooks.scripts.HOOK_TYPES, named here so that building the parser imports nothing.
HOOK_TYPES = ("pre-push", "post-commit", "post-merge")


def _hook_types(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--hook-type",
        "-t",
        dest="hook_types",
        action="append",
        choices=HOOK_TYPES,
        metavar="T",
        help=f"{', '.join(HOOK_TYPES)}; may be given more than once (default: {default})",
    )


def register(subparsers: Any) -> None:
    install = subparsers.add_parser(
        "install", help="install pachhook's git hooks", description=__doc__
    )
    _hook_types(install, "pre-push")
    install.add_argument(
        "--sync",
        action="store_true",
        help="pre-push updates the pipelines inside the hook, before the push, "
        "instead of after the remote has accepted it",
    )
    install.add_argument(
        "--force",
        action="store_true",
        help="when <hook>.pre-pachhook is taken, replace it with the current hook",
    )
    install.set_defaults(func=run_install)
    uninstall = subparsers.add_parser(
        "uninstall",
        help="remove pachhook's git hooks, restoring the hooks they replaced",
        description=__doc__,
    )
    _hook_types(uninstall, "all")
    uninstall.set_defaults(func=run_uninstall)


def run_install(args: argparse.Namespace) -> int:
    from pachhook.hooks.scripts import DEFAULT_HOOK_TYPES, install

    types = list(dict.fromkeys(args.hook_types or DEFAULT_HOOK_TYPES))
    options = ["--sync"] if args.sync else []
    for line in install(repo(), types, python=sys.executable, options=options, force=args.force):
        out(line)
    return 0


def run_uninstall(args: argparse.Namespace) -> int:
    from pachhook.hooks.scripts import uninstall

    lines = uninstall(repo(), list(dict.fromkeys(args.hook_types or HOOK_TYPES)))
    for line in lines or ["no pachhook hook was installed"]:
        out(line)
    return 0
