"""What a workspace is read from: a commit's tree or the working tree.

Both give the same view: sorted repository-relative paths, each file's bytes,
and a (mode, blob id) entry. For the working tree the blob id is computed from
the file's content the way git computes it, so the same content has the same id
whichever source it came from, and so the same input digest.
"""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
from functools import cached_property
from typing import NamedTuple

from pachhook import git


class Entry(NamedTuple):
    mode: str
    oid: str


def blob_id(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Source(ABC):
    commit: str | None  # the commit a build records as its source; None for an empty repository
    label: str

    @property
    @abstractmethod
    def paths(self) -> list[str]:
        """Every file, sorted."""

    @cached_property
    def path_set(self) -> frozenset[str]:
        return frozenset(self.paths)

    @abstractmethod
    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when the source has no such file."""

    @abstractmethod
    def entry(self, path: str) -> Entry:
        """Mode and blob id of a file of this source."""

    def is_link(self, path: str) -> bool:
        try:
            return self.entry(path).mode == "120000"
        except (KeyError, FileNotFoundError):
            return False

    def text(self, path: str) -> str | None:
        data = self.read(path)
        return None if data is None else data.decode("utf-8", errors="replace")

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release any helper process."""


class CommitSource(Source):
    def __init__(self, repo: git.Repo, commit: str) -> None:
        self.repo = repo
        self.commit: str = commit
        self.label = commit[:12]
        self._reader = git.BlobReader(repo.root)

    @cached_property
    def _entries(self) -> dict[str, Entry]:
        return {
            path: Entry(mode, oid) for mode, oid, path in git.iter_tree(self.repo.root, self.commit)
        }

    @property
    def paths(self) -> list[str]:
        return self._sorted

    @cached_property
    def _sorted(self) -> list[str]:
        return sorted(self._entries)

    def read(self, path: str) -> bytes | None:
        if "_entries" not in self.__dict__:
            # Before the tree is listed (as on a hook's fast path), read by name.
            return self._reader.read(f"{self.commit}:{path}")
        entry = self._entries.get(path)
        return None if entry is None else self._reader.read(entry.oid)

    def entry(self, path: str) -> Entry:
        return self._entries[path]

    def close(self) -> None:
        self._reader.close()


class WorkingTreeSource(Source):
    """Tracked files that still exist plus untracked files git does not ignore."""

    def __init__(self, repo: git.Repo) -> None:
        self.repo = repo
        self.commit = repo.head()
        self.label = "working tree"
        self._hashed: dict[str, Entry] = {}

    @cached_property
    def _index(self) -> dict[str, Entry]:
        """Mode and blob id of every file in git's index (gitlinks left out)."""
        out = {}
        for record in git.zsplit(self.repo.git("ls-files", "-z", "--stage")):
            meta, path = record.split("\t", 1)
            mode, oid, _stage = meta.split(" ")
            if mode != "160000":
                out[path] = Entry(mode, oid)
        return out

    @cached_property
    def _worktree_status(self) -> dict[str, str]:
        """Files whose working copy may differ from the index, with git's status letter:
        their ids are computed from content; `D` ones are gone."""
        fields = git.zsplit(self.repo.git("diff-files", "-z", "--name-status"))
        return dict(zip(fields[1::2], fields[0::2], strict=True))

    @cached_property
    def untracked(self) -> list[str]:
        """Files git does not track and does not ignore."""
        listed = git.zsplit(self.repo.git("ls-files", "-z", "--others", "--exclude-standard"))
        return [p for p in listed if not p.endswith("/")]

    @cached_property
    def _sorted(self) -> list[str]:
        gone = {p for p, status in self._worktree_status.items() if status == "D"}
        paths = {p for p in self._index if p not in gone}
        paths.update(self.untracked)
        return sorted(paths)

    def changes(self) -> set[str]:
        """Staged, unstaged and untracked (not ignored) paths against HEAD."""
        against = self.commit or git.EMPTY_TREE
        changed = git.zsplit(
            self.repo.git("diff", "--name-only", "--no-renames", "-z", against, "--")
        )
        return set(changed) | set(self.untracked)

    @property
    def paths(self) -> list[str]:
        return self._sorted

    def read(self, path: str) -> bytes | None:
        full = self.repo.root / path
        try:
            if full.is_symlink():
                return os.fsencode(os.readlink(full))
            return full.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    def entry(self, path: str) -> Entry:
        indexed = self._index.get(path)
        if indexed is not None and path not in self._worktree_status:
            return indexed
        cached = self._hashed.get(path)
        if cached is not None:
            return cached
        info = (self.repo.root / path).lstat()
        if stat.S_ISLNK(info.st_mode):
            mode = "120000"
        elif info.st_mode & stat.S_IXUSR:
            mode = "100755"
        else:
            mode = "100644"
        entry = Entry(mode, blob_id(self.read(path) or b""))
        self._hashed[path] = entry
        return entry
