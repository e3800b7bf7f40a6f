"""The build context, written as a tar for the engine.

The build context comes from the source the plan was made from: for a commit, the files of
its tree (through GitPython's object streams, with git's modes), never the working tree; for
the working tree, the files on disk. Either way the context's ignore file filters it, as
Docker's CLI would. A Dockerfile from outside its context goes in under a hidden name.

GitPython is imported only when a commit's files are read.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

from pachhook.config import ImageConfig
from pachhook.dockerignore import IGNORE_FILE, IgnoreMatcher, compile_ignore
from pachhook.errors import PachhookError, one_line
from pachhook.source import CommitSource, Source


@dataclass(frozen=True)
class Context:
    """A build context as a tar file, and the Dockerfile's name inside it."""

    file: IO[bytes]
    dockerfile: str
    files: int


def _inside(path: str, folder: str) -> str | None:
    """`path` relative to `folder` (both repository-relative), or None when outside."""
    if folder == ".":
        return path
    return path[len(folder) + 1 :] if path.startswith(folder + "/") else None


def hidden_dockerfile_name(image: ImageConfig) -> str:
    """Where a Dockerfile from outside its context goes in the tar (as Docker's CLI does,
    a dot name that the ignore file then hides from COPY)."""
    return ".pachhook-dockerfile-" + hashlib.sha256(image.dockerfile_path.encode()).hexdigest()[:12]


