"""The command line: thin commands over the planner and executor."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pachhook.errors import InputError, PachhookError

F = TypeVar("F", bound=Callable[..., Any])


def selection_options(func: F) -> F:
    options = [
        click.option(
            "--from", "from_ref", metavar="REF", help="Compare from the merge-base with REF."
        ),
        click.option("--to", "to_ref", metavar="REF", help="Compare up to REF (default: HEAD)."),
        click.option(
            "--working-tree",
            is_flag=True,
            help="Read the working tree: uncommitted and untracked changes too.",
        ),
        click.option(
            "--all", "everything", is_flag=True, help="Every image and pipeline, decided by state."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _selection(
    from_ref: str | None, to_ref: str | None, working_tree: bool, everything: bool
) -> Any:
    from pachhook.selection import Selection

    return Selection(from_ref, to_ref, working_tree, everything)


def _repo() -> Any:
    from pachhook.git import Repo

    return Repo.discover(Path.cwd())


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pachhook")
def cli() -> None:
    """Rebuild only the images that changed; update only the Pachyderm pipelines that use them.

    With no SELECTION, plan and run compare HEAD with its upstream's merge-base.
    """


@cli.command()
@selection_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON object.")
@click.option("-v", "--verbose", is_flag=True, help="List unchanged images and pipelines too.")
def plan(
    from_ref: str | None,
    to_ref: str | None,
    working_tree: bool,
    everything: bool,
    as_json: bool,
    verbose: bool,
) -> None:
    """Print what a run would build and update, and why. Changes nothing."""
    from pachhook.planning import plan_selection
    from pachhook.report import plan_lines

    planned = plan_selection(
        _repo(), _selection(from_ref, to_ref, working_tree, everything), os.environ
    )
    if as_json:
        echo_json(planned.plan.to_json())
    else:
        for line in plan_lines(planned.plan, verbose=verbose):
            click.echo(line)


@cli.command()
@selection_options
@click.option(
    "--dry-run", is_flag=True, help="Plan and reconcile, but build, push and apply nothing."
)
@click.option(
    "--no-push", is_flag=True, help="Build the images but push nothing (and so deploy nothing)."
)
@click.option(
    "--no-deploy", is_flag=True, help="Build, push and verify images; update no pipeline."
)
@click.option(
    "--reprocess", is_flag=True, default=None, help="Reprocess all data of updated pipelines."
)
@click.option("--jobs", type=click.IntRange(min=1), metavar="N", help="Images built at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's record as JSON.")
def run(
    from_ref: str | None,
    to_ref: str | None,
    working_tree: bool,
    everything: bool,
    dry_run: bool,
    no_push: bool,
    no_deploy: bool,
    reprocess: bool | None,
    jobs: int | None,
    as_json: bool,
) -> None:
    """Plan, then build, push and verify the changed images and apply the pipelines."""
    from pachhook.execution import run_selection
    from pachhook.run import RunOptions

    options = RunOptions(
        dry_run=dry_run, push=not no_push, deploy=not no_deploy, reprocess=reprocess, jobs=jobs
    )
    record = run_selection(
        _repo(),
        _selection(from_ref, to_ref, working_tree, everything),
        options,
        os.environ,
        trigger="cli",
        as_json=as_json,
    )
    sys.exit(record.exit_code)


def _workspace_source(rev: str | None) -> Any:
    from pachhook.source import CommitSource, WorkingTreeSource

    repo = _repo()
    return CommitSource(repo, repo.resolve(rev)) if rev else WorkingTreeSource(repo)


@cli.command()
@click.argument("image")
@click.option(
    "--rev", metavar="REF", help="Read the image's files at a commit (default: the working tree)."
)
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"image": NAME, "inputs": [PATH, ...]}.'
)
def deps(image: str, rev: str | None, as_json: bool) -> None:
    """The input files of one IMAGE, one per line, relative to the repository root."""
    from pachhook.config import normalize_repository
    from pachhook.workspace import config_of, image_state

    source = _workspace_source(rev)
    config = config_of(source, os.environ)
    wanted = normalize_repository(image)
    for index, candidate in enumerate(config.images):
        if candidate.name == image or candidate.repository == wanted:
            state = image_state(candidate, config, source, index, frozenset())
            break
    else:
        names = ", ".join(i.name for i in config.images) or "none configured"
        raise InputError(f"deps: no image named {image!r} (images: {names}); use a configured name")
    if as_json:
        echo_json({"image": state.name, "inputs": list(state.inputs)})
    else:
        for path in state.inputs:
            click.echo(path)


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--rev", metavar="REF", help="Explain at a commit (default: the working tree).")
def explain(paths: tuple[str, ...], rev: str | None) -> None:
    """Which images and pipelines each PATH affects, and why."""
    from pachhook.explain import explain_paths
    from pachhook.workspace import load_workspace

    source = _workspace_source(rev)
    workspace = load_workspace(source, os.environ)
    root = source.repo.root
    relative = []
    for path in paths:
        full = (
            (Path.cwd() / path).resolve() if not Path(path).is_absolute() else Path(path).resolve()
        )
        try:
            relative.append(full.relative_to(root.resolve()).as_posix())
        except ValueError:
            raise InputError(
                f"{path}: outside the repository {root}; give a path inside it"
            ) from None
    for line in explain_paths(workspace, relative):
        click.echo(line)


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing pachhook.toml.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print the config instead of writing it.")
def init(force: bool, to_stdout: bool) -> None:
    """Write pachhook.toml from the Dockerfiles and pipeline specs found in the repository."""
    from pachhook.init import discover_config

    repo = _repo()
    target = repo.root / "pachhook.toml"
    text, summary = discover_config(repo, os.environ)
    if to_stdout:
        click.echo(text, nl=False)
        return
    if target.exists() and not force:
        raise InputError(
            f"{target}: already exists; edit it, or run pachhook init --force to replace it"
        )
    target.write_text(text)
    for line in summary:
        click.echo(line)
    click.echo(f"wrote {target}")


@cli.command()
@click.option(
    "-n",
    "limit",
    type=click.IntRange(min=1),
    default=10,
    metavar="N",
    show_default=True,
    help="Show the N most recent entries.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"entries": [...], "pending": [...]}, newest entry first.',
)
def status(limit: int, as_json: bool) -> None:
    """Recent runs and other ledger entries, pending post-push deploys, last errors."""
    from pachhook import ledger
    from pachhook.report import pending_entries, status_lines

    repo = _repo()
    entries = ledger.read(repo.state_dir)
    recent = list(reversed(entries[-limit:]))
    pending = pending_entries(entries)
    if as_json:
        echo_json({"entries": recent, "pending": pending})
        return
    if not entries:
        click.echo(f"nothing recorded yet in {repo.state_dir / ledger.RUNS}")
        return
    for line in status_lines(recent, pending):
        click.echo(line)


def main(argv: list[str] | None = None) -> None:
    """Entry point: the one place errors become messages and exit codes."""
    try:
        code = cli.main(args=argv, prog_name="pachhook", standalone_mode=False)
    except PachhookError as exc:
        click.echo(f"pachhook: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("pachhook: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except KeyboardInterrupt:
        click.echo("pachhook: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as exc:  # a bug: say so in one line, keep the traceback for the report
        if os.environ.get("PACHHOOK_DEBUG"):
            raise
        click.echo(
            f"pachhook: internal error: {type(exc).__name__}: {exc} "
            "(set PACHHOOK_DEBUG=1 to see the traceback, and please report it)",
            err=True,
        )
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
