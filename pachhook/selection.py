"""SELECTION (`--from/--to`, `--working-tree`, `--all`) -> the source to read and the change set."""

from __future__ import annotations

from dataclasses import dataclass

from pachhook.errors import InputError
from pachhook.git import Repo
from pachhook.plan import ChangeSet
from pachhook.source import CommitSource, Source, WorkingTreeSource


@dataclass(frozen=True)
class Selection:
    from_ref: str | None = None
    to_ref: str | None = None
    working_tree: bool = False
    everything: bool = False


@dataclass
class Resolved:
    source: Source
    changes: ChangeSet


def default_base(repo: Repo) -> str | None:
    """HEAD's upstream, else the remote's default branch; None when there is neither."""
    upstream = repo.upstream()
    if upstream:
        return upstream
    return repo.default_remote_branch()


def resolve(repo: Repo, selection: Selection) -> Resolved:
    if selection.to_ref and selection.working_tree:
        raise InputError(
            "--to and --working-tree exclude each other: the working tree is the target"
        )
    if selection.to_ref and not selection.from_ref:
        raise InputError("--to needs --from")
    if not repo.has_commits():
        if not selection.working_tree:
            raise InputError(
                f"{repo.root}: the repository has no commits yet; commit first, or use --working-tree"
            )
        source = WorkingTreeSource(repo)
        return Resolved(
            source, ChangeSet(frozenset(source.paths), selection.everything, None, source.label)
        )

    target: Source
    if selection.working_tree:
        target = WorkingTreeSource(repo)
        head = target.commit
    else:
        head = repo.resolve(selection.to_ref or "HEAD")
        target = CommitSource(repo, head)
    assert head is not None

    if selection.everything and not selection.from_ref:
        return Resolved(target, ChangeSet(frozenset(), True, None, target.label))

    if selection.from_ref:
        base = repo.merge_base(repo.resolve(selection.from_ref), head)
    else:
        upstream = default_base(repo)
        if upstream is None:
            if not selection.working_tree:
                raise InputError(
                    "HEAD has no upstream branch and the remote names no default branch; "
                    "use --from REF, --working-tree or --all"
                )
            base = head
        else:
            base = repo.merge_base(repo.resolve(upstream), head)

    paths = repo.changed_paths(base, head)
    if selection.working_tree:
        paths |= repo.working_tree_changes()
    return Resolved(target, ChangeSet(frozenset(paths), selection.everything, base, target.label))
