"""The build context, written as a tar for the engine.

The build context comes from the source the plan was made from (`Source.folder`): for a
commit, the files of its tree with git's modes, never the working tree; for the working
tree, the files on disk. Either way the context's ignore file filters it, as Docker's CLI
would. A Dockerfile from outside its context goes in under a hidden name.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
from dataclasses import dataclass
from typing import IO

from pachhook.config import ImageConfig
from pachhook.docker.ignore import IGNORE_FILE, IgnoreMatcher, compile_ignore
from pachhook.errors import PachhookError
from pachhook.repo.source import FolderFiles, inside


@dataclass(frozen=True)
class Context:
    """A build context as a tar file, and the Dockerfile's name inside it."""

    file: IO[bytes]
    dockerfile: str
    files: int


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


def write_context(files: FolderFiles, image: ImageConfig, out: IO[bytes]) -> Context:
    """Write the image's context (the folder `files` reads) as a tar to `out`: the files the
    ignore file lets through, plus, always, the Dockerfile and the ignore file."""
    context = image.context
    ignore_path = IGNORE_FILE if context == "." else f"{context}/{IGNORE_FILE}"
    ignore_text = files.read(ignore_path)
    matcher: IgnoreMatcher | None = (
        compile_ignore(ignore_text.decode("utf-8", errors="replace"), ignore_path)
        if ignore_text is not None
        else None
    )
    inner_dockerfile = inside(image.dockerfile_path, context)
    hidden = None if inner_dockerfile is not None else hidden_dockerfile_name(image)
    writer = _TarWriter(out, files.mtime)
    for path in files.files():
        relative = inside(path, context)
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
