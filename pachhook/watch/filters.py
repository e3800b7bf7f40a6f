"""What the watcher ignores: version control, caches, editors' scratch files, and the
paths git ignores.

A filter is a callable, separate from the watcher (as in watchfiles): it is asked per
change and repository-relative path, True keeps it. `DefaultFilter` and `RepoFilter`
also answer for whole folders at once (to give ignored folders no watch) and take a
last look at a settled burst (to ask git about its new paths in one call).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pachhook.repo import git
from pachhook.watch.changes import Change, FileChange


class DefaultFilter:
    """What never goes into an image: version control, Python caches, editors' scratch files.

    Called with a change and a repository-relative path (a folder's path ends with "/");
    True keeps it. `.vscode/` and `.idea/` are not ignored by name: projects track
    their settings, and the planner sees those files as it sees any other; git-ignore
    them where they are not wanted.
    """

    ignore_dirs: frozenset[str] = frozenset(
        {".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
    )
    ignore_names: tuple[str, ...] = (
        r"\.py[cod]$",  # bytecode
        r"^\..*\.sw[a-px]$",  # vim swap files: .x.swp, .x.swo, ... and .x.swx
        r"^\..*\.swpx$",
        r"^4913$",  # vim's probe that a folder is writable
        r"~$",  # backups: vim, emacs, gedit
        r"^#.*#$",  # emacs auto-save
        r"^\.#",  # emacs lock links
        r"___jb_(tmp|old|bak)___$",  # JetBrains "safe write"
        r"\.(tmp|temp)$",
        r"^\.goutputstream-",  # GTK editors' atomic save
        r"\.kate-swp$",
        r"^sed[A-Za-z0-9]{6}$",  # sed -i
    )

    def __init__(self, ignore_paths: Iterable[str] = ()) -> None:
        self._names = re.compile("|".join(f"(?:{p})" for p in self.ignore_names))
        # Files of our own, such as the watcher's log: writing them must not start a run.
        self.ignore_paths = frozenset(ignore_paths)

    def __call__(self, change: Change, path: str) -> bool:
        parts = path.rstrip("/").split("/")
        if path in self.ignore_paths or self.ignore_dirs.intersection(parts):
            return False
        return path.endswith("/") or not self._names.search(parts[-1])

    def ignored_folders(self, folders: Sequence[str]) -> set[str]:
        """Of `folders` (repository-relative), those to give no watch; one batch."""
        return {f for f in folders if not self(Change.added, f + "/")}

    def settle(self, changes: set[FileChange]) -> set[FileChange]:
        """A last look at a settled burst, all paths at once."""
        return changes

    def reload(self) -> None:
        """An ignore file changed."""


class GitIgnore:
    """Which paths git ignores: asked in one `git check-ignore` per batch, answers kept.

    Tracked files are never ignored (git's own rule); nor is a folder that holds one,
    even when a pattern names the folder.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._answers: dict[str, bool] = {}
        self._tracked: frozenset[str] | None = None

    def known(self, path: str) -> bool | None:
        return self._answers.get(path)

    def ignored(self, paths: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(paths))
        unknown = [p for p in wanted if p not in self._answers]
        if unknown:
            if len(self._answers) > 100_000:
                self._answers.clear()
            out = git.run(
                ["check-ignore", "--stdin", "-z"],
                self.root,
                check=False,
                input="\0".join(unknown).encode() + b"\0",
            )
            hits = set(git.zsplit(out))
            for path in unknown:
                # git may answer "dir" for "dir/"
                self._answers[path] = path in hits or path.rstrip("/") in hits
        return {p for p in wanted if self._answers[p]}

    def tracked_folders(self) -> frozenset[str]:
        if self._tracked is None:
            folders: set[str] = set()
            for path in git.zsplit(git.run(["ls-files", "-z"], self.root, check=False)):
                parent = path.rpartition("/")[0]
                while parent and parent not in folders:
                    folders.add(parent)
                    parent = parent.rpartition("/")[0]
            self._tracked = frozenset(folders)
        return self._tracked

    def reload(self) -> None:
        self._answers.clear()
        self._tracked = None


class RepoFilter(DefaultFilter):
    """`DefaultFilter` plus git's ignore rules (.gitignore files, info/exclude,
    core.excludesFile). Per event it answers from what git already said; a settled
    burst's new paths go to git in one call."""

    def __init__(self, root: Path | str, ignore_paths: Iterable[str] = ()) -> None:
        super().__init__(ignore_paths)
        self.git = GitIgnore(Path(root))

    def __call__(self, change: Change, path: str) -> bool:
        return super().__call__(change, path) and not self.git.known(path)

    def ignored_folders(self, folders: Sequence[str]) -> set[str]:
        by_name = super().ignored_folders(folders)
        rest = [f for f in folders if f not in by_name]
        if not rest:
            return by_name
        tracked = self.git.tracked_folders()
        by_git = {p.rstrip("/") for p in self.git.ignored(f + "/" for f in rest)}
        return by_name | (by_git - tracked)

    def settle(self, changes: set[FileChange]) -> set[FileChange]:
        ignored = self.git.ignored(c.path for c in changes)
        return {c for c in changes if c.path not in ignored}

    def reload(self) -> None:
        self.git.reload()


WatchFilter = Callable[[Change, str], bool]
