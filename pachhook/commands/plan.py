"""`pachhook plan`: what a run would build and update, and why. Changes nothing.

When something is to be decided, the registry and the cluster are read (read-only) first,
so the actions say what a run will do; `--offline` reads neither."""

from __future__ import annotations

import argparse
from typing import Any

from pachhook.commands import (
    add_ci_options,
    add_selection,
    ci_report,
    config_note,
    env,
    err,
    out,
    print_json,
    repo,
    selection,
)

DETAILED_EXITCODE = "--detailed-exitcode"
CHANGES_PLANNED = 2  # with --detailed-exitcode, as `terraform plan` has it


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan", help="print what a run would build and update, and why", description=__doc__
    )
    add_selection(parser)
    parser.add_argument(
        "--format",
        choices=("text", "json", "markdown"),
        default="text",
        help="text (default), json (one object), or markdown (as the CI job summary)",
    )
    parser.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )
    parser.add_argument(
        "--offline",
        action="store_true",
        help="read neither the registry nor the cluster: the actions are what a run does "
        "if they differ",
    )
    parser.add_argument(
        DETAILED_EXITCODE,
        dest="detailed_exitcode",
        action="store_true",
        help="exit 0 when there is nothing to do, 2 when changes are planned, 1 on any error",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="list unchanged images and pipelines too, and which builder builds the images",
    )
    add_ci_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pachhook.errors import PachhookError
    from pachhook.run.report import plan_lines
    from pachhook.run.runner import plan_with_state

    environment = env(args)
    report = ci_report(args, environment)
    try:
        found = repo()
        report = report.at(found.root) if report else None
        config_note(found, args.working_tree)
        planned = plan_with_state(found, selection(args), environment, offline=args.offline)
    except PachhookError as exc:
        if report:
            report.failed("plan", exc.message)
        if args.detailed_exitcode:
            exc.exit_code = 1  # 2 means "changes planned" here
        raise
    plan = planned.plan
    for note in plan.unread:
        err(f"pachhook: {note}; the plan below does not know it")
    if args.format == "json":
        print_json(plan.to_json())
    elif args.format == "markdown":
        from pachhook.run.summary import plan_markdown

        out(plan_markdown(plan.to_json()).rstrip("\n"))
    else:
        for line in plan_lines(plan, verbose=args.verbose):
            out(line)
        if args.verbose and planned.workspace is not None:
            from pachhook.docker.buildkit import describe

            for line in describe(planned.workspace.images, environment):
                out(line)
    if report:
        report.plan_done(plan)
    changes = plan.evaluated and not plan.nothing_to_do
    return CHANGES_PLANNED if args.detailed_exitcode and changes else 0
