"""SELECTION (`--from/--to`, `--working-tree`, `--all`) -> the source to read and the change set."""

from __future__ import annotations

from typing import NamedTuple

from pachhook.errors import InputError
from pachhook.repo.ci import CiChange
from pachhook.repo.git import Repo
from pachhook.repo.source import CommitSource, Source, WorkingTreeSource


class ChangeSet(NamedTuple):
    paths: frozenset[str]
    everything: bool = False  # --all: every image and pipeline, decided by state
    base: str | None = None  # the commit the change is measured from
    target: str = "HEAD"  # a commit id or "working tree"
    why: str | None = None  # why every image and pipeline is decided by state, when not --all


class Selection(NamedTuple):
    from_ref: str | None = None
    to_ref: str | None = None
    working_tree: bool = False
    everything: bool = False
    ci: CiChange | None = None  # the CI job, when no selection was given there

    @property
    def explicit(self) -> bool:
        return bool(self.from_ref or self.to_ref or self.working_tree or self.everything)


class Resolved(NamedTuple):
    source: Source
    changes: ChangeSet


def default_base(repo: Repo) -> str | None:
    """HEAD's upstream, else the remote's default branch; None when there is neither."""
    return repo.upstream() or repo.default_remote_branch()


def resolve(repo: Repo, selection: Selection) -> Resolved:
    if selection.to_ref and selection.working_tree:
        raise InputError(
            "--to and --working-tree exclude each other: the working tree is the target"
        )
    if selection.to_ref and not selection.from_ref:
        raise InputError("--to needs --from")
    if selection.ci is not None and not selection.explicit:
        return _by_state(repo, selection.ci)

    worktree: WorkingTreeSource | None = None
    if selection.working_tree:
        worktree = WorkingTreeSource(repo)
        if worktree.commit is None:
            changes = ChangeSet(
                frozenset(worktree.paths), selection.everything, None, worktree.label
            )
            return Resolved(worktree, changes)
        target: Source = worktree
        head = worktree.commit
        start = repo.resolve(selection.from_ref) if selection.from_ref else None
    else:
        if not selection.to_ref and not repo.has_commits():
            raise InputError(
                f"{repo.root}: the repository has no commits yet; commit first, or use --working-tree"
            )
        refs = [selection.to_ref or "HEAD"] + ([selection.from_ref] if selection.from_ref else [])
        head, *rest = repo.resolve_all(refs)
        target = CommitSource(repo, head)
        start = rest[0] if rest else None
    assert head is not None

    if selection.everything and start is None:
        return Resolved(target, ChangeSet(frozenset(), True, None, target.label))
    if start is not None:
        base = repo.merge_base(start, head)
    else:
        upstream = default_base(repo)
        if upstream is not None:
            base = repo.merge_base(repo.resolve(upstream), head)
        elif selection.working_tree:
            base = head  # only what is not committed yet
        else:
            raise InputError(
                "HEAD has no upstream branch and the remote names no default branch; "
                "use --from REF, --working-tree or --all"
            )
    paths = repo.changed_paths(base, head) if base != head else set()
    if worktree is not None:
        paths |= worktree.changes()
    return Resolved(target, ChangeSet(frozenset(paths), selection.everything, base, target.label))


def _by_state(repo: Repo, ci: CiChange) -> Resolved:
    """In CI with no selection: every image and pipeline, decided by state. A checkout there
    is often one commit deep and its own upstream, so history cannot say what the cluster
    lacks; the registry and the cluster can. The event's start commit, when the clone has
    it, only names the files that changed (the reasons), never what is checked."""
    if not repo.has_commits():
        raise InputError(
            f"{repo.root}: the repository has no commits; check out the commit to run for"
        )
    head = repo.resolve("HEAD")
    target = CommitSource(repo, head)
    why = f"{ci.system}: decided by state (no selection given)"
    start = repo.commit_of(ci.since) if ci.since else None
    if start is None:
        return Resolved(target, ChangeSet(frozenset(), True, None, target.label, why))
    base = repo.git("merge-base", start, head, check=False).strip()
    if not base:  # the clone is too shallow to hold the common history
        return Resolved(target, ChangeSet(frozenset(), True, None, target.label, why))
    paths = repo.changed_paths(base, head) if base != head else set()
    return Resolved(target, ChangeSet(frozenset(paths), True, base, target.label, why))
