"""The hook policy: which pushes deploy, whether a failed build stops a push, how long the
post-push step waits, and what the post-commit and post-merge hooks do.

The policy is the operator's, never the incoming commit's: a feature branch that sets
`deploy_branches = ["**"]`, or a pulled commit that sets `post_commit = "build"`, must not
deploy or build by itself. Each setting is read, first found wins, from

1. the environment (`PACHHOOK_DEPLOY_BRANCHES`, `PACHHOOK_ON_BUILD_FAILURE`,
   `PACHHOOK_POST_PUSH_TIMEOUT`, `PACHHOOK_POST_COMMIT`);
2. git config (`pachhook.deployBranches`, `pachhook.onBuildFailure`,
   `pachhook.postPushTimeout`, `pachhook.postCommit`): the user's and the repository's own
   `.git/config`, which no commit can change;
3. `[hooks]` of the configuration on the remote's default branch as last fetched
   (`refs/remotes/<remote>/HEAD`, e.g. origin/main): what the team has already accepted.
   Not for `post_commit`: after a `git pull` the branch just fetched is the commit being
   merged, and whether others' code is built on this machine is this machine's choice;
4. the defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from pachhook.config import HooksConfig, find, parse_found
from pachhook.errors import InputError
from pachhook.repo.git import Repo, run
from pachhook.repo.settings import Settings
from pachhook.repo.source import CommitSource

FIELDS = ("deploy_branches", "on_build_failure", "post_push_timeout", "post_commit")
OPERATOR_ONLY = frozenset({"post_commit"})  # never read from a branch (see above)


class HookPolicy(NamedTuple):
    deploy_branches: tuple[str, ...] | None  # None: the remote's default branch
    on_build_failure: str
    post_push_timeout: float
    post_commit: str
    origins: Mapping[str, str]  # field -> where its value was read from, for messages
    note: str | None = None  # said once when the default branch's policy could not be read

    def differs(self, committed: HooksConfig) -> list[str]:
        """The `[hooks]` keys whose value in a commit is not the one in effect."""
        return [
            f"[hooks] {name}"
            for name in FIELDS
            if getattr(committed, name) != getattr(self, name)
            and getattr(committed, name) != getattr(HooksConfig(), name)
        ]


def post_commit_mode(repo: Repo, env: Mapping[str, str]) -> str:
    """The post-commit and post-merge mode: the operator's alone (one git call)."""
    return str(Settings.load(env, repo.root).get("post_commit") or HooksConfig().post_commit)


def hooks_prune(repo: Repo, env: Mapping[str, str]) -> bool:
    """Whether the deploys that hooks run delete the pipelines whose spec is gone: only
    when the operator says so (`PACHHOOK_PRUNE`, `git config pachhook.prune true`), never
    because of anything a commit holds."""
    return bool(Settings.load(env, repo.root).get("prune"))


def remote_of(repo: Repo) -> str | None:
    """The remote whose default branch holds the team's policy: the upstream's remote,
    else origin, else the only remote."""
    names = run(["remote"], repo.root, check=False).split()
    upstream = repo.upstream() or ""
    first = upstream.split("/", 1)[0] if "/" in upstream else ""
    for name in (first, "origin"):
        if name and name in names:
            return name
    return names[0] if len(names) == 1 else None


def hook_policy(repo: Repo, remote: str | None, env: Mapping[str, str]) -> HookPolicy:
    """The policy in effect for `remote` (None: see `remote_of`)."""
    settings = Settings.load(env, repo.root)
    remote = remote if remote is not None else remote_of(repo)
    committed, label, note = _default_branch_hooks(repo, remote, env)
    defaults = HooksConfig()
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    for name in FIELDS:
        if name in settings.values:
            values[name], origins[name] = settings.values[name], settings.origin(name)
        elif (
            committed is not None
            and name not in OPERATOR_ONLY
            and getattr(committed, name) != getattr(defaults, name)
        ):
            values[name], origins[name] = getattr(committed, name), f"[hooks] {name} at {label}"
        else:
            values[name], origins[name] = getattr(defaults, name), "default"
    deploy = values["deploy_branches"]
    return HookPolicy(
        deploy_branches=tuple(deploy) if isinstance(deploy, tuple | list) else None,
        on_build_failure=str(values["on_build_failure"]),
        post_push_timeout=float(str(values["post_push_timeout"])),
        post_commit=str(values["post_commit"]),
        origins=origins,
        note=note,
    )


def _default_branch_hooks(
    repo: Repo, remote: str | None, env: Mapping[str, str]
) -> tuple[HooksConfig | None, str, str | None]:
    """`[hooks]` of the configuration at the remote's default branch as last fetched, its
    label, and a note when it could not be read (the defaults then apply)."""
    if not remote:
        return None, "", None
    branch = repo.default_remote_branch(remote)
    commit = repo.commit_of(f"refs/remotes/{branch}") if branch else None
    if branch is None or commit is None:
        return None, "", None
    source = CommitSource(repo, commit)
    try:
        return parse_found(find(source.read), env).hooks, branch, None
    except InputError as exc:
        return None, branch, f"the policy on {branch} cannot be read ({exc}); defaults apply"
    finally:
        source.close()
