"""What a workspace is read from: a commit's tree or the working tree.

Both give the same view: sorted repository-relative paths, each file's bytes, and a
(mode, blob id) entry. For the working tree the blob id is computed from the file's
content the way git computes it, so the same content has the same id whichever source
it came from, and so the same input digest.

A build reads a folder of a source through `Source.folder()`: a commit's files come
through GitPython's object streams (a repository object per build, so concurrent builds
never share a stream), the working tree's from disk, hashed as they are read so that a
save during the build can be caught.
"""

from __future__ import annotations

import io
import os
import stat
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import IO, NamedTuple, cast

from pachhook.errors import PachhookError, one_line
from pachhook.repo import checkout, git


class Entry(NamedTuple):
    mode: str
    oid: str


class BlobHasher:
    """git's blob id of content given in pieces; the one content hasher of pachhook."""

    def __init__(self, size: int) -> None:
        import hashlib  # here: OpenSSL's start-up is not for the no-op path

        self._sha = hashlib.sha1(b"blob %d\0" % size)

    def update(self, data: bytes) -> None:
        self._sha.update(data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def blob_id(data: bytes) -> str:
    hasher = BlobHasher(len(data))
    hasher.update(data)
    return hasher.hexdigest()


def inside(path: str, folder: str) -> str | None:
    """`path` relative to `folder` (both repository-relative), or None when outside."""
    if folder == ".":
        return path
    return path[len(folder) + 1 :] if path.startswith(folder + "/") else None


class Source(ABC):
    repo: git.Repo
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

    @property
    @abstractmethod
    def revision(self) -> str:
        """What an image built from this source records as its revision."""

    @abstractmethod
    def folder(self, folder: str, extra: Sequence[str] = ()) -> FolderFiles:
        """The files under `folder`, for one build to read (closed by the reader);
        `extra`: files git ignores that the build reads too (the working tree's)."""

    def last_commit_touching(self, paths: Sequence[str]) -> str | None:
        """The last commit that changed any of `paths`; None where there are no commits
        to tell (the working tree)."""
        return None

    def is_link(self, path: str) -> bool:
        try:
            return self.entry(path).mode == "120000"
        except (KeyError, FileNotFoundError):
            return False

    # -- what a checkout makes of a file (.gitattributes: Git LFS, eol, filters) --

    @cached_property
    def _attributes(self) -> bool:
        return checkout.has_attributes(self.paths, self.repo.git_dir)

    @cached_property
    def _rules(self) -> dict[str, checkout.Rule | None]:
        return {}

    def checkout_rules(self, paths: Iterable[str]) -> dict[str, checkout.Rule]:
        """The checkout rule of each of `paths` that has one. The paths not asked before
        are asked of git in one batch: ask for many at once (a commit's attributes need
        its tree read into an index, whatever the number of paths)."""
        if not self._attributes:
            return {}
        paths = list(paths)
        wanted = [p for p in paths if p not in self._rules]
        if wanted:
            commit = self.commit if self._committed else None
            found = checkout.rules(self.repo.root, wanted, commit)
            for path in wanted:
                self._rules[path] = found.get(path)
        return {p: rule for p in paths if (rule := self._rules.get(p)) is not None}

    _committed = True  # rules come from the commit's .gitattributes

    def content_entry(self, path: str) -> Entry:
        """`entry`, with the id of what a checkout gives where a rule changes the content:
        the input digest follows the files as `docker build` in a checkout sees them."""
        entry = self.entry(path)
        rule = self.checkout_rules([path]).get(path) if self._attributes else None
        if rule is None or entry.mode == "120000":
            return entry
        clean = self.read(path) if rule.filter == "lfs" else None
        return Entry(entry.mode, checkout.content_id(rule, entry.oid, clean))

    def text(self, path: str) -> str | None:
        data = self.read(path)
        return None if data is None else data.decode("utf-8", errors="replace")

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release any helper process."""

    @property
    def unmerged(self) -> frozenset[str]:
        """Files in a merge conflict (only a working tree can hold them)."""
        return frozenset()


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

    @property
    def revision(self) -> str:
        return self.commit

    def read(self, path: str) -> bytes | None:
        if "_entries" not in self.__dict__:
            # Before the tree is listed (as on a hook's fast path), read by name.
            return self._reader.read(f"{self.commit}:{path}")
        entry = self._entries.get(path)
        return None if entry is None else self._reader.read(entry.oid)

    def entry(self, path: str) -> Entry:
        return self._entries[path]

    def folder(self, folder: str, extra: Sequence[str] = ()) -> FolderFiles:
        return CommitFiles(self.repo.root, self.commit, folder, self)

    def last_commit_touching(self, paths: Sequence[str]) -> str | None:
        return self.repo.last_commit_touching(self.commit, paths)

    def close(self) -> None:
        self._reader.close()


class WorkingTreeSource(Source):
    """Tracked files that still exist plus untracked files git does not ignore."""

    def __init__(self, repo: git.Repo) -> None:
        self.repo = repo
        self.commit = repo.head()
        self.label = "working tree"
        self._hashed: dict[str, Entry] = {}
        self._unmerged: frozenset[str] = frozenset()

    @cached_property
    def _index(self) -> dict[str, Entry]:
        """Mode and blob id of every file in git's index (gitlinks left out)."""
        out = {}
        conflicted = set()
        for record in git.zsplit(self.repo.git("ls-files", "-z", "--stage")):
            meta, path = record.split("\t", 1)
            mode, oid, stage = meta.split(" ")
            if stage != "0":
                conflicted.add(path)
            if mode != "160000":
                out[path] = Entry(mode, oid)
        self._unmerged = frozenset(conflicted)
        return out

    @property
    def unmerged(self) -> frozenset[str]:
        self._index  # noqa: B018 - listing the index finds them
        return self._unmerged

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

    @property
    def revision(self) -> str:
        return f"{self.commit}+working-tree" if self.commit else "working-tree"

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

    def folder(self, folder: str, extra: Sequence[str] = ()) -> FolderFiles:
        return WorkingTreeFiles(self, folder, extra)

    _committed = False  # the working tree's .gitattributes

    def content_entry(self, path: str) -> Entry:
        entry = self.entry(path)
        rule = self.checkout_rules([path]).get(path) if self._attributes else None
        if rule is None or entry.mode == "120000":
            return entry
        if rule.filter != "lfs":
            return Entry(entry.mode, checkout.content_id(rule, entry.oid, None))
        indexed = self._index.get(path)
        if indexed is not None and path not in self._worktree_status:
            # Unchanged since checkout: the index's pointer names the content.
            clean = self.repo.git("cat-file", "blob", indexed.oid).encode(
                "utf-8", "surrogateescape"
            )
            return Entry(entry.mode, checkout.content_id(rule, indexed.oid, clean))
        with open(self.repo.root / path, "rb") as handle:
            head = handle.read(checkout.LFS_POINTER_MAX + 1)
        oid = checkout.lfs_oid(head) or checkout.sha256_file(self.repo.root / path)
        pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + oid.encode() + b"\n"
        return Entry(entry.mode, checkout.content_id(rule, entry.oid, pointer))

    def ignored(self, folder: str) -> list[str]:
        """The files under `folder` that git ignores (build outputs, caches), sorted."""
        listed = git.zsplit(
            self.repo.git(
                "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--", folder
            )
        )
        return sorted(p for p in listed if not p.endswith("/"))


# -- a folder's files, for a build -----------------------------------------------------------


class FolderFiles:
    """The files of one folder of a source, as one build reads them."""

    folder: str
    mtime: float  # the modification time a build context gives its files

    def files(self) -> Iterator[str]:
        """Repository-relative paths of the files inside the folder, sorted."""
        raise NotImplementedError

    def open(self, path: str) -> tuple[int, int, IO[bytes]]:
        """(git mode, size, stream) of a repository-relative file."""
        raise NotImplementedError

    def read(self, path: str) -> bytes | None:
        try:
            mode, size, stream = self.open(path)
        except (KeyError, FileNotFoundError, NotADirectoryError):
            return None
        return stream.read(size)

    def changed_since_planned(self, inputs: Iterable[str]) -> list[str]:
        """Inputs whose content, as it was read, is not what the plan saw."""
        return []

    def close(self) -> None:
        """Release helper processes."""


class CommitFiles(FolderFiles):
    """A commit's tree through GitPython: a repository object (and its cat-file processes)
    per build, so concurrent builds never share a stream."""

    def __init__(self, root: Path, commit: str, folder: str, source: Source | None = None) -> None:
        import git as gitpython

        self.folder = folder
        self.source = source  # its checkout rules (Git LFS, eol, filters), when given
        self._rules: dict[str, checkout.Rule] | None = None
        try:
            self._repo = gitpython.Repo(root)
            commit_object = self._repo.commit(commit)
        except (gitpython.GitError, ValueError) as exc:
            raise PachhookError(
                f"git: cannot read commit {commit[:12]} in {root} ({one_line(str(exc), 120)}); "
                "fetch it or check the repository"
            ) from None
        self.commit = commit
        self.tree = commit_object.tree
        self.mtime = float(commit_object.committed_date)

    def files(self) -> Iterator[str]:
        try:
            top = self.tree if self.folder == "." else self.tree / self.folder
        except KeyError:
            return iter(())
        if top.type != "tree":
            return iter(())
        found = (getattr(item, "path", "") for item in top.traverse() if _is_blob(item))
        listed = sorted(str(path) for path in found)
        if self.source is not None and self._rules is None:
            # Asked before any blob is streamed: GitPython's reader serves one at a time.
            self._rules = self.source.checkout_rules(listed)
        return iter(listed)

    def close(self) -> None:
        self._repo.close()

    def open(self, path: str) -> tuple[int, int, IO[bytes]]:
        import git as gitpython
        import gitdb.exc

        rule = self._rule(path)
        blob = self.tree / path
        if blob.type != "blob":
            raise KeyError(path)
        try:
            stream = blob.data_stream
        except (gitpython.GitError, gitdb.exc.ODBError, ValueError) as exc:
            # A partial or shallow clone can lack the blob itself.
            raise PachhookError(
                f"git: cannot read {path} of commit {self.commit[:12]} "
                f"({one_line(str(exc), 120)}); fetch the missing objects and run again"
            ) from None
        if rule is not None and int(blob.mode) != 0o120000:
            # What a checkout writes: the LFS object, CRLF line endings, a filter's output.
            source = cast(Source, self.source)
            out = checkout.smudged(source.repo.root, source.repo.git_dir, path, stream.read(), rule)
            size = out.seek(0, io.SEEK_END)
            out.seek(0)
            return int(blob.mode), size, out
        return int(blob.mode), int(stream.size), stream

    def _rule(self, path: str) -> checkout.Rule | None:
        if self.source is None:
            return None
        if self._rules is None:
            list(self.files())
        return (self._rules or {}).get(path)


def _is_blob(item: object) -> bool:
    # Submodules (commits in the tree) have no content to send.
    return getattr(item, "type", "") == "blob"


class WorkingTreeFiles(FolderFiles):
    """The working tree: the files git lists (tracked and untracked, not git-ignored),
    which are also the files the input digest was computed from."""

    def __init__(self, source: Source, folder: str, extra: Sequence[str] = ()) -> None:
        self.folder = folder
        self.source = source
        self.extra = extra
        self.root = source.repo.root
        self.mtime = time.time()
        # Blob ids of what was actually packed: the files may change while they are read.
        self._packed: dict[str, _HashingReader] = {}

    def files(self) -> Iterator[str]:
        listed = (p for p in self.source.paths if inside(p, self.folder) is not None)
        if not self.extra:
            return listed
        return iter(
            sorted({*listed, *(p for p in self.extra if inside(p, self.folder) is not None)})
        )

    def open(self, path: str) -> tuple[int, int, IO[bytes]]:
        full = self.root / path
        info = full.lstat()
        raw: IO[bytes]
        rule = None
        if os.path.islink(full):
            target = os.fsencode(os.readlink(full))
            mode, size, raw = 0o120000, len(target), io.BytesIO(target)
        else:
            mode = 0o100755 if info.st_mode & 0o100 else 0o100644
            size, raw = info.st_size, open(full, "rb")  # noqa: SIM115 - closed by the tar loop
            rule = self.source.checkout_rules([path]).get(path)
            if rule is not None and rule.filter == "lfs" and size <= checkout.LFS_POINTER_MAX:
                head = raw.read(size)
                raw.close()
                if checkout.lfs_oid(head) is not None:
                    # Checked out without git-lfs: the pointer, not the content, is on disk.
                    raise PachhookError(
                        f"{path} is a Git LFS pointer in the working tree, not its content; "
                        "install git-lfs, run git lfs install and git lfs pull, then run again"
                    )
                raw = io.BytesIO(head)
        reader = _HashingReader(raw, size, sha256=rule is not None and rule.filter == "lfs")
        self._packed[path] = reader
        return mode, size, cast(IO[bytes], reader)

    def changed_since_planned(self, inputs: Iterable[str]) -> list[str]:
        """A save while the context was written would otherwise ship new content under
        the old content's tag."""
        changed = []
        for path in inputs:
            reader = self._packed.get(path)
            if reader is None:
                continue
            expected = self.source.content_entry(path).oid
            if expected.startswith("lfs:"):
                # A Git LFS file's id is its content's sha256 (see checkout.content_id).
                if not expected.startswith(f"lfs:{reader.sha256()}"):
                    changed.append(path)
            elif "+" in expected:
                continue  # eol and filters: the id is the clean blob's, not the bytes on disk
            elif reader.blob_id() != expected:
                changed.append(path)
        return changed


class _HashingReader:
    """A file being read, and the git blob id of the bytes read from it."""

    def __init__(self, raw: IO[bytes], size: int, *, sha256: bool = False) -> None:
        self._raw = raw
        self._hasher = BlobHasher(size)
        import hashlib

        self._sha256 = hashlib.sha256() if sha256 else None
        self._size = size
        self._read = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._hasher.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        self._read += len(data)
        return data

    def sha256(self) -> str:
        done = self._sha256 is not None and self._read == self._size
        return self._sha256.hexdigest() if done and self._sha256 else ""

    def blob_id(self) -> str:
        if self._read != self._size:  # the file grew or shrank while it was read
            return ""
        return self._hasher.hexdigest()

    def close(self) -> None:
        self._raw.close()
