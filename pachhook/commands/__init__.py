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


def add_selection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("selection (default: HEAD against its upstream's merge-base)")
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


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return value


def selection(args: argparse.Namespace) -> Selection:
    from pachhook.repo.selection import Selection

    return Selection(args.from_ref, args.to_ref, args.working_tree, args.everything)


def repo() -> Repo:
    from pachhook.repo.git import Repo

    return Repo.discover(Path.cwd())


def source_at(rev: str | None) -> Source:
    """A commit when `rev` is given, else the working tree."""
    from pachhook.repo.source import CommitSource, WorkingTreeSource

    found = repo()
    return CommitSource(found, found.resolve(rev)) if rev else WorkingTreeSource(found)


def env() -> dict[str, str]:
    return dict(os.environ)


def in_ci(environment: dict[str, str]) -> bool:
    """CI is set, as CI services set it (GitHub Actions, GitLab, ...)."""
    return environment.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def print_json(data: Any) -> None:
    out(json.dumps(data, indent=2))
