"""One run at a time per repository: hooks, post-push deploys and the watcher take turns."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pachhook.errors import PachhookError

LOCK = "run.lock"


def holder(state_dir: Path) -> dict[str, object] | None:
    """Who holds the lock (pid, what, since), if anyone does."""
    path = state_dir / LOCK
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = handle.read()
                try:
                    return json.loads(text) if text else {"what": "another run"}
                except json.JSONDecodeError:
                    return {"what": "another run"}
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    except FileNotFoundError:
        return None


def describe(info: dict[str, object] | None) -> str:
    if not info:
        return "another pachhook run"
    since = info.get("since")
    age = f", for {time.time() - float(since):.0f}s" if isinstance(since, int | float) else ""
    return f"{info.get('what', 'another run')} (pid {info.get('pid', '?')}{age})"


@contextmanager
def run_lock(
    state_dir: Path,
    what: str,
    *,
    timeout: float | None = None,
    on_wait: Callable[[str], None] = lambda message: None,
) -> Iterator[None]:
    """Hold the repository's run lock. Waits for the holder to finish, saying who it is;
    `timeout` seconds at most (None: as long as it takes). The kernel drops the lock if the
    holder dies, so a crash never leaves it stuck."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            on_wait(f"waiting for {describe(_read(fd))} to finish")
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if deadline is not None and time.monotonic() > deadline:
                        raise PachhookError(
                            f"gave up after {timeout:g}s waiting for {describe(_read(fd))}; "
                            "try again when it is done (pachhook status shows it), or wait "
                            "longer with PACHHOOK_LOCK_TIMEOUT"
                        ) from None
                    time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(
            fd, json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}).encode(), 0
        )
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read(fd: int) -> dict[str, object] | None:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        return json.loads(text) if text else None
    except (OSError, json.JSONDecodeError):
        return None
