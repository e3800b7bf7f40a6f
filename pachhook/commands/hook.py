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
from typing import TYPE_CHECKING, Any

from pachhook.commands import env, err, out, repo

if TYPE_CHECKING:
    pass


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


# -- the hooks -------------------------------------------------------------------------------


def run_pre_push(args: argparse.Namespace) -> int:
    from pachhook.hooks.prepush import pre_push

    return pre_push(repo(), args.remote, args.url, sys.stdin.read, env(), sync=args.sync, say=err)


def run_post_commit(args: argparse.Namespace) -> int:
    from pachhook.hooks.commit import after_commit

    return after_commit(repo(), "post-commit", "HEAD~1", env(), out=out, err=err)


def run_post_merge(args: argparse.Namespace) -> int:
    squash = args.squash or os.environ.get("PRE_COMMIT_IS_SQUASH_MERGE")
    if squash == "1":
        return 0  # nothing is committed yet: the commit's own hook will show it
    from pachhook.hooks.commit import after_commit

    return after_commit(repo(), "post-merge", "ORIG_HEAD", env(), out=out, err=err)


def run_post_push_deploy(args: argparse.Namespace) -> int:
    from pachhook.hooks import postpush

    push = postpush.PushProcess.parse(args.push_process) if args.push_process else None

    def say(line: str) -> None:
        out(f"{time.strftime('%H:%M:%S')} {line}")
        sys.stdout.flush()

    return postpush.deploy(repo(), args.ids, push=push, env=env(), say=say)
