"""What a checkout makes of a file: `.gitattributes` filters (Git LFS) and line endings.

git stores a file as its "clean" blob; a checkout writes the smudged form: a Git LFS
pointer becomes the real content, `eol=crlf` text gets CRLF line endings, another
`filter=` driver runs its smudge command. `docker build` in a checkout sees that form,
so a build context read from a commit must hold it too, and the input digest must
follow it (see `content_id`).

Only `filter`, `eol` and `text` attributes are followed, as `.gitattributes` files
(and `.git/info/attributes`) give them; `core.autocrlf` and `core.eol` are not (they
are a person's settings, not the repository's).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import IO, NamedTuple

from pachhook.errors import PachhookError, one_line
from pachhook.repo import git

ATTRIBUTES = ("filter", "eol", "text")
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
LFS_POINTER_MAX = 1024  # a pointer is a few lines; anything longer is content
SMUDGE_TIMEOUT = 600.0  # seconds one file's smudge may take
_LFS_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})$", re.M)


class Rule(NamedTuple):
    """How a checkout writes one file."""

    filter: str | None = None  # a filter driver's name: "lfs", ...
    crlf: bool = False  # LF -> CRLF (eol=crlf on text)
    auto: bool = False  # text=auto: only files that look like text

    @property
    def plain(self) -> bool:
        return self.filter is None and not self.crlf

    @property
    def tag(self) -> str:
        """What the rule adds to a file's id in the input digest."""
        parts = [f"filter={self.filter}"] if self.filter else []
        if self.crlf:
            parts.append("eol=crlf" + (",auto" if self.auto else ""))
        return "+".join(parts)


PLAIN = Rule()


def has_attributes(paths: Iterable[str], git_dir: Path) -> bool:
    """Whether any rule can apply: a `.gitattributes` file, or the repository's own."""
    if (git_dir / "info" / "attributes").exists():
        return True
    return any(p == ".gitattributes" or p.endswith("/.gitattributes") for p in paths)


