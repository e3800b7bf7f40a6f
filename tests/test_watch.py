"""`pachhook watch`: real file events on real git repositories.

The first part drives the generator (`pachhook.watch.Watcher`) directly: fast, no
Docker. The second runs the real command in a process of its own against the pachd
double; the last part adds the real Docker engine and registry (marked `docker`).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pachhook.run import lock
from pachhook.watch.changes import Change, FileChange
from pachhook.watch.events import Watcher
from pachhook.watch.filters import DefaultFilter, RepoFilter
from pachhook.watch.session import Contents
from tests.e2e import PACHHOOK, first_run
from tests.e2e import Repo as E2ERepo
from tests.helpers import commit, init_repo, write

IGNORES = "*.log\nbuild/\n"
SUMMARY = re.compile(r"^\d\d:\d\d:\d\d run (done in|failed after) ")


# =========================================================================== #
# The generator and its filter
# =========================================================================== #


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = init_repo(tmp_path / "repo").resolve()
    write(
        root,
        {
            ".gitignore": IGNORES,
            "app/main.sh": "echo v1\n",
            "app/src/mod.py": "VALUE = 1\n",
            "docs/readme.md": "docs\n",
            "build/out.bin": "built\n",  # git-ignored folder, there from the start
        },
    )
    commit(root, "initial")
    return root


class Collector:
    """Runs a Watcher's generator on a thread and keeps what it yields.

    `busy` is how long the consumer takes per set, as a run would."""

    def __init__(self, root: Path, busy: float = 0.0, **options: Any) -> None:
        self.stop = threading.Event()
        self.notices: list[str] = []
        options.setdefault("debounce", 100)
        self.watcher = Watcher(root, stop_event=self.stop, notice=self.notices.append, **options)
        self.sets: queue.Queue[tuple[float, set[FileChange]]] = queue.Queue()
        self.busy = busy
        self.thread = threading.Thread(target=self._consume, daemon=True)

    def __enter__(self) -> Collector:
        self.watcher.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.watcher.close()

    def _consume(self) -> None:
        for changes in self.watcher:
            self.sets.put((time.monotonic(), changes))
            if self.busy:
                time.sleep(self.busy)

    def next(self, timeout: float = 5.0) -> set[FileChange]:
        return self.next_timed(timeout)[1]

    def next_timed(self, timeout: float = 5.0) -> tuple[float, set[FileChange]]:
        try:
            return self.sets.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing yielded within {timeout}s") from None

    def nothing(self, within: float = 1.0) -> None:
        try:
            _, changes = self.sets.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"expected nothing, got {sorted(changes)}")


def paths(changes: set[FileChange]) -> set[str]:
    return {c.path for c in changes}


def test_default_filter_names() -> None:
    keep = DefaultFilter()
    for path in ("app/main.sh", "Dockerfile", "app/.dockerignore", "a/b.json", "x/", "v.swf"):
        assert keep(Change.modified, path), path
    for path in (
        ".git/index",
        "app/__pycache__/mod.cpython-311.pyc",
        "app/mod.pyc",
        "app/.main.sh.swp",
        "app/.main.sh.swo",
        "app/.main.sh.swx",
        "app/4913",
        "app/main.sh~",
        "app/#main.sh#",
        "app/.#main.sh",
        "app/main.sh___jb_tmp___",
        "app/main.sh___jb_old___",
        "app/main.sh.tmp",
        "app/.goutputstream-AB12CD",
        ".mypy_cache/",
    ):
        assert not keep(Change.modified, path), path
    assert not DefaultFilter(ignore_paths=["watch.log"])(Change.modified, "watch.log")


def test_contents_a_save_that_changes_nothing_is_no_change(tree: Path) -> None:
    contents = Contents(tree)
    first = contents.changed(["app/main.sh"])
    assert list(first) == ["app/main.sh"]  # never acted on: counts as changed
    contents.remember(first)
    assert contents.changed(["app/main.sh"]) == {}
    (tree / "app/main.sh").write_text("echo v1\n")  # saved, same content
    assert contents.changed(["app/main.sh"]) == {}
    (tree / "app/main.sh").chmod(0o755)  # the mode goes into the image
    assert list(contents.changed(["app/main.sh"])) == ["app/main.sh"]
    assert list(contents.changed(["gone/"])) == ["gone/"]  # a folder went: always a change


def test_an_atomic_save_counts_under_its_target(tree: Path) -> None:
    with Collector(tree) as watch:
        # write a temporary file, rename it over the target (a name no filter knows)
        temp = tree / "app" / "tmp8f3k2q"
        temp.write_text("echo v2\n")
        os.replace(temp, tree / "app" / "main.sh")
        assert paths(watch.next()) == {"app/main.sh"}
        # vim with 'writebackup': probe 4913, keep main.sh~, write anew, drop the backup
        (tree / "app" / "4913").write_text("")
        (tree / "app" / "4913").unlink()
        os.rename(tree / "app" / "main.sh", tree / "app" / "main.sh~")
        (tree / "app" / "main.sh").write_text("echo v3\n")
        (tree / "app" / "main.sh~").unlink()
        assert watch.next() == {FileChange(Change.modified, "app/main.sh")}
        watch.nothing(0.5)


def test_a_burst_of_50_writes_is_one_set(tree: Path) -> None:
    with Collector(tree, debounce=200) as watch:
        for n in range(50):
            (tree / "app" / "main.sh").write_text(f"echo {n}\n")
            (tree / "app" / "src" / f"gen_{n % 5}.py").write_text(f"N = {n}\n")
            time.sleep(0.005)
        changes = watch.next()
        assert paths(changes) == {"app/main.sh", *(f"app/src/gen_{k}.py" for k in range(5))}
        watch.nothing(0.8)


def test_a_deleted_then_recreated_file_is_seen(tree: Path) -> None:
    with Collector(tree) as watch:
        (tree / "app" / "main.sh").unlink()
        (tree / "app" / "main.sh").write_text("echo again\n")
        assert watch.next() == {FileChange(Change.modified, "app/main.sh")}
        (tree / "app" / "main.sh").unlink()
        assert watch.next() == {FileChange(Change.deleted, "app/main.sh")}
        (tree / "app" / "main.sh").write_text("echo back\n")
        assert watch.next() == {FileChange(Change.added, "app/main.sh")}


def test_a_move_counts_under_both_names(tree: Path) -> None:
    with Collector(tree) as watch:
        os.rename(tree / "app" / "main.sh", tree / "app" / "run.sh")
        assert watch.next() == {
            FileChange(Change.deleted, "app/main.sh"),
            FileChange(Change.added, "app/run.sh"),
        }
        # a folder moved in from outside the repository: its files arrive
        outside = tree.parent / "incoming"
        write(outside, {"lib/util.sh": "util\n", "lib/deep/more.sh": "more\n"})
        os.rename(outside / "lib", tree / "app" / "lib")
        assert paths(watch.next()) == {"app/lib/util.sh", "app/lib/deep/more.sh"}
        # and a folder moved away: everything under it went
        os.rename(tree / "app" / "lib", tree.parent / "lib-away")
        assert paths(watch.next()) == {"app/lib/"}


def test_ignored_files_yield_nothing(tree: Path) -> None:
    with Collector(tree) as watch:
        assert not watch.watcher.covers("build")  # git-ignored: no watch at all
        assert watch.watcher.covers("app/src")
        write(
            tree,
            {
                "app/debug.log": "git-ignored\n",
                "build/out.bin": "rebuilt\n",
                "app/.main.sh.swp": "vim\n",
                "app/#main.sh#": "emacs\n",
                "app/main.sh___jb_tmp___": "jetbrains\n",
                "app/src/__pycache__/mod.cpython-311.pyc": "bytecode\n",
                "app/src/mod.pyc": "bytecode\n",
            },
        )
        os.symlink("user@host.1234", tree / "app" / ".#main.sh")  # emacs lock
        watch.nothing(1.0)
        # __pycache__ appeared inside a recursive watch: planned again, it has none
        assert not watch.watcher.covers("app/src/__pycache__")
        assert watch.watcher.covers("app/src")
        (tree / "app" / "src" / "mod.py").write_text("VALUE = 2\n")
        assert paths(watch.next()) == {"app/src/mod.py"}


def test_a_new_folder_gets_watched(tree: Path) -> None:
    with Collector(tree) as watch:
        (tree / "app" / "new" / "deep").mkdir(parents=True)
        (tree / "app" / "new" / "deep" / "one.sh").write_text("1\n")
        assert paths(watch.next()) == {"app/new/deep/one.sh"}
        assert watch.watcher.covers("app/new/deep")
        (tree / "app" / "new" / "deep" / "two.sh").write_text("2\n")
        assert paths(watch.next()) == {"app/new/deep/two.sh"}
        # a new top-level folder (the root's watch is not recursive)
        (tree / "lib").mkdir()
        (tree / "lib" / "x.sh").write_text("x\n")
        assert paths(watch.next()) == {"lib/x.sh"}
        assert watch.watcher.covers("lib")


def test_a_gitignore_change_is_reloaded(tree: Path) -> None:
    write(tree, {"scratch/notes.txt": "untracked\n"})
    with Collector(tree) as watch:
        assert watch.watcher.covers("scratch")
        (tree / ".gitignore").write_text(IGNORES + "scratch/\ndocs/\n")
        assert paths(watch.next()) == {".gitignore"}
        assert not watch.watcher.covers("scratch")
        # a folder with tracked files keeps its watch: git does not ignore tracked files
        assert watch.watcher.covers("docs")
        (tree / "scratch" / "notes.txt").write_text("more\n")
        watch.nothing(0.6)
        (tree / ".gitignore").write_text(IGNORES)
        assert paths(watch.next()) == {".gitignore"}
        assert watch.watcher.covers("scratch")
        (tree / "scratch" / "notes.txt").write_text("again\n")
        assert paths(watch.next()) == {"scratch/notes.txt"}


def test_a_folder_that_never_stops_changing_runs_after_the_cap(tree: Path) -> None:
    stop = threading.Event()

    def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            (tree / "app" / "main.sh").write_text(f"echo {n}\n")
            n += 1
            time.sleep(0.03)

    with Collector(tree, debounce=200, max_wait=700) as watch:
        writer = threading.Thread(target=keep_writing)
        started = time.monotonic()
        writer.start()
        try:
            at, changes = watch.next_timed(timeout=3)
            assert paths(changes) == {"app/main.sh"}
            assert 0.6 <= at - started < 1.2, at - started
            at2, _ = watch.next_timed(timeout=3)  # still writing: the next cap
            assert 0.6 <= at2 - at < 1.2, at2 - at
        finally:
            stop.set()
            writer.join()


def test_changes_while_the_consumer_is_busy_make_one_set(tree: Path) -> None:
    with Collector(tree, busy=1.5) as watch:
        (tree / "app" / "main.sh").write_text("echo v2\n")
        assert paths(watch.next()) == {"app/main.sh"}
        # the consumer is busy now (a run): everything meanwhile is the next set
        for n in range(10):
            (tree / "app" / "src" / "mod.py").write_text(f"VALUE = {n}\n")
            time.sleep(0.05)
        (tree / "docs" / "readme.md").write_text("changed during the run\n")
        assert paths(watch.next(timeout=4)) == {"app/src/mod.py", "docs/readme.md"}
        watch.nothing(0.8)


def test_the_watch_limit_falls_back_to_polling(tree: Path) -> None:
    with Collector(tree, max_native_watches=2) as watch:
        assert watch.watcher.polling
        (notice,) = watch.notices
        assert "fs.inotify.max_user_watches" in notice and "polling" in notice
        assert not watch.watcher.covers("build")  # still no watch on ignored folders
        time.sleep(0.2)
        temp = tree / "app" / "tmp-save"
        temp.write_text("echo polled\n")
        os.replace(temp, tree / "app" / "main.sh")
        assert paths(watch.next(timeout=5)) == {"app/main.sh"}


def test_a_new_folder_past_the_limit_falls_back_to_polling(tree: Path) -> None:
    with Collector(tree, max_native_watches=5) as watch:
        assert not watch.watcher.polling
        (tree / "lib" / "a" / "b").mkdir(parents=True)
        (tree / "lib" / "a" / "b" / "x.sh").write_text("x\n")
        assert paths(watch.next(timeout=5)) == {"lib/a/b/x.sh"}
        assert watch.watcher.polling
        assert any("fs.inotify.max_user_watches" in n for n in watch.notices)
        (tree / "lib" / "a" / "b" / "x.sh").write_text("y\n")
        assert paths(watch.next(timeout=5)) == {"lib/a/b/x.sh"}


def test_repo_filter_asks_git_once_per_burst(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pachhook.repo import git

    keep = RepoFilter(tree)
    calls: list[list[str]] = []
    real = git.run

    def counting(args: Any, cwd: Any, **kw: Any) -> str:
        calls.append(list(args))
        return real(args, cwd, **kw)

    monkeypatch.setattr(git, "run", counting)
    burst = {FileChange(Change.modified, p) for p in ("a.log", "app/main.sh", "build/x", "n.txt")}
    assert paths(keep.settle(burst)) == {"app/main.sh", "n.txt"}
    assert len(calls) == 1
    assert paths(keep.settle(burst)) == {"app/main.sh", "n.txt"}
    assert len(calls) == 1  # answers are kept
    assert not keep(Change.modified, "a.log")  # and used per event


# =========================================================================== #
# The command, in a process of its own
# =========================================================================== #


class WatchProcess:
    """`pachhook watch` running; its output lines as they come."""

    def __init__(self, root: Path, env: dict[str, str], *args: str) -> None:
        self.root = root
        self.proc = subprocess.Popen(
            [PACHHOOK, "watch", *args],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if "--log" not in args:
            self.wait_for(lambda: self.saw(" watching ") == 1, "the start line")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, done: Callable[[], bool], what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"watcher exited ({self.proc.returncode}):\n{self.output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout}s:\n{self.output}")
            time.sleep(0.05)

    def saw(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def summaries(self) -> int:
        return sum(bool(SUMMARY.match(line)) for line in self.lines)

    def runs(self) -> list[dict[str, Any]]:
        path = self.root / ".git" / "pachhook" / "runs.jsonl"
        if not path.exists():
            return []
        entries = [json.loads(line) for line in path.read_text().splitlines()]
        return [
            e
            for e in entries
            if e.get("kind") == "run"
            and e.get("trigger") == "watch"
            and e.get("state") != "running"
        ]

    def wait_runs(self, count: int, timeout: float = 120) -> None:
        self.wait_for(lambda: len(self.runs()) >= count, f"{count} watch run(s)", timeout)
        self.wait_for(lambda: self.summaries() >= count, f"{count} run summaries", timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code


@pytest.fixture
def watching() -> Iterator[Callable[..., WatchProcess]]:
    started: list[WatchProcess] = []

    def start(root: Path, env: dict[str, str], *args: str) -> WatchProcess:
        process = WatchProcess(root, env, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def atomic_save(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def test_help_lists_the_options() -> None:
    proc = subprocess.run([PACHHOOK, "watch", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for option in ("--debounce MS", "--no-deploy", "--once", "--log FILE", "--poll"):
        assert option in proc.stdout
    top = subprocess.run([PACHHOOK, "--help"], capture_output=True, text=True)
    assert "watch" in top.stdout


def test_a_broken_config_at_the_start_is_exit_2(tree: Path) -> None:
    (tree / "pachhook.toml").write_text("[[image]\n")
    proc = subprocess.run([PACHHOOK, "watch"], cwd=tree, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    # One line: the watcher reads the working tree, so no note that the file is uncommitted.
    (error,) = proc.stderr.splitlines()
    assert error.startswith("pachhook: pachhook.toml:1: not valid TOML")
    assert "Traceback" not in proc.stderr


def test_status_shows_the_watcher_and_the_fallback_is_said(
    tree: Path, watching: Callable[..., WatchProcess]
) -> None:
    env = {**os.environ, "PACHHOOK_WATCH_MAX_WATCHES": "1"}
    log = tree / ".git" / "pachhook" / "watch.log"
    watcher = watching(tree, env, "--log", str(log))
    # with --log, output goes to the log only
    deadline = time.monotonic() + 10
    while " watching " not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "no start line in the log"
        time.sleep(0.05)
    text = log.read_text()
    assert "sudo sysctl fs.inotify.max_user_watches=" in text
    assert "polling" in text
    status = subprocess.run([PACHHOOK, "status"], cwd=tree, capture_output=True, text=True)
    assert "running: watch " in status.stdout
    assert f"(pid {watcher.proc.pid})" in status.stdout
    assert watcher.stop() == 0
    assert "stopped after 0 run(s)" in log.read_text()
    status = subprocess.run([PACHHOOK, "status"], cwd=tree, capture_output=True, text=True)
    assert "running: watch" not in status.stdout
    assert "watch  state stopped" in status.stdout


def test_a_watcher_killed_outright_is_not_shown_running(
    tree: Path, watching: Callable[..., WatchProcess]
) -> None:
    watcher = watching(tree, dict(os.environ))
    assert watcher.stop(signal.SIGKILL) == -signal.SIGKILL
    status = subprocess.run([PACHHOOK, "status"], cwd=tree, capture_output=True, text=True)
    assert "running: watch" not in status.stdout
    assert f"state running (pid {watcher.proc.pid} has ended)" in status.stdout


def test_deploy_only_a_spec_save_updates_that_pipeline(
    spec_repo: E2ERepo, watching: Callable[..., WatchProcess]
) -> None:
    repo = spec_repo
    first_run(repo)
    watcher = watching(repo.root, repo.env)
    report = json.loads((repo.root / "pipelines" / "report.json").read_text())
    report["description"] = "weekly"
    atomic_save(repo.root / "pipelines" / "report.json", json.dumps(report, indent=2) + "\n")
    watcher.wait_runs(1)
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 2}
    assert watcher.saw("change: pipelines/report.json") == 1
    assert watcher.saw(f"updated {repo.project}/report") == 1
    # the same content again, and a file nothing uses: no run
    atomic_save(repo.root / "pipelines" / "report.json", json.dumps(report, indent=2) + "\n")
    (repo.root / "notes.txt").write_text("notes\n")
    time.sleep(1.5)
    assert len(watcher.runs()) == 1
    assert watcher.stop(signal.SIGINT) == 0


# =========================================================================== #
# End to end: the real engine and registry, the pachd double
# =========================================================================== #


def slow(repo: E2ERepo, base_image: str) -> None:
    """Builds of the app image take two seconds or more (after the COPY: never cached)."""
    commit(
        repo.root,
        "slow build",
        {"app/Dockerfile": f"FROM {base_image}\nCOPY main.sh /app/main.sh\nRUN sleep 2\n"},
    )


def app_tag(repo: E2ERepo) -> tuple[str, str]:
    images = repo.images()
    return images["clean"], images["features"]


@pytest.mark.docker
def test_an_atomic_save_builds_once_and_updates_its_pipelines(
    repo: E2ERepo, watching: Callable[..., WatchProcess]
) -> None:
    first_run(repo)
    before = repo.images()
    watcher = watching(repo.root, repo.env)
    atomic_save(repo.root / "app" / "main.sh", "echo clean v2\n")
    watcher.wait_runs(1)
    assert repo.versions() == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    after = repo.images()
    assert after["clean"] == after["features"] != before["clean"]
    (record,) = watcher.runs()
    assert [(i["name"], i["status"]) for i in record["images"]] == [(repo.app, "built")]
    assert watcher.saw("change: app/main.sh") == 1
    assert watcher.saw(f"built {after['clean']}") == 1

    # Ignored, unused, or unchanged: no run.
    write(
        repo.root,
        {
            "app/.main.sh.swp": "vim\n",
            "app/__pycache__/x.cpython-311.pyc": "bytecode\n",
            "app/main.sh~": "backup\n",
            "README.md": "# data project\n\nnotes\n",
        },
    )
    atomic_save(repo.root / "app" / "main.sh", "echo clean v2\n")
    time.sleep(1.5)
    assert len(watcher.runs()) == 1
    assert watcher.stop() == 0


@pytest.mark.docker
def test_a_burst_of_50_writes_is_one_run(
    repo: E2ERepo, watching: Callable[..., WatchProcess]
) -> None:
    first_run(repo)
    watcher = watching(repo.root, repo.env)
    for n in range(50):
        (repo.root / "app" / "main.sh").write_text(f"echo clean burst {n}\n")
        time.sleep(0.002)
    watcher.wait_runs(1)
    time.sleep(1.5)
    assert len(watcher.runs()) == 1
    assert repo.versions() == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    assert watcher.stop() == 0


@pytest.mark.docker
def test_a_change_during_a_run_makes_exactly_one_more_run(
    repo: E2ERepo, base_image: str, watching: Callable[..., WatchProcess]
) -> None:
    slow(repo, base_image)
    first_run(repo)
    watcher = watching(repo.root, repo.env)
    atomic_save(repo.root / "app" / "main.sh", "echo clean v2\n")
    watcher.wait_for(lambda: watcher.saw(": building") >= 1, "a build")
    for n in range(5):  # while the slow build runs
        atomic_save(repo.root / "app" / "main.sh", f"echo clean v3.{n}\n")
        time.sleep(0.1)
    watcher.wait_runs(2)
    time.sleep(1.5)
    runs = watcher.runs()
    assert len(runs) == 2, watcher.output
    assert [i["status"] for i in runs[1]["images"]] == ["built"]
    assert runs[1]["images"][0]["reference"] != runs[0]["images"][0]["reference"]
    # A save that lands after the first run was planned but before its context was
    # packed stops that build (its tag would carry content it does not describe);
    # either way, the follow-up run deploys the last content.
    (first,) = runs[0]["images"]
    if first["status"] == "failed":
        assert "app/main.sh changed after this run was planned" in first["error"]
        assert repo.versions() == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    else:
        assert first["status"] == "built"
        assert repo.versions() == {"clean": 3, "features": 3, "stats": 1, "report": 1}
    assert repo.images()["clean"] == runs[1]["images"][0]["reference"]
    assert watcher.stop() == 0


@pytest.mark.docker
def test_config_changes_reload_and_a_broken_config_waits_for_a_fix(
    repo: E2ERepo, watching: Callable[..., WatchProcess]
) -> None:
    first_run(repo)
    watcher = watching(repo.root, repo.env)
    config = (repo.root / "pachhook.toml").read_text()
    with_args = config.replace('context = "app"', 'context = "app"\nbuild_args = { FLAVOUR = "b" }')
    atomic_save(repo.root / "pachhook.toml", with_args)
    watcher.wait_runs(1)
    assert watcher.saw("configuration reloaded") == 1
    statuses = {i["name"]: i["status"] for i in watcher.runs()[0]["images"]}
    assert statuses == {repo.app: "built", repo.tools: "exists"}  # every image decided by state
    assert repo.versions() == {"clean": 2, "features": 2, "stats": 1, "report": 1}

    (repo.root / "pachhook.toml").write_text(with_args + "\n[[image]\n")
    watcher.wait_for(
        lambda: (
            watcher.saw("configuration error: pachhook.toml:") == 1
            and watcher.saw("still watching with the last good configuration") == 1
        ),
        "the error, and that the watcher goes on",
    )
    atomic_save(repo.root / "app" / "main.sh", "echo clean v2\n")
    time.sleep(1.5)
    assert len(watcher.runs()) == 1
    assert watcher.proc.poll() is None

    atomic_save(repo.root / "pachhook.toml", with_args)  # fixed
    watcher.wait_runs(2)
    assert watcher.saw("configuration reloaded") == 2
    statuses = {i["name"]: i["status"] for i in watcher.runs()[1]["images"]}
    assert statuses == {repo.app: "built", repo.tools: "exists"}  # with main.sh v2
    assert repo.versions() == {"clean": 3, "features": 3, "stats": 1, "report": 1}
    assert watcher.stop() == 0


def consistent(repo: E2ERepo, before: dict[str, str]) -> bool:
    """clean and features (the app image's pipelines) both old, or both new."""
    now = repo.images()
    same = [now[name] == before[name] for name in ("clean", "features")]
    return all(same) or not any(same)


@pytest.mark.docker
def test_sigterm_during_a_build_finishes_that_run_then_exits_cleanly(
    repo: E2ERepo, base_image: str, watching: Callable[..., WatchProcess]
) -> None:
    slow(repo, base_image)
    first_run(repo)
    before = repo.images()
    watcher = watching(repo.root, repo.env)
    atomic_save(repo.root / "app" / "main.sh", "echo clean v2\n")
    watcher.wait_for(lambda: watcher.saw(": building") >= 1, "a build")
    assert watcher.stop(signal.SIGTERM) == 0
    assert watcher.saw("stopping once this run is done") == 1
    assert lock.holder(repo.root / ".git" / "pachhook") is None
    assert consistent(repo, before)
    assert repo.versions() == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    assert len(watcher.runs()) == 1
    status = subprocess.run([PACHHOOK, "status"], cwd=repo.root, capture_output=True, text=True)
    assert "running: watch" not in status.stdout


@pytest.mark.docker
def test_a_second_sigterm_interrupts_the_run_and_applies_nothing(
    repo: E2ERepo, base_image: str, watching: Callable[..., WatchProcess]
) -> None:
    slow(repo, base_image)
    first_run(repo)
    before = repo.images()
    watcher = watching(repo.root, repo.env)
    atomic_save(repo.root / "app" / "main.sh", "echo clean v2\n")
    watcher.wait_for(lambda: watcher.saw(": building") >= 1, "a build")
    watcher.proc.send_signal(signal.SIGTERM)
    watcher.wait_for(lambda: watcher.saw("stopping once this run is done") == 1, "the notice")
    assert watcher.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert watcher.saw("interrupted during a run") == 1
    assert "Traceback" not in watcher.output
    assert lock.holder(repo.root / ".git" / "pachhook") is None
    assert consistent(repo, before)
    assert repo.images() == before
    assert repo.pachd.double.open_transactions() == {}  # type: ignore[union-attr]
