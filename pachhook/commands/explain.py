"""`pachhook explain PATH...`: which images and pipelines each path affects, and why."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pachhook.commands import config_note, env, out, source_at
from pachhook.errors import InputError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "explain", help="which images and pipelines each path affects", description=__doc__
    )
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument(
        "--rev", metavar="REF", help="explain at a commit (default: the working tree)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pachhook.plan.explain import explain_paths
    from pachhook.plan.workspace import load_workspace

    source = source_at(args.rev)
    config_note(source.repo, True if args.rev is None else None)
    workspace = load_workspace(source, env())
    root = source.repo.root.resolve()
    relative = []
    for path in args.paths:
        try:
            relative.append((Path.cwd() / path).resolve().relative_to(root).as_posix())
        except ValueError:
            raise InputError(
                f"{path}: outside the repository {root}; give a path inside it"
            ) from None
    for line in explain_paths(workspace, relative):
        out(line)
    return 0
