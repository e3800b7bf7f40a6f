"""The pre-push policy: build and push the images of every pushed commit, and for the
deploy branches, update the pipelines once the remote has accepted the push (or inside
the hook, with `--sync`).

A build that fails stops the push (`on_build_failure = "block"`) or lets it through and
deploys nothing for it ("warn"); `git push --dry-run` builds (the check is worth having)
and deploys nothing. The policy is the operator's (hooks/policy.py), never the pushed
commit's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from pachhook.hooks.policy import hook_policy, hooks_prune
from pachhook.hooks.push import (
    DeployBranches,
    PushGroup,
    PushTarget,
    group_by_commit,
    parse_updates,
    pre_commit_push,
    push_targets,
)
from pachhook.plan.load import plan_selection
from pachhook.plan.planner import Planned
from pachhook.repo.git import Repo

if TYPE_CHECKING:
    from pachhook.hooks.postpush import Job


def pre_push(
    repo: Repo,
    remote: str | None,
    url: str | None,
    ref_lines: Callable[[], str],
    env: Mapping[str, str],
    *,
    sync: bool,
    say: Callable[[str], None],
) -> int:
    """What git's pre-push hook does; its exit code (1 stops the push)."""
    framework = pre_commit_push(env)
    if framework is not None:
        remote = remote or framework.remote
        url = url or framework.url
        updates, from_ref = framework.updates, framework.from_ref
    else:
        updates, from_ref = parse_updates(ref_lines()), None
    targets = push_targets(repo, remote, updates, from_ref)
    work = []
    for group in group_by_commit(repo, targets):
        planned = plan_selection(repo, group.selection, env)
        if planned.plan.evaluated and (
            not planned.plan.nothing_to_do or _prunes(repo, planned, env)
        ):
            work.append((group, planned))
    if not work:
        if targets:
            say("pachhook: nothing in this push is an image input, a pipeline spec or the config")
        return 0
    return _build_then_deploy(repo, remote, url, work, env, sync=sync, say=say)


def _build_then_deploy(
    repo: Repo,
    remote: str | None,
    url: str | None,
    work: list[tuple[PushGroup, Planned]],
    env: Mapping[str, str],
    *,
    sync: bool,
    say: Callable[[str], None],
) -> int:
    # Only a push with something to build or deploy gets here: the rest never loads these.
    from pachhook.hooks import postpush
    from pachhook.run import ledger
    from pachhook.run.executor import RunOptions
    from pachhook.run.runner import run_planned

    # git passes the remote's name and URL; for a push to a bare URL both are the URL.
    named = bool(remote) and remote != url
    label = remote if named and remote else postpush.redacted(url or remote or "")
    branches = DeployBranches(repo, remote)
    push = postpush.PushProcess.find()
    dry_run = push is not None and push.dry_run()
    # The policy is the operator's and the default branch's, never the pushed commit's.
    settings = hook_policy(repo, remote if named else "", env)
    if settings.note:
        say(f"pachhook: {settings.note}")
    planned_groups = []
    for group, planned in work:
        deploying = [
            t for t in group.targets if branches.deploys(t.update, settings.deploy_branches)
        ]
        if dry_run and deploying and planned.plan.deploys:
            say("pachhook: git push --dry-run: no pipeline is updated")
            deploying = []
        planned_groups.append((group, planned, deploying))
    _refuse_before_work(repo, planned_groups, env)
    jobs: list[Job] = []
    for group, planned, deploying in planned_groups:
        assert planned.workspace is not None
        refs = ", ".join(t.update.remote_ref for t in group.targets)
        say(f"pachhook: {refs} at {group.commit[:12]} ({group.targets[0].basis})")
        ignored = settings.differs(planned.workspace.config.hooks)
        if ignored:
            say(
                f"pachhook: {', '.join(ignored)} in the pushed commit not used: the hook policy "
                "comes from git config and the remote's default branch, never from the "
                "commit being pushed"
            )
        sync_deploy = sync and bool(deploying)
        if planned.plan.builds or sync_deploy:
            options = RunOptions(
                deploy=sync_deploy,
                held_because="see below",
                prune=sync_deploy and hooks_prune(repo, env),
            )
            record = run_planned(repo, planned, options, env, trigger="pre-push")
            if not record.ok:
                if settings.on_build_failure == "block":
                    say(
                        f"pachhook: push stopped: {record.error}; fix it and push again, or push "
                        "anyway with git push --no-verify (git config pachhook.onBuildFailure "
                        "warn lets such pushes through)"
                    )
                    return 1
                origin = settings.origins.get("on_build_failure", "default")
                say(
                    f'pachhook: the push goes on (on_build_failure = "warn", from {origin}), '
                    f"but no pipeline is updated for {refs}"
                )
                for target in deploying:
                    job = _job(group, target, label, settings.post_push_timeout)
                    ledger.append(
                        repo.state_dir, job.entry("failed", error=f"at pre-push: {record.error}")
                    )
                continue
        if not planned.plan.deploys and not _prunes(repo, planned, env):
            continue
        for target in group.targets:
            if target not in deploying and not dry_run:
                why = branches.why_not(
                    target.update,
                    settings.deploy_branches,
                    settings.origins.get("deploy_branches", "default"),
                )
                say(f"pachhook: {why}")
        if not sync:
            jobs += [_job(group, t, label, settings.post_push_timeout) for t in deploying]
    if jobs:
        log = postpush.start(repo, jobs, push=push, url=None if named else url, env=env)
        where = os.path.relpath(log, repo.root)
        for job in jobs:
            say(
                f"pachhook: {job.remote_ref}: pipelines will be updated once {label} has "
                f"accepted the push (pachhook status; log: {where})"
            )
    return 0


def _prunes(repo: Repo, planned: Planned, env: Mapping[str, str]) -> bool:
    """A removed spec is acted on by a hook only where the operator's settings say so."""
    return bool(planned.plan.removed) and hooks_prune(repo, env)


def _refuse_before_work(
    repo: Repo, groups: list[tuple[PushGroup, Planned, list[PushTarget]]], env: Mapping[str, str]
) -> None:
    """A deploy that will be refused (a cluster the operator did not name, a token that
    would cross the network in plain text) stops the push before anything is built."""
    from pachhook.pachyderm.connection import resolve_connection
    from pachhook.repo.settings import Settings

    settings = Settings.load(env, repo.root)
    for _, planned, deploying in groups:
        if deploying and planned.plan.deploys and planned.workspace is not None:
            resolve_connection(planned.workspace.config, env, settings)


def _job(group: PushGroup, target: PushTarget, remote: str, timeout: float) -> Job:
    from pachhook.hooks.postpush import Job

    return Job.new(group.commit, remote, target.update.remote_ref, target.selection, timeout)
