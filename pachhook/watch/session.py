"""The watcher's session: settled change sets in, runs out.

Between bursts it keeps the last good configuration and what each file held at the
last successful run, so a save that leaves a file as it was, or that touches only
files no image, spec or the configuration uses, starts no run. A burst that is going
to make a run is planned while it settles. Runs never overlap: changes made during a
run make exactly one run after it. A broken configuration is reported and no run is
attempted until it is fixed; the session goes on with the last good one.

The first stop request (SIGINT, SIGTERM, SIGHUP) ends it once the run in progress is
done; a second one interrupts that run. The ledger gets a "watch" entry when the
session starts and one when it stops.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pachhook.config import CONFIG_FILES
from pachhook.repo.source import blob_id
from pachhook.watch.events import Watcher
from pachhook.watch.filters import RepoFilter

if TYPE_CHECKING:
    from pachhook.config import Config
    from pachhook.plan.planner import Planned
    from pachhook.repo.git import Repo
    from pachhook.run.executor import RunOptions, RunRecord
    from pachhook.watch.changes import FileChange
    from pachhook.watch.events import Burst

# Makes the native observer fail as the kernel does past this many watched folders, so
# that the fallback to polling can be seen without changing the machine's limits.
MAX_WATCHES_ENV = "PACHHOOK_WATCH_MAX_WATCHES"
SHOWN_PATHS = 5


# -- what each file held ---------------------------------------------------------------


def fingerprint(path: Path) -> str | None:
    """What a build would see of a file: its kind, executable bit and content; None when
    it is not there (or is a folder)."""
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return "link:" + os.readlink(path)
        if not stat.S_ISREG(info.st_mode):
            return None
        digest = blob_id(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return ("x:" if info.st_mode & stat.S_IXUSR else "f:") + digest


class Contents:
    """What each path held when it was last acted on: a save that leaves a file as it was
    is no change. Paths never acted on count as changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seen: dict[str, str | None] = {}

    def changed(self, paths: Iterable[str]) -> dict[str, str | None]:
        """The paths whose content differs from the last time, with their fingerprints."""
        out: dict[str, str | None] = {}
        for path in paths:
            if path.endswith("/"):  # a folder went away: everything under it changed
                out[path] = None
                continue
            now = fingerprint(self.root / path)
            if path not in self._seen or self._seen[path] != now:
                out[path] = now
        return out

    def remember(self, fingerprints: dict[str, str | None]) -> None:
        self._seen.update((p, f) for p, f in fingerprints.items() if not p.endswith("/"))

    def forget(self, paths: Iterable[str]) -> None:
        for path in paths:
            self._seen.pop(path, None)


