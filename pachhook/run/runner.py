"""One run, whatever triggered it: plan, execute with the real adapters, record, report."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Mapping

from pachhook.errors import InputError
from pachhook.plan.load import plan_selection
from pachhook.plan.planner import Planned
from pachhook.repo.git import Repo
from pachhook.repo.selection import Selection
from pachhook.repo.settings import Settings
from pachhook.run import ledger
from pachhook.run.executor import Cluster, Images, RunOptions, RunRecord, execute, new_run_id
from pachhook.run.lock import run_lock
from pachhook.run.progress import BuildProgress
from pachhook.run.report import outcome_line, plan_lines, record_lines


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def run_selection(
    repo: Repo,
    selection: Selection,
    options: RunOptions,
    env: Mapping[str, str],
    *,
    trigger: str,
    as_json: bool = False,
) -> RunRecord:
    planned = plan_selection(repo, selection, env)
    return run_planned(repo, planned, options, env, trigger=trigger, as_json=as_json)


def run_planned(
    repo: Repo,
    planned: Planned,
    options: RunOptions,
    env: Mapping[str, str],
    *,
    trigger: str,
    as_json: bool = False,
) -> RunRecord:
    config = planned.workspace.config if planned.workspace else None
    # A run with nothing to do neither waits nor takes the lock, nor reads git config.
    busy = planned.plan.evaluated and not planned.plan.nothing_to_do and not options.dry_run
    settings = Settings.load(env, repo.root) if busy else Settings.from_env(env)
    if busy:
        preflight(planned, options, env, settings)
    run_id = new_run_id()

    def say(line: str) -> None:
        if not as_json:
            _err(line)

    # Live progress only for a person at a terminal; hooks and CI get plain lines.
    progress = BuildProgress.for_run(
        say, interactive=trigger == "cli" and not as_json, stream=sys.stderr
    )

    def images() -> Images:
        from pachhook.docker.images import DockerImages

        assert config is not None
        return DockerImages.from_environment(
            repo, config, env, progress, ledger.logs_dir(repo.state_dir), settings
        )

    def cluster() -> Cluster:
        from pachhook.pachyderm.cluster import PachydermCluster

        assert config is not None
        journal = ledger.TransactionJournal(repo.state_dir, run_id, say=progress.message)
        return PachydermCluster.connect(config, env, settings, log=journal)

    if not as_json:
        for line in plan_lines(planned.plan):
            _out(line)
    # One run at a time per repository (hooks, post-push deploys, the watcher). What the
    # plan narrowed is decided again by state once the lock is held, so waiting loses
    # nothing; a run waits `lock_timeout` seconds at most.
    guard = (
        run_lock(
            repo.state_dir,
            f"{trigger} run of {planned.resolved.source.label}",
            timeout=settings.lock_timeout,
            on_wait=lambda message: _err(
                f"pachhook: {message}; giving up after {settings.lock_timeout:g}s "
                "(PACHHOOK_LOCK_TIMEOUT)"
            ),
        )
        if busy
        else contextlib.nullcontext()
    )
    try:
        with guard:
            if busy:
                # Written first: a run killed outright (SIGKILL, a reboot) still shows.
                ledger.append(repo.state_dir, _running(run_id, trigger, planned))
            record = execute(
                planned,
                options,
                trigger=trigger,
                images=images,
                cluster=cluster,
                progress=progress.message,
                run_id=run_id,
            )
    finally:
        progress.close()
    progress.summary(record.images)
    if planned.plan.evaluated and not options.dry_run:
        state = "failed" if record.error else "done"
        ledger.append(repo.state_dir, {"kind": "run", "state": state, **record.to_json()})
    if as_json:
        _out(json.dumps({"plan": planned.plan.to_json(), "run": record.to_json()}, indent=2))
    else:
        for line in record_lines(record):
            _out(line)
        if record.error:
            _err(f"pachhook: {outcome_line(record)}")
        else:
            _out(outcome_line(record))
    return record


def preflight(
    planned: Planned, options: RunOptions, env: Mapping[str, str], settings: Settings
) -> None:
    """What can be refused before any work, with exit 2: a cluster the operator did not
    name, a token that would cross the network in plain text, a credential helper that is
    not on PATH. Nothing is contacted."""
    plan = planned.plan
    config = planned.workspace.config if planned.workspace else None
    if config is None:
        return
    from pachhook.docker.credentials import check_environment, missing_helper

    check_environment(env)
    if plan.builds:
        problem = missing_helper(env)
        if problem:
            raise InputError(problem)
    if options.deploy and options.push and plan.deploys:
        from pachhook.pachyderm.connection import resolve_connection

        resolve_connection(config, env, settings)


def by_hand(planned: Planned) -> str:
    """The command that runs the same selection again."""
    changes = planned.resolved.changes
    commit = planned.resolved.source.commit
    if changes.target == "working tree" or commit is None:
        return "pachhook run --working-tree" + (" --all" if changes.everything else "")
    if changes.everything:
        return f"pachhook run --all --from {commit} --to {commit}"
    return f"pachhook run --from {changes.base or commit} --to {commit}"


def _running(run_id: str, trigger: str, planned: Planned) -> dict[str, object]:
    source = planned.resolved.source
    return {
        "kind": "run",
        "id": run_id,
        "state": "running",
        "pid": os.getpid(),
        "started": time.time(),
        "trigger": trigger,
        "source": source.label,
        "commit": source.commit,
        "by_hand": by_hand(planned),
    }
