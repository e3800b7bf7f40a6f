"""What the benchmarks measure of a whole process: its wall and CPU time, and the
modules it imports."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# As installed: with bytecode (some shells set PYTHONDONTWRITEBYTECODE; pip compiles on install).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
# What the no-op path must not import.
HEAVY = ("docker", "python_pachyderm", "watchdog")


def timed(cmd: list[str], cwd: Path, env: dict[str, str] = ENV) -> tuple[float, float]:
    """Wall time and CPU time (user + system, of the process and its children): on a
    loaded machine the CPU time says more about the work done than the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, env=env)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.decode()[-800:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def imported(cmd: list[str], cwd: Path, env: dict[str, str] = ENV) -> set[str]:
    """Every module `cmd` (a Python command) imports, by `-X importtime`."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *cmd[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
    )
    return {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}


def heavy_imports(cmd: list[str], cwd: Path, env: dict[str, str] = ENV) -> list[str]:
    """The HEAVY packages `cmd` imports."""
    return sorted({m.split(".")[0] for m in imported(cmd, cwd, env)} & set(HEAVY))