class _TarWriter:
    """Writes files with git's modes, parents first, owned by root."""

    def __init__(self, out: IO[bytes], mtime: float) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.mtime = int(mtime)
        self.dirs: set[str] = set()
        self.files = 0

    def _info(self, name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mtime = self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def _parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if not parent or parent in self.dirs:
            return
        self._parents(parent)
        info = self._info(parent)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        self.tar.addfile(info)
        self.dirs.add(parent)

    def add(self, path: str, git_mode: int, size: int, data: IO[bytes]) -> None:
        self._parents(path)
        info = self._info(path)
        if git_mode == 0o120000:
            info.type = tarfile.SYMTYPE
            info.linkname = os.fsdecode(data.read(size))
            info.mode = 0o777
            self.tar.addfile(info)
        else:
            info.mode = 0o755 if git_mode & 0o111 else 0o644
            info.size = size
            self.tar.addfile(info, data)
        self.files += 1

    def add_bytes(self, path: str, content: bytes) -> None:
        self.add(path, 0o100644, len(content), io.BytesIO(content))

    def close(self) -> None:
        self.tar.close()


class ContextFiles:
    """The files a source holds for one image: listing, reading, and the ignore file."""

    image: ImageConfig
    mtime: float

    def files(self) -> Iterator[str]:
        """Repository-relative paths of the files inside the context, sorted."""
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

    def close(self) -> None:
        """Release helper processes."""


class CommitFiles(ContextFiles):
    """A commit's tree through GitPython: a repository object (and its cat-file processes)
    per build, so concurrent builds never share a stream."""

    def __init__(self, root: Path, commit: str, image: ImageConfig) -> None:
        import git as gitpython

        self.image = image
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
        context = self.image.context
        try:
            top = self.tree if context == "." else self.tree / context
        except KeyError:
            return iter(())
        if top.type != "tree":
            return iter(())
        found = (getattr(item, "path", "") for item in top.traverse() if _is_blob(item))
        return iter(sorted(str(path) for path in found))

    def close(self) -> None:
        self._repo.close()

    def open(self, path: str) -> tuple[int, int, IO[bytes]]:
        import git as gitpython
        import gitdb.exc

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
        return int(blob.mode), int(stream.size), stream


def _is_blob(item: object) -> bool:
    # Submodules (commits in the tree) have no content to send.
    return getattr(item, "type", "") == "blob"


class WorkingTreeFiles(ContextFiles):
    """The working tree: the files git lists (tracked and untracked, not git-ignored),
    which are also the files the input digest was computed from."""

    def __init__(self, source: Source, root: Path, image: ImageConfig) -> None:
        self.image = image
        self.source = source
        self.root = root
        self.mtime = time.time()
        # Blob ids of what was actually packed: the files may change while they are read.
        self._packed: dict[str, _BlobHasher] = {}

    def files(self) -> Iterator[str]:
        context = self.image.context
        return (p for p in self.source.paths if _inside(p, context) is not None)

    def open(self, path: str) -> tuple[int, int, IO[bytes]]:
        full = self.root / path
        info = full.lstat()
        raw: IO[bytes]
        if os.path.islink(full):
            target = os.fsencode(os.readlink(full))
            mode, size, raw = 0o120000, len(target), io.BytesIO(target)
        else:
            mode = 0o100755 if info.st_mode & 0o100 else 0o100644
            size, raw = info.st_size, open(full, "rb")  # noqa: SIM115 - closed by the tar loop
        hasher = _BlobHasher(raw, size)
        self._packed[path] = hasher
        return mode, size, cast(IO[bytes], hasher)

    def changed_since_planned(self, inputs: Iterable[str]) -> list[str]:
        """Inputs whose packed content is not what the input digest was computed from: a
        save while the context was written would otherwise ship new content under the
        old content's tag."""
        changed = []
        for path in inputs:
            hasher = self._packed.get(path)
            if hasher is not None and hasher.blob_id() != self.source.entry(path).oid:
                changed.append(path)
        return changed


class _BlobHasher:
    """A file being read, and the git blob id of the bytes read from it."""

    def __init__(self, raw: IO[bytes], size: int) -> None:
        self._raw = raw
        self._sha = hashlib.sha1(b"blob %d\0" % size)
        self._size = size
        self._read = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._sha.update(data)
        self._read += len(data)
        return data

    def blob_id(self) -> str:
        if self._read != self._size:  # the file grew or shrank while it was read
            return ""
        return self._sha.hexdigest()

    def close(self) -> None:
        self._raw.close()


def write_context(files: ContextFiles, out: IO[bytes]) -> Context:
    """Write the image's context as a tar to `out`: the files the ignore file lets through,
    plus, always, the Dockerfile and the ignore file."""
    image = files.image
    context = image.context
    ignore_path = IGNORE_FILE if context == "." else f"{context}/{IGNORE_FILE}"
    ignore_text = files.read(ignore_path)
    matcher: IgnoreMatcher | None = (
        compile_ignore(ignore_text.decode("utf-8", errors="replace"), ignore_path)
        if ignore_text is not None
        else None
    )
    inner_dockerfile = _inside(image.dockerfile_path, context)
    hidden = None if inner_dockerfile is not None else hidden_dockerfile_name(image)
    writer = _TarWriter(out, files.mtime)
    for path in files.files():
        relative = _inside(path, context)
        if relative is None or relative == IGNORE_FILE:
            continue
        if matcher and relative != inner_dockerfile and matcher.excluded(relative):
            continue
        mode, size, stream = files.open(path)
        try:
            writer.add(relative, mode, size, stream)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
    if hidden is not None:
        data = files.read(image.dockerfile_path)
        if data is None:
            raise PachhookError(
                f"{image.dockerfile_path}: the Dockerfile of {image.name} is missing from the "
                "source; commit it or fix image.dockerfile"
            )
        writer.add_bytes(hidden, data)
    if hidden is not None:
        # After reading the Dockerfile the engine removes the Dockerfile and the ignore file
        # from the context when the ignore file names them: naming the hidden Dockerfile keeps
        # it out of COPY . (as Docker's CLI does); an ignore file made up here goes too.
        made_up = b"" if ignore_text is not None else f"{IGNORE_FILE}\n".encode()
        writer.add_bytes(IGNORE_FILE, (ignore_text or made_up) + f"\n{hidden}\n".encode())
    elif ignore_text is not None:
        writer.add_bytes(IGNORE_FILE, ignore_text)
    writer.close()
    out.seek(0)
    return Context(out, inner_dockerfile or hidden or "Dockerfile", writer.files)


def context_files(root: Path, source: Source, image: ImageConfig) -> ContextFiles:
    """The files `source` holds for `image`, in the repository at `root`."""
    if isinstance(source, CommitSource):
        return CommitFiles(root, source.commit, image)
    return WorkingTreeFiles(source, root, image)
