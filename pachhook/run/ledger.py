"""What pachhook did, per run, under `.git/pachhook/` (never in the work tree).

The ledger is bounded: past MAX_BYTES it is trimmed to its newest part, keeping what is
not resolved yet (a pending deploy, an open transaction), so `status` stays quick
however long a repository is used. A damaged line is passed over, never fatal.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RUNS = "runs.jsonl"
TRANSACTIONS = "transactions.jsonl"  # every transaction a run opened, and how it ended
MAX_BYTES = 2_000_000  # a ledger file past this is trimmed to about half of it
UNRESOLVED = frozenset({"pending", "waiting", "running", "open"})  # states not final yet


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append(state_dir: Path, entry: dict[str, Any], name: str = RUNS) -> None:
    """Add one record; a whole line at a time, so readers never see half of one."""
    path = state_dir / name
    with _locked(path):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        if size > MAX_BYTES:
            _trim(path)


def _trim(path: Path) -> None:
    """Keep the newest half of the file, and of the older part the latest entry of
    anything still unresolved. Written aside and renamed: a crash leaves one or the other."""
    lines = path.read_bytes().splitlines(keepends=True)
    kept: list[bytes] = []
    size = 0
    for line in reversed(lines):
        size += len(line)
        if size > MAX_BYTES // 2:
            break
        kept.append(line)
    newest = list(reversed(kept))
    older = lines[: len(lines) - len(newest)]
    recent_keys = {_key(e) for e in map(_entry, newest) if e is not None}
    latest: dict[tuple[Any, Any], bytes] = {}
    for line in older:
        entry = _entry(line)
        if entry is not None and "state" in entry:
            latest[_key(entry)] = line if entry.get("state") in UNRESOLVED else b""
    carried = [line for key, line in latest.items() if line and key not in recent_keys]
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_bytes(b"".join([*carried, *newest]))
    temp.replace(path)


def _key(entry: dict[str, Any]) -> tuple[Any, Any]:
    return (str(entry.get("kind")), str(entry.get("id")))


def _entry(line: bytes | str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def read(state_dir: Path, limit: int | None = None, name: str = RUNS) -> list[dict[str, Any]]:
    """The records, oldest first; a damaged line (or one that is not an object) is passed
    over. Of a file far past the bound (written before there was one, and not trimmed
    yet: the next append does it), only the newest MAX_BYTES are read."""
    path = state_dir / name
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > 2 * MAX_BYTES:
                handle.seek(size - MAX_BYTES)
                handle.readline()  # the rest of a line cut in two
            data = handle.read()
    except (FileNotFoundError, IsADirectoryError):
        return []
    text = data.decode("utf-8", errors="replace")
    out = [entry for entry in map(_entry, text.splitlines()) if entry is not None]
    return out[-limit:] if limit else out


def logs_dir(state_dir: Path) -> Path:
    path = state_dir / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def process_alive(pid: Any) -> bool:
    """The pachhook process `pid` still runs. A process killed outright (SIGKILL, a reboot)
    never writes its last state, so a state it left must not be believed forever."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    except OverflowError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            if handle.read().rsplit(b")", 1)[-1].split()[:1] == [b"Z"]:
                return False  # a zombie has ended; only its parent has not noticed yet
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"pachhook" in handle.read()  # not a reused pid
    except OSError:
        return True


class TransactionJournal:
    """The `TransactionLog` of the Pachyderm adapter, under the state dir: a transaction is
    written down before anything is sent into it, and its end after; one still open whose
    run has ended was left by a run killed inside it."""

    def __init__(
        self, state_dir: Path, run_id: str, say: Callable[[str], None] = lambda line: None
    ) -> None:
        self.state_dir = state_dir
        self.run_id = run_id
        self.say = say

    def _write(self, txn_id: str, state: str, **fields: Any) -> None:
        entry = {"kind": "transaction", "id": txn_id, "state": state, "run": self.run_id}
        append(self.state_dir, {**entry, "time": time.time(), **fields}, TRANSACTIONS)

    def opened(self, txn_id: str) -> None:
        self._write(txn_id, "open", pid=os.getpid())

    def closed(self, txn_id: str, how: str) -> None:
        self._write(txn_id, how)
        if how.startswith("deleted:"):
            self.say(f"deleted transaction {txn_id}, {how.removeprefix('deleted: ')}")

    def abandoned(self) -> list[str]:
        latest: dict[str, dict[str, Any]] = {}
        for entry in read(self.state_dir, name=TRANSACTIONS):
            latest[str(entry.get("id"))] = entry
        return [
            txn_id
            for txn_id, entry in latest.items()
            if entry.get("state") == "open"
            and entry.get("run") != self.run_id
            # This process runs one run at a time: its earlier runs have ended.
            and (entry.get("pid") == os.getpid() or not process_alive(entry.get("pid")))
        ]
