"""`pachhook init`: write pachhook.toml from the Dockerfiles and pipeline specs found."""

from __future__ import annotations

import argparse
from typing import Any

from pachhook.commands import env, out, repo
from pachhook.errors import InputError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "init", help="write pachhook.toml from what the repository holds", description=__doc__
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing pachhook.toml")
    parser.add_argument(
        "--stdout", action="store_true", help="print the config instead of writing it"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pachhook.config import has_tool_table
    from pachhook.plan.discover import discover_config

    found = repo()
    target = found.root / "pachhook.toml"
    text, summary = discover_config(found, env())
    if args.stdout:
        out(text.rstrip("\n"))
        return 0
    if target.exists() and not args.force:
        raise InputError(
            f"{target}: already exists; edit it, or run pachhook init --force to replace it"
        )
    pyproject = found.root / "pyproject.toml"
    if (
        not args.force
        and pyproject.exists()
        and has_tool_table(pyproject.read_text(errors="replace"))
    ):
        raise InputError(
            f"{pyproject}: already holds [tool.pachhook]; edit it, or run pachhook init --force "
            "to write pachhook.toml, which then takes precedence"
        )
    target.write_text(text)
    for line in summary:
        out(line)
    out(f"wrote {target}")
    if any(line.endswith("(name to be set)") for line in summary):
        out("then: set the image names marked (name to be set) in pachhook.toml")
    # plan and run read the committed configuration (hooks and CI build commits).
    out(
        'next: git add pachhook.toml && git commit -m "pachhook configuration", '
        "then pachhook plan --all"
    )
    return 0
