"""`pachhook hook HOOK`: what the git hooks run (`pachhook install` sets them up).

pre-push [--sync] [REMOTE URL]  git's ref lines on standard input (or the pre-commit
                                framework's PRE_COMMIT_* variables): builds, pushes and
                                verifies the images of every pushed commit; for the
                                deploy branches, updates the pipelines once the remote
                                has accepted the push (--sync: inside the hook, before
                                the push).
post-commit                     what the new commit would build and update
post-merge [SQUASH]             what the merge would build and update
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pachhook.commands import env, err, out, repo
from pachhook.errors import PachhookError

if TYPE_CHECKING:
    from pachhook.git import Repo
    from pachhook.hooks import PushGroup, PushTarget
    from pachhook.planning import Planned
    from pachhook.postpush import Job


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "hook",
        help="what the git hooks run (see pachhook install)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    hooks = parser.add_subparsers(dest="hook", metavar="HOOK")
    pre_push = hooks.add_parser(
        "pre-push",
        help="build and push the images of a push; deploy once the push has landed",
        description="Reads git's pre-push lines on standard input: "
        "<local ref> <local sha> <remote ref> <remote sha>.",
    )
    pre_push.add_argument("remote", nargs="?", metavar="REMOTE", help="the remote's name")
    pre_push.add_argument("url", nargs="?", metavar="URL", help="the remote's URL")
    pre_push.add_argument(
        "--sync",
        action="store_true",
        help="update the pipelines inside the hook, before the push is sent",
    )
    pre_push.set_defaults(func=run_pre_push)
    hooks.add_parser(
        "post-commit", help="show (or build) what the new commit affects"
    ).set_defaults(func=run_post_commit)
    post_merge = hooks.add_parser("post-merge", help="show (or build) what the merge affects")
    post_merge.add_argument("squash", nargs="?", help="1 for a squash merge (from git)")
    post_merge.set_defaults(func=run_post_merge)
    # Internal: the detached process the pre-push hook starts; not listed in --help.
    deploy = hooks.add_parser("post-push-deploy")
    deploy.add_argument("ids", nargs="+")
    deploy.add_argument("--push-process")
    deploy.set_defaults(func=run_post_push_deploy)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# -- pre-push ---------------------------------------------------------------------------------


def run_pre_push(args: argparse.Namespace) -> int:
    from pachhook import hooks
    from pachhook.planning import plan_selection

    found = repo()
    environment = env()
    framework = hooks.pre_commit_push(environment)
    if framework is not None:
        remote = args.remote or framework.remote
        url = args.url or framework.url
        updates, from_ref = framework.updates, framework.from_ref
    else:
        remote, url, from_ref = args.remote, args.url, None
        updates = hooks.parse_updates(sys.stdin.read())
    targets = hooks.push_targets(found, remote, updates, from_ref)
    work = []
    for group in hooks.group_by_commit(found, targets):
        planned = plan_selection(found, group.selection, environment)
        if planned.plan.evaluated and not planned.plan.nothing_to_do:
            work.append((group, planned))
    if not work:
        if targets:
            err("pachhook: nothing in this push is an image input, a pipeline spec or the config")
        return 0
    return _build_then_deploy(found, remote, url, work, environment, sync=args.sync)


def _build_then_deploy(
    found: Repo,
    remote: str | None,
    url: str | None,
    work: list[tuple[PushGroup, Planned]],
    environment: Mapping[str, str],
    *,
    sync: bool,
) -> int:
    from pachhook import hooks, ledger, postpush
    from pachhook.execution import run_planned
    from pachhook.run import RunOptions

    # git passes the remote's name and URL; for a push to a bare URL both are the URL.
    named = bool(remote) and remote != url
    label = remote if named and remote else postpush.redacted(url or remote or "")
    branches = hooks.DeployBranches(found, remote)
    push = postpush.PushProcess.find()
    # `git push --dry-run` runs the hook too: build (the check is worth having), deploy nothing.
    dry_run = push is not None and push.dry_run()
    jobs: list[Job] = []
    for group, planned in work:
        assert planned.workspace is not None
        settings = planned.workspace.config.hooks
        refs = ", ".join(t.update.remote_ref for t in group.targets)
        err(f"pachhook: {refs} at {group.commit[:12]} ({group.targets[0].basis})")
        deploying = [
            t for t in group.targets if branches.deploys(t.update, settings.deploy_branches)
        ]
        if dry_run and deploying and planned.plan.deploys:
            err("pachhook: git push --dry-run: no pipeline is updated")
            deploying = []
        sync_deploy = sync and bool(deploying)
        if planned.plan.builds or sync_deploy:
            options = RunOptions(deploy=sync_deploy, held_because="see below")
            record = run_planned(found, planned, options, environment, trigger="pre-push")
            if not record.ok:
                if settings.on_build_failure == "block":
                    err(
                        f"pachhook: push stopped: {record.error}; fix it and push again, or push "
                        'anyway with git push --no-verify ([hooks] on_build_failure = "warn" '
                        "lets such pushes through)"
                    )
                    return 1
                err(
                    'pachhook: the push goes on ([hooks] on_build_failure = "warn"), '
                    f"but no pipeline is updated for {refs}"
                )
                for target in deploying:
                    job = _job(group, target, label, settings.post_push_timeout)
                    ledger.append(
                        found.state_dir,
                        job.entry("failed", error=f"at pre-push: {record.error}"),
                    )
                continue
        if not planned.plan.deploys:
            continue
        for target in group.targets:
            if target not in deploying and not dry_run:
                err(f"pachhook: {branches.why_not(target.update, settings.deploy_branches)}")
        if not sync:
            jobs += [_job(group, t, label, settings.post_push_timeout) for t in deploying]
    if jobs:
        log = postpush.start(
            found,
            jobs,
            push=push,
            url=None if named else url,
            env=environment,
        )
        where = os.path.relpath(log, found.root)
        for job in jobs:
            err(
                f"pachhook: {job.remote_ref}: pipelines will be updated once {label} has "
                f"accepted the push (pachhook status; log: {where})"
            )
    return 0


def _job(group: PushGroup, target: PushTarget, remote: str, timeout: float) -> Job:
    from pachhook.postpush import Job

    return Job.new(group.commit, remote, target.update.remote_ref, target.selection, timeout)


# -- post-commit, post-merge ------------------------------------------------------------------


def run_post_commit(args: argparse.Namespace) -> int:
    return _after_commit("post-commit", "HEAD~1")


def run_post_merge(args: argparse.Namespace) -> int:
    squash = args.squash or os.environ.get("PRE_COMMIT_IS_SQUASH_MERGE")
    if squash == "1":
        return 0  # nothing is committed yet: the commit's own hook will show it
    return _after_commit("post-merge", "ORIG_HEAD")


def _after_commit(trigger: str, base: str) -> int:
    """Never fails the commit or merge: errors are printed, the exit code is 0."""
    try:
        _show_or_build(trigger, base)
    except PachhookError as exc:
        err(f"pachhook: {exc.message}")
    except Exception as exc:
        if os.environ.get("PACHHOOK_DEBUG"):
            raise
        err(
            f"pachhook: internal error: {type(exc).__name__}: {exc} "
            "(set PACHHOOK_DEBUG=1 to see the traceback, and please report it)"
        )
    return 0


def _show_or_build(trigger: str, base: str) -> None:
    from pachhook.config import load as load_config
    from pachhook.git import run
    from pachhook.hooks import everything_at
    from pachhook.planning import plan_selection
    from pachhook.selection import Selection
    from pachhook.source import CommitSource

    found = repo()
    environment = env()
    if not found.has_commits():
        return
    head = found.resolve("HEAD")
    start = run(["rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"], found.root, check=False)
    selection = Selection(start.strip(), head) if start.strip() else everything_at(head)
    source = CommitSource(found, head)
    try:
        mode = load_config(source.read, environment).hooks.post_commit
    finally:
        source.close()
    if mode == "off":
        return
    planned = plan_selection(found, selection, environment)
    if not planned.plan.evaluated or planned.plan.nothing_to_do:
        return  # quiet: nothing this commit touches matters to pachhook
    if mode == "plan":
        from pachhook.report import plan_lines

        what = "this commit" if trigger == "post-commit" else "this merge"
        out(f"pachhook: what {what} changes (built at pre-push, deployed once pushed):")
        for line in plan_lines(planned.plan):
            out(f"  {line}")
        return
    from pachhook.execution import run_selection
    from pachhook.run import RunOptions

    run_selection(found, selection, RunOptions(deploy=False), environment, trigger=trigger)


# -- the detached post-push process -----------------------------------------------------------


def run_post_push_deploy(args: argparse.Namespace) -> int:
    from pachhook import postpush

    push = postpush.PushProcess.parse(args.push_process) if args.push_process else None

    def say(line: str) -> None:
        out(f"{time.strftime('%H:%M:%S')} {line}")
        sys.stdout.flush()

    return postpush.deploy(repo(), args.ids, push=push, env=env(), say=say)
