"""`pachhook watch`: watch the working tree and, once a burst of changes settles, run the
same planner and executor as `pachhook run --working-tree`.

A save that leaves a file as it was, or that touches only files no image, spec or the
configuration uses, starts no run. A run never overlaps another: changes made during
a run make exactly one run after it. A broken configuration is reported and no run is
attempted until it is fixed; the watcher goes on with the last good one.

Ctrl-C or SIGTERM stops it once the run in progress (if any) is done, with exit code
0; a second one interrupts that run (exit 130 for SIGINT, 143 for SIGTERM). Pipelines
are only ever updated in one transaction at a run's end, so an interrupted run leaves
all of its changes on the cluster or none.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from pachhook.commands import env, repo

# signal, threading and uuid are imported where used: every command's start-up (a git
# hook's too) imports this module to build the parser.
if TYPE_CHECKING:
    import threading

    from pachhook.config import Config
    from pachhook.git import Repo
    from pachhook.planning import Planned
    from pachhook.run import RunOptions, RunRecord
    from pachhook.watch import Burst, Contents, FileChange

CONFIG_FILES = frozenset({"pachhook.toml", "pyproject.toml"})
# Makes the native observer fail as the kernel does past this many watched folders, so
# that the fallback to polling can be seen without changing the machine's limits.
MAX_WATCHES_ENV = "PACHHOOK_WATCH_MAX_WATCHES"
SHOWN_PATHS = 5


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of milliseconds")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="watch the working tree and run on every settled change",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--debounce",
        type=non_negative,
        default=200,
        metavar="MS",
        help="quiet period before a run, in milliseconds (default: 200; a folder that never "
        "stops changing runs after 10 s at most)",
    )
    parser.add_argument(
        "--no-deploy", action="store_true", help="build, push and verify images; update no pipeline"
    )
    parser.add_argument(
        "--once", action="store_true", help="exit after the first run, with its exit code"
    )
    parser.add_argument(
        "--poll",
        action="store_true",
        help="poll the folders instead of asking the kernel for events "
        "(network and some container filesystems)",
    )
    parser.add_argument(
        "--log",
        metavar="FILE",
        help="append all output to FILE (for running in the background)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also say why a change started no run",
    )
    parser.set_defaults(func=run)


class Interrupted(KeyboardInterrupt):
    """A second stop request while a run was going on."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def say(line: str) -> None:
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} {line}\n")
    sys.stdout.flush()


class Stopper:
    """Signal handler: the first request stops the watcher after the run in progress, a
    second one during a run interrupts it."""

    def __init__(self) -> None:
        import threading

        self.stop = threading.Event()
        self.in_run = False
        self.signum = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set() and self.in_run:
            raise Interrupted(signum)
        self.stop.set()
        self.signum = signum
        if self.in_run:
            say("stopping once this run is done (send the signal again to interrupt it)")

    @contextmanager
    def installed(self) -> Iterator[Stopper]:
        import signal

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


