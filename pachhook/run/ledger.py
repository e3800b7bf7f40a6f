"""What pachhook did, per run, under `.git/pachhook/` (never in the work tree)."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RUNS = "runs.jsonl"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append(state_dir: Path, entry: dict[str, Any]) -> None:
    """Add one record; a whole line at a time, so readers never see half of one."""
    path = state_dir / RUNS
    with _locked(path), open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read(state_dir: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The records, oldest first; a damaged line is passed over."""
    path = state_dir / RUNS
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out[-limit:] if limit else out


def logs_dir(state_dir: Path) -> Path:
    path = state_dir / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path