# -- stopping --------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """A second stop request while a run was going on."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Stopper:
    """Signal handler: the first request stops the watcher after the run in progress, a
    second one during a run interrupts it."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.stop = threading.Event()
        self.in_run = False
        self.signum = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set() and self.in_run:
            raise Interrupted(signum)
        self.stop.set()
        self.signum = signum
        if self.in_run:
            self.say("stopping once this run is done (send the signal again to interrupt it)")

    @contextmanager
    def installed(self) -> Iterator[Stopper]:
        wanted = [signal.SIGINT, signal.SIGTERM]
        # A terminal closing sends SIGHUP; under nohup it is ignored, and stays so.
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            wanted.append(signal.SIGHUP)
        previous = {s: signal.signal(s, self) for s in wanted}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


# -- the session -----------------------------------------------------------------------


def read_file(root: Path) -> Callable[[str], bytes | None]:
    def read(path: str) -> bytes | None:
        try:
            return (root / path).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None

    return read


def load_config(found: Repo, environment: Mapping[str, str]) -> Config:
    from pachhook.config import load

    return load(read_file(found.root), environment)


def count_pipelines(found: Repo, config: Config) -> str:
    from pachhook.errors import PachhookError
    from pachhook.plan.workspace import pipelines_at, template_instances
    from pachhook.repo.source import WorkingTreeSource

    source = WorkingTreeSource(found)
    try:
        # Evaluating the templates now also records what they import (see `wanted`).
        templated = sum(len(i.documents) for i in template_instances(source, config))
        return str(len(pipelines_at(source, config)) + templated)
    except PachhookError:
        return "?"  # a broken spec is reported by the first run that reads it
    finally:
        source.close()


def listing(paths: list[str]) -> str:
    shown = ", ".join(paths[:SHOWN_PATHS])
    return shown + (f" (+{len(paths) - SHOWN_PATHS} more)" if len(paths) > SHOWN_PATHS else "")


def summary(record: RunRecord, seconds: float) -> str:
    if record.error:
        return f"run failed after {seconds:.1f}s: {record.error}; still watching"
    built = [i.reference for i in record.images if i.status == "built"]
    applied = [f"{p.project}/{p.name}" for p in record.pipelines if p.status == "applied"]
    parts = [f"built {', '.join(built)}" if built else "built nothing"]
    parts.append(f"updated {', '.join(applied)}" if applied else "updated no pipeline")
    return f"run done in {seconds:.1f}s: {'; '.join(parts)}"


class EarlyPlan:
    """The plan of a burst, made while the burst settles.

    On a large repository the planner takes longer than the quiet period; started at a
    burst's first change it is ready about when the burst settles. It is used only when
    nothing changed after it started (the run plans afresh otherwise, as it would have
    anyway): the same plan, sooner.
    """

    YOUNG = 1.0  # seconds: a burst older than this is not planned early (it may never stop)
    # An editor's save is a few events within a millisecond or two (write, close, rename):
    # wait this long after the latest, so that one plan serves them all.
    GATHER = 0.01

    def __init__(self, plan: Callable[[], Planned]) -> None:
        self._plan = plan
        self._cond = threading.Condition()
        self._wanted = False
        self._requested = 0.0
        self._running: float | None = None  # when the plan being made was started
        self._made: tuple[float, Planned | None] | None = None
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        with self._cond:
            self._wanted = True
            self._requested = time.monotonic()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="early-plan", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._wanted:
                    self._cond.wait()
                while (left := self._requested + self.GATHER - time.monotonic()) > 0:
                    self._cond.wait(left)
                self._wanted = False
                started = self._running = time.monotonic()
            try:
                planned: Planned | None = self._plan()
            except Exception:
                planned = None  # the run plans again, and reports what is wrong itself
            with self._cond:
                self._made, self._running = (started, planned), None
                self._cond.notify_all()

    def take(self, since: float) -> Planned | None:
        """A plan started after `since` (the burst's latest change), waiting for one being
        made; None when there is none to wait for."""
        with self._cond:
            while True:
                if self._made is not None and self._made[0] > since:
                    planned, self._made = self._made[1], None
                    return planned
                fresh = self._running is not None and self._running > since
                if not (fresh or self._wanted):
                    return None
                self._cond.wait()


class Session:
    """What one watcher knows between bursts: the last good configuration and what each
    file held at the last successful run."""

    def __init__(
        self,
        found: Repo,
        environment: Mapping[str, str],
        options: RunOptions,
        config: Config,
        contents: Contents,
        stopper: Stopper,
        verbose: bool,
        last_event: Callable[[], float],
        say: Callable[[str], None],
    ) -> None:
        from pachhook.plan.load import plan_selection
        from pachhook.repo.selection import Selection

        self.repo = found
        self.env = environment
        self.options = options
        self.config = config
        self.contents = contents
        self.stopper = stopper
        self.verbose = verbose
        self.broken = False
        self.runs = 0
        self.last_event = last_event
        self.say = say
        self.early_plan = EarlyPlan(
            lambda: plan_selection(found, Selection(working_tree=True), environment)
        )

    def quiet(self, line: str) -> None:
        if self.verbose:
            self.say(line)

    def wanted(self, paths: Iterable[str]) -> set[str]:
        """The paths that could matter: folders that went away, the configuration, and
        files an image, a spec or the configuration uses."""
        from pachhook.plan.relevance import Relevance

        listed = list(paths)
        files = [p for p in listed if not p.endswith("/")]
        out = {p for p in listed if p.endswith("/")}  # a folder went: decide by state
        first_look = Relevance.of(self.config)
        out.update(first_look.matters(files))
        if first_look.instances:
            # What the templates imported when they were last evaluated.
            from pachhook.pachyderm.template_cache import Index

            imported = Index(self.repo.state_dir).files(first_look.instances)
            out.update(p for p in files if p in imported)
        out.update(set(CONFIG_FILES).intersection(listed))
        return out

    def early(self, burst: Burst) -> None:
        """A burst grew: if it is going to make a run, start planning it now."""
        if self.broken or burst.last - burst.first > EarlyPlan.YOUNG:
            return
        wanted = self.wanted(burst.paths)
        if not wanted:
            return
        # A save that changes nothing makes no run: spare the planner. (Large bursts are
        # not hashed twice; they are planned.)
        small = len(wanted) <= 20 and not set(CONFIG_FILES) & wanted
        if small and not self.contents.changed(sorted(wanted)):
            return
        self.early_plan.request()

    def handle(self, changes: set[FileChange]) -> int | None:
        """Act on one settled burst: the run's exit code, or None when nothing ran."""
        from pachhook.errors import PachhookError

        paths = sorted(c.path for c in changes)
        reloaded = False
        if set(CONFIG_FILES).intersection(paths):
            try:
                config = load_config(self.repo, self.env)
            except PachhookError as exc:
                self.say(f"configuration error: {exc.message}")
                self.say(
                    "no run until it is fixed; still watching with the last good configuration"
                )
                self.broken = True
                return None
            reloaded = self.broken or config != self.config
            self.config, self.broken = config, False
        elif self.broken:
            self.quiet(f"no run: the configuration is still broken ({listing(paths)})")
            return None

        wanted = self.wanted(paths)
        fresh = self.contents.changed(sorted(wanted))
        if reloaded:
            self.say(f"configuration reloaded: {len(self.config.images)} image(s)")
        if not fresh and not reloaded:
            ignored = sorted(set(paths) - wanted)
            if ignored:
                self.quiet(f"no run: no image, spec or the configuration uses {listing(ignored)}")
            if wanted:
                self.quiet(f"no run: content unchanged in {listing(sorted(wanted))}")
            return None
        return self.run(sorted(fresh) or paths, fresh)

    def run(self, trigger: list[str], fresh: dict[str, str | None]) -> int | None:
        from pachhook.errors import error_handler
        from pachhook.repo.selection import Selection
        from pachhook.run.runner import run_planned, run_selection

        if self.stopper.stop.is_set():
            return None  # asked to stop before this run began: it does not begin
        self.say(f"change: {listing(trigger)}")
        self.runs += 1
        started = time.monotonic()
        self.stopper.in_run = True
        failure: tuple[str, int] | None = None

        def failed(message: str, code: int) -> None:
            nonlocal failure
            failure = (message, code)

        try:
            # A failed run (a bug too) is said in one line, and the watcher carries on.
            with error_handler(failed):
                planned = self.early_plan.take(self.last_event())
                if planned is not None:
                    record = run_planned(
                        self.repo, planned, self.options, self.env, trigger="watch"
                    )
                else:
                    record = run_selection(
                        self.repo,
                        Selection(working_tree=True),
                        self.options,
                        self.env,
                        trigger="watch",
                    )
        finally:
            self.stopper.in_run = False
        if failure is not None:
            self.contents.forget(fresh)
            seconds = time.monotonic() - started
            self.say(f"run failed after {seconds:.1f}s: {failure[0]}; still watching")
            return failure[1]
        if record.ok:
            self.contents.remember(fresh)
        else:
            # Saving the same content again should try again.
            self.contents.forget(fresh)
        self.say(summary(record, time.monotonic() - started))
        return record.exit_code


def watch_and_run(
    found: Repo,
    environment: Mapping[str, str],
    *,
    debounce: int,
    deploy: bool,
    once: bool,
    poll: bool,
    verbose: bool,
    log: str | None,
    own_files: Iterable[str],
    say: Callable[[str], None],
) -> int:
    """Run on every settled burst in `found`'s working tree until stopped (0); with `once`,
    until the first run (its exit code). `own_files` are where this process writes (never
    a change), `log` is named in the ledger, `say` gets every line for the user."""
    from pachhook.run import ledger
    from pachhook.run.executor import RunOptions

    # The early plan is a thread busy with Python while the main one waits out the quiet
    # period: hand the interpreter over sooner than the default 5 ms, or the run starts late.
    sys.setswitchinterval(0.001)
    config = load_config(found, environment)  # broken at the start: exit 2, say why
    limit = environment.get(MAX_WATCHES_ENV, "").strip()
    stopper = Stopper(say)
    watcher = Watcher(
        found.root,
        watch_filter=RepoFilter(found.root, own_files),
        debounce=debounce,
        stop_event=stopper.stop,
        force_polling=poll,
        max_native_watches=int(limit) if limit.isdigit() else None,
        notice=say,
        on_change=lambda burst: session.early(burst),
    )
    session = Session(
        found,
        environment,
        RunOptions(deploy=deploy),
        config,
        Contents(found.root),
        stopper,
        verbose,
        last_event=lambda: watcher.last_event,
        say=say,
    )
    entry: dict[str, Any] = {"kind": "watch", "id": uuid.uuid4().hex[:12], "pid": os.getpid()}
    with stopper.installed(), watcher:
        mode = "polling" if watcher.polling else "file events"
        say(
            f"watching {found.root}: {len(config.images)} image(s), "
            f"{count_pipelines(found, config)} pipeline(s), {watcher.folders} folder(s) "
            f"({mode}; quiet period {debounce} ms; "
            f"{'deploying' if deploy else 'no deploy'}; pid {os.getpid()})"
        )
        ledger.append(
            found.state_dir,
            {
                **entry,
                "state": "running",
                "started": time.time(),
                "folders": watcher.folders,
                "mode": mode,
                "deploy": deploy,
                **({"log": str(Path(log).resolve())} if log else {}),
            },
        )
        try:
            for changes in watcher:
                code = session.handle(changes)
                if once and code is not None:
                    return code
        except Interrupted as exc:
            say("interrupted during a run: its pipeline changes were applied in full or not at all")
            return 128 + exc.signum
        finally:
            ledger.append(
                found.state_dir,
                {**entry, "state": "stopped", "time": time.time(), "runs": session.runs},
            )
            say(f"stopped after {session.runs} run(s)")
    return 0
