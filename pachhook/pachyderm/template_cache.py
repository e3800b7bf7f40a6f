"""Evaluated templates, remembered under the state dir (`.git/pachhook/templates/`).

Which files a template reads is known only once it has been evaluated, and may depend
on its args (go-jsonnet imports lazily). So a result is kept with its trace: the
(path, mode, blob id) of every file the evaluation read, the template included. The
evaluation is a function of the evaluator, the args and the bytes of those files; so
wherever every file of a trace is unchanged, evaluating again would read the same files
and give the same specs. A cached result is used only where its trace holds.

- Entries, by a key known before evaluating: the evaluator, the template's path and
  blob id, and the args. Each keeps a few variants (traces with their specs), so that
  switching branches back and forth does not evaluate a shared library again.
- The index, by template instance (path and args): the traces of its recent variants,
  with the commits where each was found to hold. The hook's first look reads it to tell,
  without evaluating anything, whether a change can touch a template's inputs.

Nothing here is in the work tree, so a commit cannot plant a result. An unreadable file
is a miss; failures are never cached.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pachhook.repo.cachefile import read_json, write_json

FORMAT = 1  # the rules results depend on: TLAs as strings, import resolution, result shape
FOLDER = "templates"  # under the state dir
VARIANTS = 4  # traces kept per entry and per instance
COMMITS = 8  # commits remembered per trace of the index
UNUSED_DAYS = 30  # entries unused this long are pruned (at most once a day)

Trace = tuple[tuple[str, str, str], ...]  # (path, mode, blob id), the template first


class Cached(NamedTuple):
    documents: list[dict[str, Any]]
    trace: Trace


def instance_id(file: str, args: Iterable[tuple[str, str]]) -> str:
    """A template instance: its file and its args (their order does not matter)."""
    return _digest([file, sorted(args)])[:32]


def entry_key(evaluator: str, file: str, blob: str, args: Iterable[tuple[str, str]]) -> str:
    return _digest([FORMAT, evaluator, file, blob, sorted(args)])


def _digest(value: Any) -> str:
    import hashlib  # here: the no-op path reads the index and hashes nothing

    return hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()


def _trace(raw: Any) -> Trace | None:
    if not isinstance(raw, list):
        return None
    out = []
    for item in raw:
        if not (
            isinstance(item, list) and len(item) == 3 and all(isinstance(x, str) for x in item)
        ):
            return None
        out.append((item[0], item[1], item[2]))
    return tuple(out)


# -- entries ----------------------------------------------------------------------------


def _entry_path(state_dir: Path, key: str) -> Path:
    return state_dir / FOLDER / "cache" / key[:2] / f"{key}.json"


def lookup(state_dir: Path, key: str, holds: Callable[[Trace], bool]) -> Cached | None:
    """The cached result of an entry whose trace holds at the source, if any."""
    path = _entry_path(state_dir, key)
    data = read_json(path)
    variants = data.get("variants") if isinstance(data, dict) else None
    if not isinstance(variants, list):
        return None
    for index, variant in enumerate(variants):
        trace = _trace(variant.get("trace")) if isinstance(variant, dict) else None
        documents = variant.get("documents") if isinstance(variant, dict) else None
        if trace is None or not isinstance(documents, list) or not holds(trace):
            continue
        if index:  # the most recently used first
            variants.insert(0, variants.pop(index))
            write_json(path, data)
        else:
            _touch(path)
        return Cached(documents, trace)
    return None


def store(
    state_dir: Path,
    key: str,
    label: str,
    trace: Trace,
    documents: Sequence[dict[str, Any]],
) -> None:
    path = _entry_path(state_dir, key)
    data = read_json(path)
    variants = data.get("variants") if isinstance(data, dict) else None
    kept = [
        v
        for v in (variants if isinstance(variants, list) else [])
        if isinstance(v, dict) and _trace(v.get("trace")) != trace
    ]
    variant = {"trace": [list(t) for t in trace], "documents": list(documents)}
    write_json(path, {"format": FORMAT, "template": label, "variants": [variant, *kept][:VARIANTS]})
    _prune(state_dir)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)  # the mtime tells the pruning when an entry was last used


def _prune(state_dir: Path) -> None:
    """Entries unused for UNUSED_DAYS go; looked for at most once a day."""
    folder = state_dir / FOLDER / "cache"
    mark = folder / ".pruned"
    now = time.time()
    try:
        if now - mark.stat().st_mtime < 86400:
            return
    except OSError:
        pass
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
        for entry in folder.glob("*/*.json"):
            if now - entry.stat().st_mtime > UNUSED_DAYS * 86400:
                entry.unlink()
    except OSError:
        pass


# -- the index ----------------------------------------------------------------------------


class Index:
    """Per template instance: recent traces, and the commits where each held."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FOLDER / "index.json"
        data = read_json(self.path)
        self._data: dict[str, Any] = data if isinstance(data, dict) else {}
        self._dirty = False

    def traces(self, instance: str) -> list[tuple[Trace, list[str]]]:
        """(trace, commits where it held), the most recent first."""
        out = []
        raw = self._data.get(instance)
        for variant in raw if isinstance(raw, list) else []:
            trace = _trace(variant.get("trace")) if isinstance(variant, dict) else None
            commits = variant.get("commits") if isinstance(variant, dict) else None
            if trace is not None and isinstance(commits, list):
                out.append((trace, [c for c in commits if isinstance(c, str)]))
        return out

    def note(self, instance: str, trace: Trace, commit: str | None) -> None:
        """`trace` holds at `commit` (None: at a working tree)."""
        known = self.traces(instance)
        commits: list[str] = next((c for t, c in known if t == trace), [])
        if known and known[0][0] == trace and (commit is None or commit in commits):
            return
        if commit is not None:
            commits = [commit, *(c for c in commits if c != commit)][:COMMITS]
        rest = [{"trace": [list(x) for x in t], "commits": c} for t, c in known if t != trace]
        mine = {"trace": [list(x) for x in trace], "commits": commits}
        self._data[instance] = [mine, *rest][:VARIANTS]
        self._dirty = True

    def files(self, instances: Iterable[str]) -> set[str]:
        """Every file any recent trace of these instances read."""
        return {path for i in instances for trace, _ in self.traces(i) for path, _, _ in trace}

    def keep_only(self, instances: Iterable[str]) -> None:
        """Forget instances the configuration no longer has."""
        wanted = set(instances)
        for gone in [i for i in self._data if i not in wanted]:
            del self._data[gone]
            self._dirty = True

    def save(self) -> None:
        if self._dirty:
            write_json(self.path, self._data)
            self._dirty = False


def trace_holds(trace: Trace, entries: Mapping[str, tuple[str, str]]) -> bool:
    """Whether every file of `trace` has the recorded (mode, blob id) in `entries`."""
    return all(entries.get(path) == (mode, blob) for path, mode, blob in trace)
