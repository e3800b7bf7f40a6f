"""The post-commit and post-merge hooks: what the new commit (or the merge) would build and
update, shown (`post_commit = "plan"`), built without a deploy ("build"), or nothing
("off"). The mode is the operator's (hooks/policy.py), never the commit's. They never fail
the commit or the merge."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pachhook.errors import error_handler
from pachhook.hooks.policy import post_commit_mode
from pachhook.hooks.push import everything_at
from pachhook.plan.load import plan_selection
from pachhook.repo.git import Repo
from pachhook.repo.selection import Selection


def after_commit(
    repo: Repo,
    trigger: str,
    base: str,
    env: Mapping[str, str],
    *,
    out: Callable[[str], None],
    err: Callable[[str], None],
) -> int:
    """`trigger` is post-commit or post-merge; `base` what the change is measured from.
    Errors are said, and the exit code is 0 whatever happens."""
    with error_handler(lambda message, code: err(f"pachhook: {message}")):
        _show_or_build(repo, trigger, base, env, out)
    return 0


def _show_or_build(
    repo: Repo, trigger: str, base: str, env: Mapping[str, str], out: Callable[[str], None]
) -> None:
    if not repo.has_commits():
        return
    head = repo.resolve("HEAD")
    start = repo.commit_of(base)
    selection = Selection(start, head) if start else everything_at(head)
    # The operator's choice, never the commit's: a pulled commit cannot make a pull build.
    mode = post_commit_mode(repo, env)
    if mode == "off":
        return
    planned = plan_selection(repo, selection, env)
    if not planned.plan.evaluated or planned.plan.nothing_to_do:
        return  # quiet: nothing this commit touches matters to pachhook
    from pachhook.run.report import plan_lines

    if mode == "plan":
        what = "this commit" if trigger == "post-commit" else "this merge"
        out(f"pachhook: what {what} changes (built at pre-push, deployed once pushed):")
        for line in plan_lines(planned.plan):
            out(f"  {line}")
        return
    from pachhook.run.executor import RunOptions
    from pachhook.run.runner import run_selection

    run_selection(repo, selection, RunOptions(deploy=False), env, trigger=trigger)
