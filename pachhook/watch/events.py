"""File events -> settled change sets, for `pachhook watch`.

Modelled on watchfiles: `watch()` is a generator that yields one set of changes per
burst once the burst has settled (`debounce` ms of quiet, or `max_wait` ms after its
first event for a folder that never stops changing), with `step` and `stop_event`
parameters; what to ignore is a separate callable (`pachhook.watchfilter`).

Events are only a signal: the consumer recomputes what changed from the files
themselves. watchdog is imported only when a watch starts, so no other command (and
no git hook) pays for it.

Ignored folders get no watch at all. The root gets a non-recursive watch (it holds
`.git`); below it, each largest subtree that holds no ignored folder gets one
recursive watch and each folder that does hold one a non-recursive watch, so a
`node_modules` or `.venv` never costs a single inotify watch. New folders are
watched as they appear; an ignored folder appearing inside a recursive watch makes
that watch be planned again. When the kernel refuses more inotify watches, the same
watches are polled instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol

from pachhook.watch.changes import Change, FileChange
from pachhook.watch.filters import DefaultFilter, RepoFilter, WatchFilter

DEBOUNCE_MS = 200
MAX_WAIT_MS = 10_000
STEP_MS = 50
POLL_INTERVAL = 1.0  # seconds between two looks at every folder, when polling
SYSCTL_WATCHES = "fs.inotify.max_user_watches"
SYSCTL_INSTANCES = "fs.inotify.max_user_instances"


class Burst(NamedTuple):
    """A burst that has not settled yet: its paths so far (before git's ignore rules are
    applied) and the time.monotonic() of its first and latest change."""

    paths: frozenset[str]
    first: float
    last: float


class StopEvent(Protocol):
    def is_set(self) -> bool: ...


class _Event(NamedTuple):
    at: float  # time.monotonic() when it arrived
    kind: str  # created | modified | deleted | moved | closed | attrib | limit
    src: str
    dest: str
    is_dir: bool


class _Watch(NamedTuple):
    handle: Any  # watchdog's ObservedWatch
    recursive: bool
    folders: int


class WatchLimitError(OSError):
    """The kernel refused another inotify watch or instance."""


def _limit_hint(exc: OSError) -> str:
    if exc.errno == errno.EMFILE:
        return (
            f"the inotify instance limit is reached; raise it with "
            f"`sudo sysctl {SYSCTL_INSTANCES}=1024` (and in /etc/sysctl.d/ to keep it)"
        )
    return (
        f"the inotify watch limit is reached; raise it with "
        f"`sudo sysctl {SYSCTL_WATCHES}=524288` (and in /etc/sysctl.d/ to keep it)"
    )


class Watcher:
    """Watches a repository's folders and yields settled sets of changes.

    `watch_filter` decides per change and path (default: `RepoFilter`); `debounce` is
    the quiet period in ms, `max_wait` the longest a burst may keep a run waiting;
    `step` (ms) is how often `stop_event` is looked at. `force_polling` polls from the
    start; `max_native_watches` makes the native observer fail as the kernel does once
    that many folders are watched (to exercise the polling fallback). `notice` gets
    one line for anything the user should know (the fallback). `on_change` hears of a
    burst each time it grows, before it settles, so that slow work can start early;
    `last_event` then says whether anything changed after that work started.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        watch_filter: WatchFilter | None = None,
        debounce: int = DEBOUNCE_MS,
        max_wait: int = MAX_WAIT_MS,
        step: int = STEP_MS,
        stop_event: StopEvent | None = None,
        force_polling: bool = False,
        poll_interval: float = POLL_INTERVAL,
        max_native_watches: int | None = None,
        notice: Callable[[str], None] = lambda line: None,
        on_change: Callable[[Burst], None] | None = None,
    ) -> None:
        self.root = Path(root)
        self._prefix = str(self.root) + os.sep
        self.filter: WatchFilter = watch_filter or RepoFilter(self.root)
        self.debounce = debounce / 1000
        self.max_wait = max_wait / 1000
        self.step = step / 1000
        self.stop_event = stop_event
        self.polling = force_polling
        self.poll_interval = poll_interval
        self.max_native_watches = max_native_watches
        self.notice = notice
        self.on_change = on_change
        self.last_event = 0.0  # time.monotonic() of the latest change kept
        self._queue: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._watches: dict[str, _Watch] = {}
        self._observer: Any = None
        self._handler: Any = None
        self._old_excepthook: Any = None

    # -- public ------------------------------------------------------------------------

    @property
    def folders(self) -> int:
        """How many folders are watched (as planned; a recursive watch also covers the
        folders made inside it since)."""
        return sum(w.folders for w in self._watches.values())

    def covers(self, folder: str) -> bool:
        """Changes in `folder` (repository-relative, "" for the root) are seen."""
        if folder in self._watches:
            return True
        owner = self._owner(folder)
        return owner is not None and self._watches[owner].recursive

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        # watchdog warns when a new folder in a recursive watch is added twice (once by
        # its walk, once by the folder's own event); the watch is the same, all is well.
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"watchdog\.")
        self._handler = _make_handler(self._put)
        # A recursive inotify watch adds watches for new folders on watchdog's own
        # thread; if the kernel refuses one there, that thread dies. Hear of it.
        self._old_excepthook = threading.excepthook
        threading.excepthook = self._thread_died
        try:
            self._guarded(self._start_observer)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._stop_observer()
        if self._old_excepthook is not None:
            threading.excepthook = self._old_excepthook
            self._old_excepthook = None

    def __iter__(self) -> Iterator[set[FileChange]]:
        pending: dict[str, tuple[Change, Change]] = {}
        first: float | None = None  # arrival of the burst's first kept event
        last = 0.0  # and of its latest
        while not (self.stop_event is not None and self.stop_event.is_set()):
            timeout = self.step
            if first is not None:
                due = min(last + self.debounce, first + self.max_wait)
                now = time.monotonic()
                if now >= due:
                    changes = self._settle(pending)
                    pending, first = {}, None
                    if changes:
                        yield changes
                    continue
                timeout = min(timeout, due - now)
            try:
                event = self._queue.get(timeout=timeout)
            except queue.Empty:
                continue
            # Take everything that is waiting (all of it, after a run): one burst.
            grew = False
            while True:
                for at in self._take(event, pending):
                    first = at if first is None else min(first, at)
                    last = max(last, at)
                    grew = True
                try:
                    event = self._queue.get_nowait()
                except queue.Empty:
                    break
            if grew and first is not None:
                self.last_event = last
                if self.on_change is not None:
                    self.on_change(Burst(frozenset(pending), first, last))

    # -- events ------------------------------------------------------------------------

    def _put(self, kind: str, src: str, dest: str, is_dir: bool) -> None:
        self._queue.put(_Event(time.monotonic(), kind, src, dest, is_dir))

    def _thread_died(self, args: Any) -> None:
        exc = args.exc_value
        ours = type(args.thread).__module__.startswith("watchdog.")
        if ours and isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EMFILE):
            self._queue.put(_Event(time.monotonic(), "limit", str(exc.errno), "", False))
            return
        if self._old_excepthook is not None:
            self._old_excepthook(args)

    def _relative(self, path: str) -> str | None:
        if not path.startswith(self._prefix):
            return None
        rel = path[len(self._prefix) :]
        return rel.replace(os.sep, "/") if os.sep != "/" else rel

    def _take(self, event: _Event, pending: dict[str, tuple[Change, Change]]) -> list[float]:
        """Fold one event into the burst; the arrival times of what was kept."""
        if event.kind == "limit":
            self._fall_back(OSError(int(event.src), "refused by the kernel"))
            return []
        kept: list[str] = []
        src = self._relative(event.src)
        if event.kind == "moved":
            # A move counts under both names: gone from the source, arrived at the destination.
            if src is not None:
                kept += self._gone(src, event.is_dir, pending)
            dest = self._relative(event.dest)
            if dest is not None:
                kept += self._arrived(dest, event.is_dir, pending)
        elif src is None:
            return []
        elif event.kind == "created":
            kept += self._arrived(src, event.is_dir, pending)
        elif event.kind == "deleted":
            kept += self._gone(src, event.is_dir, pending)
        elif event.kind in ("modified", "closed", "attrib") and not event.is_dir:
            kept += self._note(Change.modified, src, pending)
        return [event.at] * len(kept)

    def _note(
        self, change: Change, path: str, pending: dict[str, tuple[Change, Change]]
    ) -> list[str]:
        if not path or not self.filter(change, path):
            return []
        before = pending.get(path)
        pending[path] = (before[0] if before else change, change)
        return [path]

    def _arrived(
        self, path: str, is_dir: bool, pending: dict[str, tuple[Change, Change]]
    ) -> list[str]:
        if not is_dir:
            return self._note(Change.added, path, pending)
        self._folder_appeared(path)
        kept: list[str] = []
        # Files written before the folder's watch existed were not reported: look.
        for file in self._files_under(path):
            kept += self._note(Change.added, file, pending)
        return kept

    def _gone(
        self, path: str, is_dir: bool, pending: dict[str, tuple[Change, Change]]
    ) -> list[str]:
        if not is_dir:
            return self._note(Change.deleted, path, pending)
        for rel in [r for r in self._watches if _under(r, path)]:
            self._unschedule(rel)
        return self._note(Change.deleted, path + "/", pending)

    def _settle(self, pending: dict[str, tuple[Change, Change]]) -> set[FileChange]:
        changes = set()
        for path, (first, last) in pending.items():
            if first == Change.added and (
                last == Change.deleted
                or (not path.endswith("/") and not os.path.lexists(self.root / path))
            ):
                # There only during the burst: an editor's temporary file. The event that
                # took it away (a rename onto its target) may come a little later, paired
                # by the observer; the disk already says it is gone.
                continue
            if first == Change.deleted and last != Change.deleted:
                changes.add(FileChange(Change.modified, path))
            elif first == Change.added:
                changes.add(FileChange(Change.added, path))
            else:
                changes.add(FileChange(last, path))
        if any(c.path.rpartition("/")[2] == ".gitignore" for c in changes):
            if isinstance(self.filter, DefaultFilter):
                self.filter.reload()
            self._guarded(lambda: self._reconcile(""))
        if isinstance(self.filter, DefaultFilter):
            changes = self.filter.settle(changes)
        return changes

    # -- watches -----------------------------------------------------------------------

    def _guarded(self, action: Callable[[], None]) -> None:
        """Do `action`; when the kernel refuses an inotify watch, poll instead."""
        try:
            action()
        except OSError as exc:
            if self.polling or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            self._fall_back(exc)

    def _start_observer(self) -> None:
        if self.polling:
            from watchdog.observers.polling import PollingObserver

            self._observer = PollingObserver(timeout=self.poll_interval)
        else:
            from watchdog.observers import Observer

            self._observer = Observer()
        self._observer.start()
        self._reconcile("")

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        self._watches.clear()
        if observer is not None:
            with contextlib.suppress(Exception):
                observer.stop()
                observer.join(timeout=5)

    def _fall_back(self, exc: OSError) -> None:
        if self.polling:
            return
        self.notice(f"{_limit_hint(exc)}; polling every {self.poll_interval:g}s instead")
        self._stop_observer()
        self.polling = True
        self._start_observer()

    def _folder_appeared(self, path: str) -> None:
        owner = self._owner(path)
        if owner is None:
            return
        watch = self._watches[owner]
        if not watch.recursive:
            self._guarded(lambda: self._reconcile(path))
            return
        # watchdog watches the new folder already; plan again only if it, or a folder
        # inside it, is ignored (so that it gets no watch).
        plan = self._plan(path)
        if path not in plan or not plan[path][0]:
            self._guarded(lambda: self._reconcile(owner))

    def _owner(self, path: str) -> str | None:
        """The watched folder whose watch covers `path` (the nearest watched ancestor)."""
        parent = path
        while parent:
            parent = parent.rpartition("/")[0]
            if parent in self._watches:
                return parent
        return None

    def _files_under(self, path: str) -> list[str]:
        out: list[str] = []
        skip = set(self.filter_folders([path]))
        if path in skip:
            return out
        stack = [path]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(self.root / folder))
            except OSError:
                continue
            dirs = []
            for entry in entries:
                rel = f"{folder}/{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    dirs.append(rel)
                else:
                    out.append(rel)
            ignored = self.filter_folders(dirs)
            stack.extend(d for d in dirs if d not in ignored)
        return out

    def filter_folders(self, folders: Sequence[str]) -> set[str]:
        if not folders:
            return set()
        if isinstance(self.filter, DefaultFilter):
            return self.filter.ignored_folders(folders)
        return {f for f in folders if not self.filter(Change.added, f + "/")}

    def _plan(self, top: str) -> dict[str, tuple[bool, int]]:
        """The watches for `top` ("" for the root) and below: folder -> (recursive, folders
        covered). One recursive watch per largest subtree holding no ignored folder; a
        non-recursive one for every folder that holds one; none for ignored folders."""
        if top and top in self.filter_folders([top]):
            return {}
        children: dict[str, list[str]] = {}
        dirty: set[str] = {""}  # the root holds .git: never one recursive watch
        level = [top]
        while level:
            found: list[tuple[str, str]] = []
            for folder in level:
                try:
                    with os.scandir(self.root / folder if folder else self.root) as it:
                        for entry in it:
                            if entry.is_dir(follow_symlinks=False):
                                rel = f"{folder}/{entry.name}" if folder else entry.name
                                found.append((folder, rel))
                except OSError:
                    continue
            ignored = self.filter_folders([rel for _, rel in found])
            level = []
            for parent, rel in found:
                if rel in ignored:
                    dirty.add(parent)
                else:
                    children.setdefault(parent, []).append(rel)
                    level.append(rel)
        plan: dict[str, tuple[bool, int]] = {}

        def visit(folder: str) -> tuple[bool, int, dict[str, tuple[bool, int]]]:
            clean, count, below = folder not in dirty, 1, {}
            for child in children.get(folder, ()):
                child_clean, child_count, child_plan = visit(child)
                clean = clean and child_clean
                count += child_count
                below.update(child_plan)
            if clean:
                return True, count, {folder: (True, count)}
            return False, count, {folder: (False, 1), **below}

        plan.update(visit(top)[2])
        return plan

    def _reconcile(self, top: str) -> None:
        """Make the watches for `top` and below what `_plan` says they should be."""
        desired = self._plan(top)
        current = [rel for rel in self._watches if _under(rel, top)]
        # New watches first, old ones after: no moment without a watch.
        for rel, (recursive, count) in desired.items():
            have = self._watches.get(rel)
            if have is None or have.recursive != recursive:
                self._schedule(rel, recursive, count)
            elif have.folders != count:
                self._watches[rel] = have._replace(folders=count)
        for rel in current:
            want = desired.get(rel)
            if want is None:
                self._unschedule(rel)

    def _schedule(self, rel: str, recursive: bool, count: int) -> None:
        if (
            not self.polling
            and self.max_native_watches is not None
            and self.folders + count > self.max_native_watches
        ):
            raise WatchLimitError(errno.ENOSPC, "inotify watch limit reached")
        path = str(self.root / rel) if rel else str(self.root)
        old = self._watches.get(rel)
        try:
            handle = self._observer.schedule(
                self._handler, path, recursive=recursive, event_filter=_event_classes()
            )
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return  # gone (or closed to us) before it could be watched
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE) and not self.polling:
                raise WatchLimitError(exc.errno, str(exc)) from exc
            raise
        self._watches[rel] = _Watch(handle, recursive, count)
        if old is not None:
            with contextlib.suppress(KeyError):
                self._observer.unschedule(old.handle)

    def _unschedule(self, rel: str) -> None:
        old = self._watches.pop(rel, None)
        if old is not None and self._observer is not None:
            with contextlib.suppress(KeyError):
                self._observer.unschedule(old.handle)


