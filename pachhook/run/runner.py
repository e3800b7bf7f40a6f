"""One run, whatever triggered it: plan, execute with the real adapters, record, report."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from pachhook.config import Config
from pachhook.errors import InputError
from pachhook.plan.load import plan_selection
from pachhook.plan.planner import Planned
from pachhook.repo.git import Repo
from pachhook.repo.selection import Selection
from pachhook.run.report import outcome_line, plan_lines, record_lines

if TYPE_CHECKING:
    from pachhook.docker.digest import ImageState
    from pachhook.pachyderm.cluster import PachydermCluster
    from pachhook.plan.diff import PipelineDiff
    from pachhook.plan.state import ClusterLookup, Prefetch, Readers, TagLookup
    from pachhook.repo.selection import ChangeSet
    from pachhook.repo.settings import Settings
    from pachhook.run.executor import Images, RunOptions, RunRecord
    from pachhook.run.github import CiReport, GroupedProgress


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def readers(
    repo: Repo,
    config: Config,
    env: Mapping[str, str],
    settings: Settings,
    *,
    registry: bool,
    cluster: bool,
) -> Readers:
    """The real registry and cluster, for reading state (nothing is contacted yet)."""
    from pachhook.plan.state import Readers
    from pachhook.repo.remote import repository_url

    tags, connect = _tag_reader(repo, env, settings), _cluster_reader(env, settings)
    return Readers(
        registry=(lambda: tags(config)) if registry else None,
        cluster=(lambda: connect(config)) if cluster else None,
        repository=repository_url(repo),
    )


def plan_with_state(
    repo: Repo, selection: Selection, env: Mapping[str, str], *, offline: bool = False
) -> Planned:
    """The plan, its actions decided by the registry and the cluster (read-only) when
    something is to be decided; `offline`, or nothing relevant: the pure plan, and
    nothing contacted. Both are asked while the plan is still being made."""
    if offline:
        return plan_selection(repo, selection, env)
    prefetch = _Deferred(env, repo)
    planned = plan_selection(repo, selection, env, prefetch=prefetch)
    if planned.workspace is None or prefetch.started is None:
        return planned
    from pachhook.plan.state import with_state
    from pachhook.repo.remote import repository_url

    return with_state(planned, prefetch.started.readers(repository_url(repo)))


class _Deferred:
    """plan/state.py's Prefetch, made (and imported) only once a plan is to be made: a
    plan with nothing to decide imports nothing more."""

    def __init__(self, env: Mapping[str, str], repo: Repo) -> None:
        self.env = env
        self.repo = repo
        self.started: Prefetch | None = None

    def config(self, config: Config) -> None:
        from pachhook.plan.state import Prefetch
        from pachhook.repo.settings import Settings

        # The operator's settings (deadlines, allowed hosts): read once a plan is made.
        settings = Settings.load(self.env, self.repo.root)
        self.started = Prefetch(
            _cluster_reader(self.env, settings), _tag_reader(self.repo, self.env, settings)
        )
        self.started.config(config)

    def images(self, images: Sequence[ImageState], changes: ChangeSet, config: Config) -> None:
        if self.started is not None:
            self.started.images(images, changes, config)


def _tag_reader(
    repo: Repo, env: Mapping[str, str], settings: Settings
) -> Callable[[Config], TagLookup]:
    def tags(config: Config) -> TagLookup:
        from pachhook.docker.cache import TagCache
        from pachhook.docker.registry import Registries

        registries = Registries(
            env, realm_hosts=settings.token_realm_hosts, timeout=settings.registry_timeout
        )
        return TagCache(registries, repo.state_dir, config.tag_policy)

    return tags


def _cluster_reader(
    env: Mapping[str, str], settings: Settings
) -> Callable[[Config], ClusterLookup]:
    def connect(config: Config) -> ClusterLookup:
        from pachhook.pachyderm.cluster import PachydermCluster

        return PachydermCluster.connect(config, env, settings)

    return connect


def diff_pipelines(
    repo: Repo, names: list[str], env: Mapping[str, str], *, working_tree: bool = False
) -> list[PipelineDiff]:
    """The cluster's spec of each pipeline against the repository's (at HEAD, or the
    working tree), with the real cluster."""
    from pachhook.pachyderm.cluster import PachydermCluster, requested_spec
    from pachhook.plan.diff import diffs
    from pachhook.repo.remote import repository_url
    from pachhook.repo.settings import Settings

    planned = plan_selection(repo, Selection(working_tree=working_tree, everything=True), env)
    assert planned.workspace is not None
    settings = Settings.load(env, repo.root)
    cluster = PachydermCluster.connect(planned.workspace.config, env, settings)
    stored = cluster.pipelines_in_full()
    return diffs(planned, stored, cluster, requested_spec, repository_url(repo), names)


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
    # Imported here: `plan`, which reads state through this module too, never executes.
    from pachhook.repo.remote import repository_url
    from pachhook.repo.settings import Settings
    from pachhook.run import ledger
    from pachhook.run.executor import execute, new_run_id
    from pachhook.run.lock import run_lock
    from pachhook.run.progress import BuildProgress

    config = planned.workspace.config if planned.workspace else None
    plan = planned.plan
    # A run with nothing to decide neither reads state nor git config, waits nor locks.
    to_decide = config is not None and plan.evaluated and (not plan.nothing_to_do or options.prune)
    settings = Settings.load(env, repo.root) if to_decide else Settings.from_env(env)
    if to_decide and not options.dry_run:
        # Before anything is contacted: a refused cluster or token is refused, exit 2.
        preflight(planned, options, env, settings)
    repository = ""
    if config is not None and to_decide:
        from pachhook.plan.state import with_state

        # What is printed is what will happen: the registry for images, when pushing;
        # the cluster for pipelines, when deploying.
        sources = readers(
            repo,
            config,
            env,
            settings,
            registry=options.push,
            cluster=options.push and options.deploy,
        )
        repository = sources.repository
        planned = with_state(planned, sources)
    run_id = new_run_id()

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
            settings=settings,
        )

    connected: list[PachydermCluster] = []

    def cluster() -> PachydermCluster:
        """One connection for the run: the build cache may read the cluster before deploy."""
        from pachhook.pachyderm.cluster import PachydermCluster

        assert config is not None
        if not connected:
            journal = ledger.TransactionJournal(repo.state_dir, run_id, say=progress.message)
            connected.append(PachydermCluster.connect(config, env, settings, log=journal))
        return connected[0]

    if not as_json:
        for note in planned.plan.unread:
            _err(f"pachhook: {note}")
        for line in plan_lines(planned.plan):
            _out(line)
    # One run at a time per repository (hooks, post-push deploys, the watcher). What the
    # plan narrowed is decided again by state once the lock is held, so waiting loses
    # nothing; a run waits `lock_timeout` seconds at most.
    pruning = options.prune and bool(planned.plan.prunable)
    busy = (
        planned.plan.evaluated
        and (not planned.plan.nothing_to_do or pruning)
        and not options.dry_run
    )
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
                repository=repository or (repository_url(repo) if busy else ""),
                run_id=run_id,
            )
    finally:
        progress.close()
    progress.summary(record.images)
    if planned.plan.evaluated and not options.dry_run:
        state = "failed" if record.error else "done"
        ledger.append(repo.state_dir, {"kind": "run", "state": state, **record.to_json()})
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
