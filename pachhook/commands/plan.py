"""`pachhook plan`: what a run would build and update, and why. Changes nothing."""

from __future__ import annotations

import argparse
from typing import Any

from pachhook.commands import add_selection, config_note, env, out, print_json, repo, selection


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan", help="print what a run would build and update, and why", description=__doc__
    )
    add_selection(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="list unchanged images and pipelines too, and which builder builds the images",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pachhook.plan.load import plan_selection
    from pachhook.run.report import plan_lines

    environment = env()
    found = repo()
    config_note(found, args.working_tree)
    planned = plan_selection(found, selection(args), environment)
    if args.json:
        print_json(planned.plan.to_json())
    else:
        for line in plan_lines(planned.plan, verbose=args.verbose):
            out(line)
        if args.verbose and planned.workspace is not None:
            from pachhook.docker.buildkit import describe

            for line in describe(planned.workspace.images, environment):
                out(line)
    return 0
