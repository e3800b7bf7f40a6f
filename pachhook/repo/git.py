"""Git through a small subprocess helper with NUL-separated output.

GitPython is used where an object stream is wanted (build contexts); the paths
that every hook run takes (ranges, merge-bases, changed paths, listings) call
git directly: importing GitPython alone costs more than a no-op hook may take.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, NamedTuple

from pachhook.errors import InputError, PachhookError

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


class GitError(PachhookError):
    exit_code = 2


REMOTE_TIMEOUT = 60.0  # seconds a remote (ls-remote) may take to answer


def _call(
    args: Sequence[str],
    cwd: Path | str,
    *,
    input: bytes | None = None,
    timeout: float | None = None,
    remote: bool = False,
    extra_env: Mapping[str, str] | None = None,
    stdout: IO[bytes] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """The one place pachhook starts git: no optional locks, C locale, and for calls that
    reach a remote, no prompt (no one is there to answer) and a deadline. `stdout`: a
    file that takes the output (a large blob) instead of memory."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", **(extra_env or {})}
    if remote:
        env["GIT_TERMINAL_PROMPT"] = "0"
        timeout = REMOTE_TIMEOUT if timeout is None else timeout
    try:
        if stdout is not None:
            return subprocess.run(
                ["git", *args],
                cwd=cwd,
                input=input,
                stdout=stdout,
                stderr=subprocess.PIPE,
                env=env,
                timeout=timeout,
            )
        return subprocess.run(
            ["git", *args], cwd=cwd, input=input, capture_output=True, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args)}: no answer within {timeout:.0f}s") from None
    except FileNotFoundError:
        raise InputError("git is not installed (not found on PATH); install git") from None


def run(
    args: Sequence[str],
    cwd: Path | str,
    *,
    check: bool = True,
    input: bytes | None = None,
    timeout: float | None = None,
    remote: bool = False,
    extra_env: Mapping[str, str] | None = None,
) -> str:
    proc = _call(args, cwd, input=input, timeout=timeout, remote=remote, extra_env=extra_env)
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {last_line(proc.stderr) or 'failed'}")
    return proc.stdout.decode("utf-8", errors="surrogateescape")


def last_line(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def ls_remote(root: Path, where: str, *patterns: str, symref: bool = False) -> str:
    """`git ls-remote` of a remote (name or URL), bounded by REMOTE_TIMEOUT."""
    options = ["--symref"] if symref else []
    return run(["ls-remote", *options, "--", where, *patterns], root, remote=True)


def zsplit(out: str) -> list[str]:
    return [part for part in out.split("\0") if part]


class Repo(NamedTuple):
    """A git repository: its work tree and the folder pachhook keeps its state in."""

    root: Path
    git_dir: Path  # the common dir, shared by every worktree
    shallow: bool

    @classmethod
    def discover(cls, cwd: Path | str = ".") -> Repo:
        proc = _call(
            ["rev-parse", "--show-toplevel", "--git-common-dir", "--is-shallow-repository"], cwd
        )
        if proc.returncode != 0:
            raise InputError(
                f"{Path(cwd).resolve()}: not inside a git work tree; run pachhook from your repository"
            )
        top, common, shallow = proc.stdout.decode("utf-8", errors="surrogateescape").splitlines()
        git_dir = Path(common)
        if not git_dir.is_absolute():
            git_dir = (Path(cwd) / git_dir).resolve()
        return cls(Path(top), git_dir, shallow == "true")

    @property
    def state_dir(self) -> Path:
        return self.git_dir / "pachhook"

    def git(self, *args: str, check: bool = True) -> str:
        return run(args, self.root, check=check)

    def resolve(self, ref: str) -> str:
        out = run(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], self.root, check=False)
        if not out.strip():
            hint = " (this clone is shallow: git fetch --unshallow)" if self.shallow else ""
            raise InputError(f"git: no commit named '{ref}'{hint}; check the ref or fetch it")
        return out.strip()

    def resolve_all(self, refs: Sequence[str]) -> list[str]:
        """Commit ids of several refs in one git call; a bad ref is named by `resolve`."""
        args = [f"{ref}^{{commit}}" for ref in refs]
        ids = run(["rev-parse", *args, "--"], self.root, check=False).split()
        if len(ids) != len(refs) or not all(len(i) == 40 for i in ids):
            return [self.resolve(ref) for ref in refs]
        return ids

    def commit_of(self, ref: str) -> str | None:
        """The commit `ref` names; None when it names none."""
        out = run(["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], self.root, check=False)
        return out.strip() or None

    def head(self) -> str | None:
        """HEAD's commit id; None in a repository with no commits yet."""
        return self.commit_of("HEAD")

    def has_commits(self) -> bool:
        return bool(
            run(["rev-parse", "--verify", "--quiet", "HEAD"], self.root, check=False).strip()
        )

    def merge_base(self, a: str, b: str) -> str:
        out = run(["merge-base", a, b], self.root, check=False).strip()
        if not out:
            if self.shallow:
                raise InputError(
                    f"git: no merge-base of {a[:12]} and {b[:12]} in this shallow clone; "
                    "run git fetch --unshallow (or --deepen N), or use --all"
                )
            raise InputError(
                f"git: {a[:12]} and {b[:12]} share no history; pick another --from or use --all"
            )
        return out

    def upstream(self) -> str | None:
        out = run(
            ["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}"],
            self.root,
            check=False,
        )
        return out.strip() or None

    def default_remote_branch(self, remote: str = "origin") -> str | None:
        """The remote's default branch as a remote-tracking ref (`origin/main`), if known."""
        out = run(
            ["symbolic-ref", "--quiet", "--short", f"refs/remotes/{remote}/HEAD"],
            self.root,
            check=False,
        ).strip()
        if out:
            return out
        for name in ("main", "master"):
            ref = f"refs/remotes/{remote}/{name}"
            if run(["rev-parse", "--verify", "--quiet", ref], self.root, check=False).strip():
                return f"{remote}/{name}"
        return None

    def changed_paths(self, base: str, to: str) -> set[str]:
        # --no-renames reports a rename as a deletion and an addition: both names count.
        return set(zsplit(self.git("diff", "--name-only", "--no-renames", "-z", base, to, "--")))

    def last_commit_touching(self, commit: str, paths: Sequence[str]) -> str:
        out = self.git("log", "-1", "--format=%H", commit, "--", *paths) if paths else ""
        return out.strip() or commit


class BlobReader:
    """Reads many blobs through one `git cat-file --batch` process."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._proc: subprocess.Popen[bytes] | None = None

    def read(self, object_name: str) -> bytes | None:
        if self._proc is None:
            self._proc = subprocess.Popen(
                ["git", "cat-file", "--batch"],
                cwd=self._root,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        assert self._proc.stdin and self._proc.stdout
        self._proc.stdin.write(object_name.encode() + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) != 3:
            return None
        size = int(header[2])
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)
        return data

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin
            self._proc.stdin.close()
            self._proc.wait()
            self._proc = None


def iter_tree(root: Path, commit: str) -> Iterator[tuple[str, str, str]]:
    """(mode, blob id, path) for every file of a commit; submodules left out."""
    for record in zsplit(run(["ls-tree", "-r", "-z", "--full-tree", commit], root)):
        meta, path = record.split("\t", 1)
        mode, kind, oid = meta.split(" ")
        if kind == "blob":
            yield mode, oid, path
