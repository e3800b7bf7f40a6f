"""One run, whatever triggered it: plan, execute with the real adapters, record, report."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pachhook.plan.load import plan_selection
from pachhook.plan.planner import Planned
from pachhook.repo.git import Repo
from pachhook.repo.selection import Selection
from pachhook.run import ledger
from pachhook.run.executor import Images, RunOptions, RunRecord, execute
from pachhook.run.lock import run_lock
from pachhook.run.progress import BuildProgress
from pachhook.run.report import outcome_line, plan_lines, record_lines

if TYPE_CHECKING:
    from pachhook.pachyderm.cluster import PachydermCluster
    from pachhook.run.github import CiReport, GroupedProgress


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
    ci: CiReport | None = None,
) -> RunRecord:
    planned = plan_selection(repo, selection, env)
    return run_planned(repo, planned, options, env, trigger=trigger, as_json=as_json, ci=ci)


def run_planned(
    repo: Repo,
    planned: Planned,
    options: RunOptions,
    env: Mapping[str, str],
    *,
    trigger: str,
    as_json: bool = False,
    ci: CiReport | None = None,
) -> RunRecord:
    """`ci`: where the results also go in CI (GitHub's log, outputs and job summary)."""
    config = planned.workspace.config if planned.workspace else None

    def say(line: str) -> None:
        if not as_json:
            _err(line)

    # Live progress only for a person at a terminal; hooks and CI get plain lines, and
    # GitHub one collapsed group per image.
    progress: BuildProgress | GroupedProgress
    if ci is not None and ci.github is not None:
        from pachhook.run.github import GroupedProgress

        progress = GroupedProgress(ci.github, say)
    else:
        progress = BuildProgress.for_run(
            say, interactive=trigger == "cli" and not as_json, stream=sys.stderr
        )

    def images() -> Images:
        from pachhook.docker.buildkit import describe
        from pachhook.docker.images import DockerImages
        from pachhook.run.previous import PreviousImages

        assert config is not None
        for line in describe([i.state for i in planned.plan.builds if i.state], env):
            progress.message(line)
        return DockerImages.from_environment(
            repo,
            config,
            env,
            progress,
            ledger.logs_dir(repo.state_dir),
            cache_sources=PreviousImages(repo.state_dir, cluster, say=progress.message),
        )

    connected: list[PachydermCluster] = []

    def cluster() -> PachydermCluster:
        """One connection for the run: the build cache may read the cluster before deploy."""
        from pachhook.pachyderm.cluster import PachydermCluster

        assert config is not None
        if not connected:
            connected.append(PachydermCluster.connect(config, env))
        return connected[0]

    if not as_json:
        for line in plan_lines(planned.plan):
            _out(line)
    # One run at a time per repository (hooks, post-push deploys, the watcher); a run
    # with nothing to do neither waits nor takes the lock. What the plan narrowed is
    # decided again by state once the lock is held, so waiting loses nothing.
    busy = planned.plan.evaluated and not planned.plan.nothing_to_do and not options.dry_run
    guard = (
        run_lock(
            repo.state_dir,
            f"{trigger} run of {planned.resolved.source.label}",
            on_wait=lambda message: _err(f"pachhook: {message}"),
        )
        if busy
        else contextlib.nullcontext()
    )
    try:
        with guard:
            record = execute(
                planned,
                options,
                trigger=trigger,
                images=images,
                cluster=cluster,
                progress=progress.message,
            )
    finally:
        progress.close()
    progress.summary(record.images)
    if planned.plan.evaluated and not options.dry_run:
        ledger.append(repo.state_dir, {"kind": "run", **record.to_json()})
    if ci is not None:
        ci.run_done(planned, record)
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
