"""`pachhook run`: plan, then build, push and verify the changed images and apply the pipelines."""

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
    positive,
    repo,
    selection,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run", help="plan, build, push, verify and apply", description=__doc__
    )
    add_selection(parser)
    parser.add_argument(
        "--dry-run", action="store_true", help="plan, but build, push and apply nothing"
    )
    parser.add_argument(
        "--no-push",
        action="store_true",
        help="build the images but push nothing (and so deploy nothing)",
    )
    parser.add_argument(
        "--no-deploy", action="store_true", help="build, push and verify images; update no pipeline"
    )
    parser.add_argument(
        "--reprocess",
        action="store_true",
        default=None,
        help="reprocess all data of updated pipelines",
    )
    parser.add_argument(
        "--jobs",
        type=positive,
        metavar="N",
        help="images built at once (default: jobs in the config, else 2)",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete the pipelines pachhook applied from this repository whose spec is gone "
        "(downstream first; their output repos are kept)",
    )
    parser.add_argument(
        "--no-restore-drift",
        dest="restore_drift",
        action="store_false",
        help="leave pipelines changed outside pachhook as they are (exit 1 when CI is set)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the plan and the run's record as JSON"
    )
    add_ci_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pachhook.config import in_ci
    from pachhook.errors import PachhookError
    from pachhook.run.executor import RunOptions
    from pachhook.run.runner import run_selection

    options = RunOptions(
        dry_run=args.dry_run,
        push=not args.no_push,
        deploy=not args.no_deploy,
        reprocess=args.reprocess,
        jobs=args.jobs,
        prune=args.prune,
        restore_drift=args.restore_drift,
    )
    environment = env(args)
    report = ci_report(args, environment)
    try:
        found = repo()
        report = report.at(found.root) if report else None
        config_note(found, args.working_tree)
        record = run_selection(
            found,
            selection(args),
            options,
            environment,
            trigger="cli",
            as_json=args.json,
            ci=report,
        )
    except PachhookError as exc:
        if report:
            report.failed("run", exc.message)
        raise
    if not args.restore_drift and record.left_drifted and in_ci(environment):
        # Left alone on purpose, but a CI job must not pass over a cluster that differs.
        err(
            "pachhook: changed outside pachhook and left as they are: "
            + ", ".join(record.left_drifted)
        )
        return 1
    return record.exit_code
