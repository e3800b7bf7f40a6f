"""What a push is about to do: git's pre-push ref lines (or the pre-commit framework's
variables), what to plan for each pushed ref, and which refs deploy.

The pre-push protocol: git writes one line per ref it is about to update,
`<local ref> <local sha> <remote ref> <remote sha>`, and `push_targets` turns each into
what to plan; the pre-commit framework passes only the first of them, in
`PRE_COMMIT_*` variables, which `pre_commit_push` reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from pachhook.errors import InputError, PachhookError
from pachhook.globs import compile_glob
from pachhook.repo.git import Repo, ls_remote, run
from pachhook.repo.selection import Selection

# -- the pre-push protocol --------------------------------------------------------------------


class RefUpdate(NamedTuple):
    """One line of git's pre-push input."""

    local_ref: str
    local_sha: str
    remote_ref: str
    remote_sha: str

    @property
    def deletes(self) -> bool:
        return _is_zero(self.local_sha)

    @property
    def creates(self) -> bool:
        return _is_zero(self.remote_sha)

    @property
    def branch(self) -> str | None:
        """The remote branch's short name; None when the ref is not a branch (a tag)."""
        prefix = "refs/heads/"
        return self.remote_ref[len(prefix) :] if self.remote_ref.startswith(prefix) else None


def _is_zero(sha: str) -> bool:
    return not sha.strip("0")


def parse_updates(text: str) -> list[RefUpdate]:
    """Every line git wrote (not only the first); blank lines are passed over."""
    updates = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        # A local ref may be any expression the user typed; the last three fields are fixed.
        parts = line.rsplit(maxsplit=3)
        if len(parts) != 4:
            raise InputError(
                f"pre-push input line {number}: expected '<local ref> <local sha> "
                f"<remote ref> <remote sha>', got {line!r}; run this only from git's pre-push hook"
            )
        updates.append(RefUpdate(*parts))
    return updates


class PreCommitPush(NamedTuple):
    """What the pre-commit framework says about a push (it passes no stdin)."""

    remote: str | None
    url: str | None
    updates: list[RefUpdate]
    from_ref: str | None  # the framework's own base for the (single) update, if any


def pre_commit_push(env: Mapping[str, str]) -> PreCommitPush | None:
    """The push as the pre-commit framework describes it, or None when not run by it.

    pre-commit (commands/hook_impl.py) looks at the first ref line that is not a
    deletion: PRE_COMMIT_FROM_REF is the remote's sha when the remote has the ref, else
    the parent of the first commit no remote-tracking ref has; it sets no FROM/TO_REF
    when the push includes a root commit. PRE_COMMIT_LOCAL_BRANCH, _REMOTE_BRANCH,
    _REMOTE_NAME and _REMOTE_URL come together, or not at all."""
    if not env.get("PRE_COMMIT") or not (
        env.get("PRE_COMMIT_TO_REF") or env.get("PRE_COMMIT_REMOTE_BRANCH")
    ):
        return None
    to_ref = env.get("PRE_COMMIT_TO_REF") or env.get("PRE_COMMIT_LOCAL_BRANCH") or "HEAD"
    remote_ref = env.get("PRE_COMMIT_REMOTE_BRANCH") or ""
    # The framework does not say what the remote had; acceptance is judged by the ref.
    update = RefUpdate(env.get("PRE_COMMIT_LOCAL_BRANCH") or to_ref, to_ref, remote_ref, "")
    return PreCommitPush(
        env.get("PRE_COMMIT_REMOTE_NAME"),
        env.get("PRE_COMMIT_REMOTE_URL"),
        [update],
        env.get("PRE_COMMIT_FROM_REF"),
    )


class PushTarget(NamedTuple):
    """One pushed ref, resolved: the commit that goes out and what to compare it with."""

    update: RefUpdate
    commit: str
    selection: Selection
    basis: str  # for people: what the change is measured from


def _peeled(repo: Repo, names: Sequence[str]) -> list[str | None]:
    """The commit each name peels to (None when it names no commit), in one git call."""
    if not names:
        return []
    text = "".join(f"{name}^{{commit}}\n" for name in names)
    out = run(["cat-file", "--batch-check"], repo.root, input=text.encode()).splitlines()
    found: list[str | None] = []
    for line in out:
        parts = line.split()
        found.append(parts[0] if len(parts) == 3 and parts[1] == "commit" else None)
    return found


def everything_at(commit: str) -> Selection:
    """Every image and pipeline at `commit`, decided by state (`--all` for one commit)."""
    # The diff of a commit with itself is empty: only `everything` selects.
    return Selection(from_ref=commit, to_ref=commit, everything=True)


