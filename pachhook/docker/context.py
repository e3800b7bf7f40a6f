"""The build context: a tar for the classic builder, a folder for BuildKit.

The build context comes from the source the plan was made from (`Source.folder`): for a
commit, the files of its tree with git's modes, never the working tree; for the working
tree, the files on disk. Either way the ignore file in force filters it, as Docker's CLI
would.

- Classic (`write_context`): a tar streamed to the engine; a Dockerfile from outside its
  context goes in under a hidden name.
- BuildKit (`write_context_dir`): a folder. BuildKit applies no ignore file at all to a
  tar on standard input, and reads a Dockerfile only from inside such a tar, where `COPY .`
  would copy it. So the filtered files go into `ctx/`, and the Dockerfile into `df/` beside
  `Dockerfile.dockerignore`, which holds the rules in force (or none): the CLI applies
  exactly those to `ctx/` again (no change on a filtered tree), never a `.dockerignore`
  that is not in force, and sends only what the build reads.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pachhook.config import ImageConfig
from pachhook.docker.ignore import IGNORE_FILE, IgnoreMatcher, compile_ignore, ignore_file
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


@dataclass(frozen=True)
class ContextDir:
    """A build context as a folder, and the Dockerfile to build it with."""

    context: Path
    dockerfile: Path  # beside the ignore rules in force, as `<name>.dockerignore`
    files: int


def write_context_dir(files: FolderFiles, image: ImageConfig, root: Path) -> ContextDir:
    """Write the image's context for BuildKit under `root` (an empty folder): the files the
    ignore file in force (BuildKit's rules: see ignore.py) lets through, with git's modes."""
    ignore_path = ignore_file(image, "buildkit", lambda path: files.read(path) is not None)
    ignore_text = files.read(ignore_path) if ignore_path else None
    rules = (ignore_text or b"").decode("utf-8", errors="replace")
    matcher = compile_ignore(rules, ignore_path or IGNORE_FILE)
    folder = root / "ctx"
    folder.mkdir()
    count = 0
    folders: set[Path] = set()
    for path in files.files():
        relative = inside(path, image.context)
        if relative is None or matcher.excluded(relative):
            continue
        target = folder / relative
        parent = Path(relative).parent
        if parent not in folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            folders.add(parent)
            folders.update(parent.parents)
        mode, size, stream = files.open(path)
        try:
            _write_file(target, mode, size, stream, files.mtime)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        count += 1
    # The same times for the same source: what COPY puts in a layer is then the same too.
    for made in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        os.utime(folder / made, (files.mtime, files.mtime))
    data = files.read(image.dockerfile_path)
    if data is None:
        raise PachhookError(
            f"{image.dockerfile_path}: the Dockerfile of {image.name} is missing from the "
            "source; commit it or fix image.dockerfile"
        )
    (root / "df").mkdir()
    dockerfile = root / "df" / "Dockerfile"
    dockerfile.write_bytes(data)
    (root / "df" / f"Dockerfile{IGNORE_FILE}").write_text(rules, encoding="utf-8")
    return ContextDir(folder, dockerfile, count)


def _write_file(target: Path, git_mode: int, size: int, data: IO[bytes], mtime: float) -> None:
    if git_mode == 0o120000:
        target.symlink_to(os.fsdecode(data.read(size)))
    else:
        with open(target, "wb") as out:
            shutil.copyfileobj(data, out, 1 << 20)
        target.chmod(0o755 if git_mode & 0o111 else 0o644)
    os.utime(target, (mtime, mtime), follow_symlinks=False)
