"""What a CI job tells about the change it runs for.

In CI the checkout is rarely the history pachhook needs: actions/checkout fetches one
commit and makes it its own upstream (so "HEAD against its upstream" is an empty diff),
GitLab clones 20 commits deep, and a pull request is checked out as a merge commit on a
detached HEAD. So in CI, with no selection given, a run decides by state (the registry
and the cluster) as `--all` does; the commit the event names as the start of the change
(a push's `before`, a pull request's base) only says *why*, when it is in the clone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from pachhook.config import in_ci

ZERO_SHA = "0" * 40


class CiChange(NamedTuple):
    system: str  # "GitHub Actions", "GitLab CI", "CI"
    since: str | None  # the commit the event says the change starts from, if it names one
    source: str  # where `since` came from, for messages


def detect(env: Mapping[str, str]) -> CiChange | None:
    """The CI job this process runs in (CI=true or GITHUB_ACTIONS=true), or None."""
    if not in_ci(env):
        return None
    github = env.get("GITHUB_ACTIONS", "").strip().lower() == "true"
    since, source = _pre_commit(env)
    if github:
        system = "GitHub Actions"
        if since is None:
            since, source = _github_event(env)
    elif env.get("GITLAB_CI", "").strip().lower() == "true":
        system = "GitLab CI"
        if since is None:
            since, source = _gitlab(env)
    else:
        system = "CI"
    return CiChange(system, since, source)


def _commit(value: Any) -> str | None:
    """A full commit id that names a commit (the all-zero id names none)."""
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    if len(value) != 40 or value == ZERO_SHA or any(c not in "0123456789abcdef" for c in value):
        return None
    return value


def _pre_commit(env: Mapping[str, str]) -> tuple[str | None, str]:
    # The pre-commit framework's pre-push stage names the range it runs for.
    value = env.get("PRE_COMMIT_FROM_REF") or env.get("PRE_COMMIT_SOURCE")
    return (value.strip() or None, "PRE_COMMIT_FROM_REF") if value else (None, "")


def _github_event(env: Mapping[str, str]) -> tuple[str | None, str]:
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return None, ""
    try:
        with open(path, encoding="utf-8") as handle:
            event = json.load(handle)
    except (OSError, ValueError):
        return None, ""  # no payload to narrow with: state decides all the same
    if not isinstance(event, dict):
        return None, ""
    pull = event.get("pull_request")
    if isinstance(pull, dict) and isinstance(pull.get("base"), dict):
        return _commit(pull["base"].get("sha")), "the pull request's base"
    return _commit(event.get("before")), "the push event's before"


def _gitlab(env: Mapping[str, str]) -> tuple[str | None, str]:
    base = _commit(env.get("CI_MERGE_REQUEST_DIFF_BASE_SHA"))
    if base:
        return base, "CI_MERGE_REQUEST_DIFF_BASE_SHA"
    return _commit(env.get("CI_COMMIT_BEFORE_SHA")), "CI_COMMIT_BEFORE_SHA"
