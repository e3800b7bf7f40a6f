"""`pachhook watch` on the synthetic monorepo: save-to-build latency, idle CPU, peak memory.

    python bench/bench_watch.py [--saves N] [--idle SECONDS] [--debounce MS]

Starts its own Docker engine and registry (tests/services.py; stopped by pid at the
end), then the real `pachhook watch --no-deploy` in a process of its own.

(a) Latency: a source file of one image is saved with new content N times, one run
    after another, alternately as editors do it (a temporary file renamed over the
    target, and a write in place; --save picks one). Measured from the moment the
    save returns to the moment the watcher's "<image>: building" line arrives on its
    output pipe: the watcher has waited out the quiet period, planned (the planner of
    `pachhook run --working-tree`, over all 100 images and 500 specs; it starts while
    the burst settles, see EarlyPlan in pachhook/watchsession.py), asked the registry
    whether the tag exists, and hands the build to the engine. The first save, which
    also pays for importing docker-py, is reported apart. The "change:" line the
    watcher prints when a run starts splits the quiet period from the rest.
    Target: p95 <= quiet period + 150 ms.
(b) Idle CPU: utime + stime of the watcher process (/proc/PID/stat) over an idle
    interval (default 60 s) after the builds. Target: under 1%.
(c) Peak memory: VmHWM of the watcher process (/proc/PID/status) at the end, after
    all builds. Target: under 100 MB.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import monorepo  # noqa: E402
import services  # noqa: E402

WORK = HERE / ".work"
IMAGE = 7  # the image whose source file is saved
TARGET_EXTRA_MS = 150


class Watcher:
    """The watcher process; every output line with the moment it arrived."""

    def __init__(self, root: Path, env: dict[str, str], debounce: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pachhook", "watch", "--no-deploy", "--debounce", str(debounce)],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def first(self, pattern: str, after: float, timeout: float = 120) -> tuple[float, str]:
        wanted = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for at, line in self.lines:
                    if at >= after and wanted.search(line):
                        return at, line
            if self.proc.poll() is not None:
                break
            time.sleep(0.002)
        tail = "\n".join(line for _, line in self.lines[-30:])
        raise SystemExit(f"no line matching {pattern!r} (watcher output ends with):\n{tail}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {key} in /proc/{pid}/status")


def point_at(root: Path, registry: str) -> None:
    """Name the registry that runs (the monorepo's default port may be taken)."""
    config = (root / "pachhook.toml").read_text()
    found = re.search(r'name = "([^/"]+)/bench/', config)
    if found is None or found.group(1) == registry:
        return
    old = found.group(1)
    changed = [root / "pachhook.toml", *sorted((root / "pipelines").rglob("*.*"))]
    for path in changed:
        path.write_text(path.read_text().replace(f"{old}/bench/", f"{registry}/bench/"))
    monorepo.git(root, "add", "-A")
    monorepo.git(root, "commit", "-q", "-m", f"registry at {registry}")


def save(path: Path, text: str, atomic: bool) -> float:
    """As editors do: a temporary file renamed over the target, or a write in place."""
    if atomic:
        temp = path.with_name(f".{path.name}.bench.tmp")
        temp.write_text(text)
        os.replace(temp, path)
    else:
        with open(path, "w") as handle:
            handle.write(text)
    return time.monotonic()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saves", type=int, default=25)
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--debounce", type=int, default=200)
    parser.add_argument(
        "--save",
        choices=("both", "atomic", "in-place"),
        default="both",
        help="how files are saved (both: alternately)",
    )
    args = parser.parse_args()

    root = monorepo.make(WORK / "monorepo-watch")
    # A clean working tree: only the bench's own saves are changes.
    monorepo.git(root, "checkout", "-q", "--", ".")
    files = monorepo.git(root, "ls-files").count("\n") + 1

    started: list[object] = []
    services_root = services.short_tempdir("bw-")
    watcher: Watcher | None = None
    try:
        engine = services.docker_engine_from_env()
        if engine is None:
            engine = services.start_docker_engine(services_root / "engine")
            started.append(engine)
        services.ensure_base_image(engine)
        try:
            registry = services.start_registry(services_root / "registry", port=5999)
        except services.ServiceError:
            registry = services.start_registry(services_root / "registry2")
        started.append(registry)
        point_at(root, f"127.0.0.1:{registry.port}")

        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["DOCKER_HOST"] = engine.host
        watcher = Watcher(root, env, args.debounce)
        _, start_line = watcher.first(r" watching ", 0.0, timeout=60)
        pid = watcher.proc.pid

        target = root / f"images/img{IMAGE:03d}/src/mod_000.py"
        reference = re.escape(f"/bench/img{IMAGE:03d}:")
        latencies: list[float] = []
        settle: list[float] = []
        first_save = 0.0
        for n in range(args.saves + 1):
            time.sleep(0.5)  # a pause between edits, as a person makes
            saved = save(
                target,
                f"VALUE = {n}  # bench {time.time()}\n",
                atomic=args.save == "atomic" or (args.save == "both" and n % 2 == 0),
            )
            change_at, _ = watcher.first(r"\d change: ", saved)
            build_at, _ = watcher.first(reference + r"\S*: building$", saved)
            watcher.first(r"\d run (done|failed)", build_at)
            if n == 0:
                first_save = build_at - saved
                continue
            latencies.append(build_at - saved)
            settle.append(change_at - saved)

        time.sleep(2.0)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle)
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        hwm = status_kb(pid, "VmHWM")
        rss = status_kb(pid, "VmRSS")
    finally:
        if watcher is not None:
            watcher.stop()
        for service in reversed(started):
            service.stop()  # type: ignore[attr-defined]
        services.remove_tree(services_root)

    ms = [x * 1000 for x in latencies]
    quiet = [x * 1000 for x in settle]
    plan = [(b - s) * 1000 for b, s in zip(latencies, settle, strict=True)]
    target_ms = args.debounce + TARGET_EXTRA_MS
    idle_pct = (cpu1 - cpu0) / (t1 - t0) * 100
    print(
        f"synthetic monorepo: {files} files, {monorepo.IMAGES} images, {monorepo.PIPELINES} pipelines"
    )
    print(start_line.split(" ", 1)[1])
    print(
        f"(a) save -> build start, {len(ms)} saves (first save apart: {first_save * 1000:.0f} ms)"
    )
    print(
        f"    median {statistics.median(ms):7.0f} ms   p95 {percentile(ms, 0.95):7.0f} ms   "
        f"min {min(ms):.0f}  max {max(ms):.0f}"
    )
    print(
        f"    of which save -> run start (quiet period {args.debounce} ms): median "
        f"{statistics.median(quiet):.0f} ms, p95 {percentile(quiet, 0.95):.0f} ms"
    )
    print(
        f"    and run start -> build start (plan, registry): median "
        f"{statistics.median(plan):.0f} ms, p95 {percentile(plan, 0.95):.0f} ms"
    )
    verdict = "met" if percentile(ms, 0.95) <= target_ms else "NOT met"
    print(f"    target: <= {target_ms} ms (quiet period + {TARGET_EXTRA_MS} ms) -> {verdict}")
    print(
        f"(b) idle CPU over {t1 - t0:.0f} s: {cpu1 - cpu0:.3f} s = {idle_pct:.3f}%   "
        f"target < 1% -> {'met' if idle_pct < 1 else 'NOT met'}"
    )
    print(
        f"(c) peak memory (VmHWM): {hwm / 1024:.1f} MB (now {rss / 1024:.1f} MB)   "
        f"target < 100 MB -> {'met' if hwm < 100 * 1024 else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