def push_targets(
    repo: Repo, remote: str | None, updates: Sequence[RefUpdate], from_ref: str | None = None
) -> list[PushTarget]:
    """What to plan for each pushed ref; deletions are passed over.

    A ref the remote has is compared with the remote's commit; a new one with its
    merge-base with the remote's default branch; with no default branch known, or no
    shared history, it is a first push: every image and pipeline, decided by state.
    `from_ref` (from the pre-commit framework) overrides the comparison base."""
    live = [u for u in updates if not u.deletes]
    names = [u.local_sha for u in live]
    names += [u.remote_sha for u in live if not u.creates and u.remote_sha]
    commits = _peeled(repo, names)
    local = commits[: len(live)]
    remote_known = iter(commits[len(live) :])
    default: str | None | bool = False  # looked up once, when a ref needs it
    targets = []
    for update, commit in zip(live, local, strict=True):
        has_remote = not update.creates and bool(update.remote_sha)
        known = next(remote_known) if has_remote else None
        if commit is None:
            continue  # a tag of a tree or blob: nothing to build from
        if from_ref:
            selection, basis = Selection(from_ref, commit), f"since {from_ref[:12]}"
        elif known is not None and _shares_history(repo, known, commit):
            selection, basis = Selection(known, commit), f"since the remote's {known[:12]}"
        else:
            if default is False:
                default = repo.default_remote_branch(remote) if remote else None
            if isinstance(default, str) and _shares_history(repo, default, commit):
                selection, basis = (
                    Selection(default, commit),
                    f"new, since its merge-base with {default}",
                )
            else:
                selection, basis = everything_at(commit), "first push: every image and pipeline"
        targets.append(PushTarget(update, commit, selection, basis))
    return targets


def _shares_history(repo: Repo, ref: str, commit: str) -> bool:
    return bool(run(["merge-base", ref, commit], repo.root, check=False).strip())


class PushGroup(NamedTuple):
    """The pushed refs that point at one commit: one build, from that commit's tree."""

    commit: str
    selection: Selection
    targets: tuple[PushTarget, ...]


def group_by_commit(repo: Repo, targets: Sequence[PushTarget]) -> list[PushGroup]:
    """One group per pushed commit, in push order; refs at the same commit share a
    selection covering all their changes (the merge-base of their bases)."""
    by_commit: dict[str, list[PushTarget]] = {}
    for target in targets:
        by_commit.setdefault(target.commit, []).append(target)
    groups = []
    for commit, members in by_commit.items():
        selections = {t.selection for t in members}
        if len(selections) == 1:
            selection = members[0].selection
        elif any(s.everything for s in selections):
            selection = everything_at(commit)
        else:
            bases = [repo.merge_base(s.from_ref or commit, commit) for s in selections]
            common = run(["merge-base", "--octopus", *bases], repo.root, check=False).strip()
            selection = Selection(common, commit) if common else everything_at(commit)
        groups.append(PushGroup(commit, selection, tuple(members)))
    return groups


# -- which pushes deploy ------------------------------------------------------------------


def default_branch(repo: Repo, remote: str | None) -> str | None:
    """The remote's default branch by name: from the remote-tracking refs, else by asking
    the remote (only asked when a push has something to deploy)."""
    if not remote:
        return None
    known = repo.default_remote_branch(remote)
    if known:
        return known.split("/", 1)[1] if known.startswith(f"{remote}/") else known
    try:
        out = ls_remote(repo.root, remote, "HEAD", symref=True)
    except PachhookError:
        return None  # unknown: the push deploys nothing, and says why
    for line in out.splitlines():
        if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
            return line[len("ref: refs/heads/") : -len("\tHEAD")]
    return None


def matches(branch: str, patterns: Iterable[str]) -> bool:
    """`*` stays within one path segment, `**` crosses them (`release/*`, `hotfix/**`)."""
    return any(compile_glob(p).fullmatch(branch) for p in patterns)


class DeployBranches:
    """Which pushed refs deploy: branches matching `[hooks] deploy_branches`, or the
    remote's default branch when none are configured (looked up once, when needed)."""

    def __init__(self, repo: Repo, remote: str | None) -> None:
        self.repo = repo
        self.remote = remote
        self._default: tuple[str | None] | None = None

    def patterns(self, configured: tuple[str, ...] | None) -> tuple[str, ...]:
        if configured is not None:
            return configured
        if self._default is None:
            self._default = (default_branch(self.repo, self.remote),)
        name = self._default[0]
        return (name,) if name else ()

    def deploys(self, update: RefUpdate, configured: tuple[str, ...] | None) -> bool:
        branch = update.branch
        return bool(self.remote and branch and matches(branch, self.patterns(configured)))

    def why_not(
        self, update: RefUpdate, configured: tuple[str, ...] | None, origin: str = ""
    ) -> str:
        """One line for a ref that does not deploy; `origin`: where `configured` was read."""
        done = "images pushed, no pipeline updated"
        if update.branch is None:
            return f"{update.remote_ref} is not a branch: {done}"
        if not self.remote:
            return f"{update.remote_ref}: the remote is not known: {done}"
        patterns = self.patterns(configured)
        if not patterns:
            return (
                f"{update.branch}: the remote names no default branch and "
                f"[hooks] deploy_branches is not set: {done}"
            )
        where = (
            (origin if origin and origin != "default" else "[hooks] deploy_branches")
            if configured is not None
            else "the remote's default branch"
        )
        return f"{update.branch} is not a deploy branch ({where}: {', '.join(patterns)}): {done}"