def _under(path: str, top: str) -> bool:
    return not top or path == top or path.startswith(top + "/")


def _event_classes() -> list[Any]:
    from watchdog import events

    wanted = [
        "FileCreatedEvent",
        "FileModifiedEvent",
        "FileAttribEvent",  # chmod: the executable bit goes into the image
        "FileClosedEvent",
        "FileDeletedEvent",
        "FileMovedEvent",
        "DirCreatedEvent",
        "DirDeletedEvent",
        "DirMovedEvent",
    ]
    # Reads (opened, closed without writing) are left out: builds read every input.
    return [getattr(events, name) for name in wanted if hasattr(events, name)]


def _make_handler(put: Callable[[str, str, str, bool], None]) -> Any:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            dest = os.fsdecode(getattr(event, "dest_path", "") or "")
            put(event.event_type, os.fsdecode(event.src_path), dest, event.is_directory)

    return Handler()


def watch(
    root: Path | str,
    *,
    watch_filter: WatchFilter | None = None,
    debounce: int = DEBOUNCE_MS,
    max_wait: int = MAX_WAIT_MS,
    step: int = STEP_MS,
    stop_event: StopEvent | None = None,
    force_polling: bool = False,
    max_native_watches: int | None = None,
    notice: Callable[[str], None] = lambda line: None,
    on_change: Callable[[Burst], None] | None = None,
) -> Iterator[set[FileChange]]:
    """Yield one set of changes per settled burst under `root` until `stop_event` is set.

    Paths are repository-relative (posix). A change that the consumer is still busy
    with when more arrive is not lost: whatever happens meanwhile is the next set.
    """
    with Watcher(
        root,
        watch_filter=watch_filter,
        debounce=debounce,
        max_wait=max_wait,
        step=step,
        stop_event=stop_event,
        force_polling=force_polling,
        max_native_watches=max_native_watches,
        notice=notice,
        on_change=on_change,
    ) as watcher:
        yield from watcher