def rules(root: Path, paths: list[str], commit: str | None) -> dict[str, Rule]:
    """The checkout rule of each path that has one. With `commit`, the `.gitattributes`
    files of that commit (read into a temporary index); else the working tree's."""
    if not paths:
        return {}
    import tempfile

    stdin = b"\0".join(p.encode("utf-8", errors="surrogateescape") for p in paths) + b"\0"
    args = ["check-attr", "-z", "--stdin", *ATTRIBUTES]
    if commit is None:
        out = git.run(args, root, input=stdin)
    elif _index_has_attributes_of(root, commit):
        # The usual case (a plan of HEAD in a clean clone): the index holds the commit's
        # .gitattributes files, and reading a whole tree into an index is spared.
        out = git.run([*args[:1], "--cached", *args[1:]], root, input=stdin)
    else:
        with tempfile.TemporaryDirectory(prefix="pachhook-attr-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            git.run(["read-tree", commit], root, extra_env=env)
            out = git.run([*args[:1], "--cached", *args[1:]], root, input=stdin, extra_env=env)
    fields = out.split("\0")
    found: dict[str, dict[str, str]] = {}
    for i in range(0, len(fields) - 2, 3):
        path, name, value = fields[i : i + 3]
        if value != "unspecified":
            found.setdefault(path, {})[name] = value
    return {path: rule for path, values in found.items() if not (rule := _rule(values)).plain}


def _index_has_attributes_of(root: Path, commit: str) -> bool:
    proc = git._call(
        ["diff-index", "--cached", "--quiet", commit, "--", ":(glob)**/.gitattributes"], root
    )
    return proc.returncode == 0


def _rule(values: dict[str, str]) -> Rule:
    text = values.get("text")
    driver = values.get("filter")
    driver = driver if driver not in (None, "unset", "set") else None
    if text == "unset":
        return Rule(filter=driver)
    return Rule(filter=driver, crlf=values.get("eol") == "crlf", auto=text == "auto")


def lfs_oid(data: bytes) -> str | None:
    """The sha256 a Git LFS pointer names; None when `data` is no pointer."""
    if len(data) > LFS_POINTER_MAX or not data.startswith(LFS_POINTER):
        return None
    match = _LFS_OID.search(data)
    return match.group(1).decode() if match else None


def content_id(rule: Rule, clean_oid: str, clean: bytes | None) -> str:
    """A file's id in the input digest: for Git LFS the sha256 of the real content (which
    the pointer names, so no object is read to plan); for other rules the clean blob's id
    and the rule, since the checkout's content is a function of both."""
    if rule.filter == "lfs" and clean is not None:
        oid = lfs_oid(clean)
        if oid is not None:
            rest = Rule(None, rule.crlf, rule.auto).tag
            return f"lfs:{oid}" + (f"+{rest}" if rest else "")
    return f"{clean_oid}+{rule.tag}"


def smudged(root: Path, git_dir: Path, path: str, clean: bytes, rule: Rule) -> IO[bytes]:
    """The checkout's content of a file, as a file to read from (its size by seeking)."""
    import tempfile

    data = to_crlf(clean, rule.auto) if rule.crlf else clean
    out = tempfile.TemporaryFile(prefix="pachhook-smudge-")  # noqa: SIM115 - the caller closes it
    try:
        if rule.filter == "lfs":
            _lfs_smudge(root, git_dir, path, data, out)
        elif rule.filter is not None:
            _driver_smudge(root, path, data, rule.filter, out)
        else:
            out.write(data)
        out.seek(0)
        return out
    except BaseException:
        out.close()
        raise


def to_crlf(data: bytes, auto: bool) -> bytes:
    """LF -> CRLF as git writes `eol=crlf` text; with text=auto, not for files that look
    binary or already hold a CR."""
    if b"\n" not in data:
        return data
    if auto and (b"\0" in data[:8000] or b"\r" in data):
        return data
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


_lfs_checked: dict[Path, bool] = {}


def _lfs_smudge(root: Path, git_dir: Path, path: str, pointer: bytes, out: IO[bytes]) -> None:
    oid = lfs_oid(pointer)
    if oid is None:
        out.write(pointer)  # committed before LFS tracked it: the blob is the content
        return
    if not _lfs_checked.get(root):
        proc = git._call(["lfs", "version"], root)
        if proc.returncode != 0:
            raise PachhookError(
                f"{path} is stored with Git LFS and git-lfs is not installed; install it "
                "(apt-get install git-lfs), run git lfs install and git lfs pull, then run again"
            )
        _lfs_checked[root] = True
    local = git_dir / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    custom_store = git.run(["config", "--get", "lfs.storage"], root, check=False).strip()
    if not custom_store and not local.exists():
        # Not fetched: smudge would go to the network for it, and a build must not wait on that.
        raise PachhookError(
            f"{path}: its Git LFS object {oid[:12]} is not in this clone; run git lfs pull "
            "(or git lfs fetch) and run again"
        )
    proc = git._call(
        ["lfs", "smudge", "--", path], root, input=pointer, stdout=out, timeout=SMUDGE_TIMEOUT
    )
    if proc.returncode != 0:
        raise PachhookError(
            f"{path}: git lfs smudge failed ({one_line(git.last_line(proc.stderr), 160)}); "
            "run git lfs pull and run again"
        )


def _driver_smudge(root: Path, path: str, clean: bytes, driver: str, out: IO[bytes]) -> None:
    command = git.run(["config", "--get", f"filter.{driver}.smudge"], root, check=False).strip()
    if not command:
        required = git.run(
            ["config", "--bool", "--get", f"filter.{driver}.required"], root, check=False
        )
        if required.strip() == "true":
            raise PachhookError(
                f"{path}: filter {driver!r} is required by .gitattributes and not configured "
                f"(git config filter.{driver}.smudge); configure it and run again"
            )
        out.write(clean)  # as a checkout does without the driver
        return
    import shlex
    import subprocess

    # As git runs a driver: through the shell, %f the file's path, in the work tree.
    shell = command.replace("%f", shlex.quote(path))
    try:
        proc = subprocess.run(
            ["sh", "-c", shell],
            cwd=root,
            input=clean,
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=SMUDGE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise PachhookError(
            f"{path}: filter {driver!r} gave no content within {SMUDGE_TIMEOUT:.0f}s"
        ) from None
    if proc.returncode != 0:
        raise PachhookError(
            f"{path}: filter {driver!r} failed ({one_line(git.last_line(proc.stderr), 160)}); "
            "fix the filter and run again"
        )


def sha256_file(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
