"""One module per command: each has `register(subparsers)` and a `run(args) -> int`.

Shared here: the SELECTION options and the small helpers every command uses.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pachhook.repo.git import Repo
    from pachhook.repo.selection import Selection
    from pachhook.repo.source import Source
    from pachhook.run.github import CiReport


def add_selection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "selection (default: HEAD against its upstream's merge-base; in CI, as --all)"
    )
    group.add_argument(
        "--from", dest="from_ref", metavar="REF", help="compare from the merge-base with REF"
    )
    group.add_argument(
        "--to", dest="to_ref", metavar="REF", help="compare up to REF (default: HEAD)"
    )
    group.add_argument(
        "--working-tree",
        action="store_true",
        help="read the working tree: uncommitted and untracked changes too",
    )
    group.add_argument(
        "--all",
        dest="everything",
        action="store_true",
        help="every image and pipeline, decided by state",
    )


def add_ci_options(parser: argparse.ArgumentParser) -> None:
    """--config and --summary, for plan and run (what a CI job needs to say)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the configuration file, relative to the repository root "
        "(default: pachhook.toml, else pyproject.toml)",
    )
    parser.add_argument(
        "--summary",
        metavar="FILE",
        help="also append a Markdown summary to FILE (on GitHub: the job summary too)",
    )


def ci_report(args: argparse.Namespace, environment: dict[str, str]) -> CiReport | None:
    """Where results go besides the usual output (GitHub, --summary FILE); None when
    nowhere, so that a run with nothing to do imports none of it. Secrets are masked here,
    before anything else is printed."""
    github = environment.get("GITHUB_ACTIONS", "").strip().lower() == "true"
    if not github and not args.summary:
        return None
    from pachhook.run.github import CiReport

    report = CiReport.of(environment, args.summary, None)
    report.start(environment)
    return report


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return value


def selection(args: argparse.Namespace) -> Selection:
    """The SELECTION given; in CI (CI=true or GITHUB_ACTIONS=true) none given means every
    image and pipeline, decided by state (see repo/ci.py)."""
    from pachhook.repo.ci import detect
    from pachhook.repo.selection import Selection

    chosen = Selection(args.from_ref, args.to_ref, args.working_tree, args.everything)
    return chosen if chosen.explicit else chosen._replace(ci=detect(os.environ))


def repo() -> Repo:
    from pachhook.repo.git import Repo

    return Repo.discover(Path.cwd())


def source_at(rev: str | None) -> Source:
    """A commit when `rev` is given, else the working tree."""
    from pachhook.repo.source import CommitSource, WorkingTreeSource

    found = repo()
    return CommitSource(found, found.resolve(rev)) if rev else WorkingTreeSource(found)


def config_note(found: Repo, reads_working_tree: bool | None) -> None:
    """Says on standard error when the working tree's configuration is not the committed
    one that this command (or, for `None`, plan and run) reads. Nothing when the command
    reads the working tree: the file it reads is the one the user sees, and a line more
    would break the one-line rule of bad input."""
    if reads_working_tree:
        return
    from pachhook.plan.load import uncommitted_config

    note = uncommitted_config(found, reads_committed=reads_working_tree is False)
    if note:
        err(f"pachhook: {note}")


def env(args: argparse.Namespace | None = None) -> dict[str, str]:
    """The environment, with what --config names (as PACHHOOK_CONFIG)."""
    found = dict(os.environ)
    if args is not None and getattr(args, "config", None):
        from pachhook.config import CONFIG_VARIABLE

        found[CONFIG_VARIABLE] = args.config
    return found


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def print_json(data: Any) -> None:
    out(json.dumps(data, indent=2))
