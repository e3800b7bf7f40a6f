"""`pachhook diff`: the spec each pipeline runs on the cluster against the one the
repository would apply (images resolved to the tags a run would use), field by field.
Exit 0 when they are the same, 1 when they differ, 2 on an error."""

from __future__ import annotations

import argparse
from typing import Any

from pachhook.commands import env, err, out, repo


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="the cluster's pipeline specs against the repository's, field by field",
        description=__doc__,
    )
    parser.add_argument(
        "pipelines",
        nargs="*",
        metavar="PIPELINE",
        help="PIPELINE or PROJECT/PIPELINE (default: every pipeline of the repository)",
    )
    parser.add_argument(
        "--working-tree",
        action="store_true",
        help="the repository's specs as in the working tree (default: HEAD)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pachhook.errors import PachhookError
    from pachhook.plan.diff import differ, text
    from pachhook.run.runner import diff_pipelines

    try:
        found = diff_pipelines(repo(), args.pipelines, env(), working_tree=args.working_tree)
    except PachhookError as exc:
        # As diff(1): 2 is trouble, whatever kind.
        err(f"pachhook: {exc.message}")
        return 2
    for line in text(found):
        out(line)
    return 1 if differ(found) else 0
