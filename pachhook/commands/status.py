"""`pachhook status`: recent runs, pending post-push deploys, last errors."""

from __future__ import annotations

import argparse
from typing import Any

from pachhook.commands import config_note, out, positive, print_json, repo


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status", help="recent runs, pending post-push deploys, last errors", description=__doc__
    )
    parser.add_argument(
        "-n",
        dest="limit",
        type=positive,
        default=10,
        metavar="N",
        help="show the N most recent entries (default: 10)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"entries": [...], "pending": [...], "interrupted": [...]}, newest first',
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pachhook.run import ledger
    from pachhook.run.report import interrupted_entries, pending_entries, status_lines

    found = repo()
    config_note(found, None)
    entries = ledger.read(found.state_dir)
    recent = list(reversed(entries[-args.limit :]))
    pending = pending_entries(entries)
    if args.json:
        interrupted = interrupted_entries(entries)
        print_json({"entries": recent, "pending": pending, "interrupted": interrupted})
        return 0
    if not entries:
        out(f"nothing recorded yet in {found.state_dir / ledger.RUNS}")
        return 0
    for line in status_lines(recent, pending, entries):
        out(line)
    return 0