def log_to(path: str) -> None:
    """Send this process's output (and its children's) to the end of `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def own_outputs(root: Path) -> list[str]:
    """Where this process's output goes, when that is a file in the repository: writing
    it must not look like a change (the log would feed itself)."""
    out = []
    for fd in (1, 2):
        try:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
        if target.is_relative_to(root):
            out.append(target.relative_to(root).as_posix())
    return out


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
    from pachhook.source import WorkingTreeSource
    from pachhook.workspace import pipelines_at

    source = WorkingTreeSource(found)
    try:
        return str(len(pipelines_at(source, config)))
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
        import threading

        self._plan = plan
        self._cond = threading.Condition()
        self._wanted = False
        self._requested = 0.0
        self._running: float | None = None  # when the plan being made was started
        self._made: tuple[float, Planned | None] | None = None
        self._thread: threading.Thread | None = None

    def request(self) -> None:
        import threading

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
    ) -> None:
        from pachhook.planning import plan_selection
        from pachhook.selection import Selection

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
        self.early_plan = EarlyPlan(
            lambda: plan_selection(found, Selection(working_tree=True), environment)
        )

    def quiet(self, line: str) -> None:
        if self.verbose:
            say(line)

    def wanted(self, paths: Iterable[str]) -> set[str]:
        """The paths that could matter: folders that went away, the configuration, and
        files an image, a spec or the configuration uses."""
        from pachhook.plan import relevant

        listed = list(paths)
        files = [p for p in listed if not p.endswith("/")]
        out = {p for p in listed if p.endswith("/")}  # a folder went: decide by state
        out.update(relevant(files, self.config))
        out.update(CONFIG_FILES.intersection(listed))
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
        small = len(wanted) <= 20 and not CONFIG_FILES & wanted
        if small and not self.contents.changed(sorted(wanted)):
            return
        self.early_plan.request()

    def handle(self, changes: set[FileChange]) -> int | None:
        """Act on one settled burst: the run's exit code, or None when nothing ran."""
        from pachhook.errors import PachhookError

        paths = sorted(c.path for c in changes)
        reloaded = False
        if CONFIG_FILES.intersection(paths):
            try:
                config = load_config(self.repo, self.env)
            except PachhookError as exc:
                say(f"configuration error: {exc.message}")
                say("no run until it is fixed; still watching with the last good configuration")
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
            say(f"configuration reloaded: {len(self.config.images)} image(s)")
        if not fresh and not reloaded:
            ignored = sorted(set(paths) - wanted)
            if ignored:
                self.quiet(f"no run: no image, spec or the configuration uses {listing(ignored)}")
            if wanted:
                self.quiet(f"no run: content unchanged in {listing(sorted(wanted))}")
            return None
        return self.run(sorted(fresh) or paths, fresh)

    def run(self, trigger: list[str], fresh: dict[str, str | None]) -> int | None:
        from pachhook.errors import PachhookError
        from pachhook.execution import run_planned, run_selection
        from pachhook.selection import Selection

        if self.stopper.stop.is_set():
            return None  # asked to stop before this run began: it does not begin
        say(f"change: {listing(trigger)}")
        self.runs += 1
        started = time.monotonic()
        self.stopper.in_run = True
        try:
            planned = self.early_plan.take(self.last_event())
            if planned is not None:
                record = run_planned(self.repo, planned, self.options, self.env, trigger="watch")
            else:
                record = run_selection(
                    self.repo, Selection(working_tree=True), self.options, self.env, trigger="watch"
                )
        except PachhookError as exc:
            self.contents.forget(fresh)
            say(
                f"run failed after {time.monotonic() - started:.1f}s: {exc.message}; still watching"
            )
            return exc.exit_code
        except Exception as exc:  # a bug: said in one line, and the watcher carries on
            if os.environ.get("PACHHOOK_DEBUG"):
                raise
            self.contents.forget(fresh)
            say(
                f"internal error: {type(exc).__name__}: {exc} "
                "(set PACHHOOK_DEBUG=1 to see the traceback, and please report it); still watching"
            )
            return 1
        finally:
            self.stopper.in_run = False
        if record.ok:
            self.contents.remember(fresh)
        else:
            # Saving the same content again should try again.
            self.contents.forget(fresh)
        say(summary(record, time.monotonic() - started))
        return record.exit_code


def run(args: argparse.Namespace) -> int:
    import uuid

    from pachhook import ledger
    from pachhook.run import RunOptions
    from pachhook.watch import Contents, RepoFilter, Watcher

    if args.log:
        log_to(args.log)
    # Lines reach a log file as they are written, not a buffer-full later.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    # The early plan is a thread busy with Python while the main one waits out the quiet
    # period: hand the interpreter over sooner than the default 5 ms, or the run starts late.
    sys.setswitchinterval(0.001)
    found = repo()
    environment = env()
    config = load_config(found, environment)  # broken at the start: exit 2, say why
    limit = environment.get(MAX_WATCHES_ENV, "").strip()
    stopper = Stopper()
    watcher = Watcher(
        found.root,
        watch_filter=RepoFilter(found.root, own_outputs(found.root)),
        debounce=args.debounce,
        stop_event=stopper.stop,
        force_polling=args.poll,
        max_native_watches=int(limit) if limit.isdigit() else None,
        notice=say,
        on_change=lambda burst: session.early(burst),
    )
    session = Session(
        found,
        environment,
        RunOptions(deploy=not args.no_deploy),
        config,
        Contents(found.root),
        stopper,
        args.verbose,
        last_event=lambda: watcher.last_event,
    )
    entry: dict[str, Any] = {"kind": "watch", "id": uuid.uuid4().hex[:12], "pid": os.getpid()}
    with stopper.installed(), watcher:
        mode = "polling" if watcher.polling else "file events"
        say(
            f"watching {found.root}: {len(config.images)} image(s), "
            f"{count_pipelines(found, config)} pipeline(s), {watcher.folders} folder(s) "
            f"({mode}; quiet period {args.debounce} ms; "
            f"{'no deploy' if args.no_deploy else 'deploying'}; pid {os.getpid()})"
        )
        ledger.append(
            found.state_dir,
            {
                **entry,
                "state": "running",
                "started": time.time(),
                "folders": watcher.folders,
                "mode": mode,
                "deploy": not args.no_deploy,
                **({"log": str(Path(args.log).resolve())} if args.log else {}),
            },
        )
        try:
            for changes in watcher:
                code = session.handle(changes)
                if args.once and code is not None:
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
