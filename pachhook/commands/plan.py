"""`pachhook plan`: what a run would build and update, and why. Changes nothing.

When something is to be decided, the registry and the cluster are read (read-only) first,
so the actions are what a run will do; --offline reads neither."""

from __future__ import annotations

import argparse
from typing import Any

from pachhook.commands import add_selection, env, err, out, print_json, repo, selection


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan", help="print what a run would build and update, and why", description=__doc__
    )
    add_selection(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="read neither the registry nor the cluster: the actions are what a run does "
        "if they differ",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="list unchanged images and pipelines too"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pachhook.run.report import plan_lines
    from pachhook.run.runner import plan_with_state

    planned = plan_with_state(repo(), selection(args), env(), offline=args.offline)
    for note in planned.plan.notes:
        err(f"pachhook: {note}; the plan below does not know it")
    if args.json:
        print_json(planned.plan.to_json())
    else:
        for line in plan_lines(planned.plan, verbose=args.verbose):
            out(line)
    return 0
