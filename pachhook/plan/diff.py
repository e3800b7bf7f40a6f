"""`pachhook diff`: the spec a pipeline runs on the cluster against the one the repository
would apply (its image resolved to the tag the plan uses), field by field.

Whether they differ is the plan's verdict (the spec digest pachhook annotates, and drift
found through the versions pachhook wrote), so `diff` and `plan` never disagree. The
fields shown come from two stored forms where pachhook has one (a drifted pipeline: the
version pachhook wrote against the one the cluster runs), else from the repository's
spec with pachd 2.7's defaults filled in (`stored.as_stored`).

Values that may be secrets (environment variables, credentials in URLs, fields named
like passwords or tokens) are shown as `***`, marked where the two sides differ.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from pachhook.errors import InputError
from pachhook.pachyderm.specs import rewritten
from pachhook.pachyderm.stored import (
    Stored,
    as_stored,
    flatten,
    spec_of,
)
from pachhook.plan.planner import (
    APPLIED,
    DRIFTED,
    READ,
    UNCHANGED,
    PipelinePlan,
    Plan,
    Planned,
    Remote,
    Removed,
    make_plan,
)
from pachhook.plan.state import ClusterLookup, Known, cluster_state

Key = tuple[str, str]
MASK = "***"
CONTEXT = 2  # unchanged fields shown around a change

# How the repository's spec reads as a request: the adapter's parser (python-pachyderm).
Requested = Callable[[Any, dict[str, Any]], dict[str, Any]]


class PipelineDiff(NamedTuple):
    key: Key
    verdict: str  # the plan's action, or "removed" for a spec gone from the repository
    note: str  # one line on why they differ
    lines: tuple[str, ...]  # the unified diff


def diffs(
    planned: Planned,
    stored: Mapping[Key, Stored],
    cluster: ClusterLookup,
    requested: Requested,
    repository: str,
    names: Sequence[str] = (),
) -> list[PipelineDiff]:
    """One entry per pipeline named (all of the repository's, and those pachhook applied
    from here whose spec is gone, when none is named); an unknown name is bad input.
    `stored`: every pipeline the cluster runs, with its spec; `cluster`: for older
    versions."""
    workspace = planned.workspace
    assert workspace is not None
    everything = {p.key for p in workspace.pipelines}
    held = cluster_state(Known(stored, cluster), everything, everything, repository)
    plan = make_plan(
        workspace,
        planned.resolved.changes,
        planned.base,
        Remote(pipelines=held, cluster=READ),
    )
    chosen = _chosen(plan, stored, names, workspace.config.pachyderm.project)
    out = []
    for p in plan.pipelines:
        if p.key in chosen:
            out.append(_pipeline_diff(p, stored.get(p.key), cluster, requested))
    for removed in plan.removed:
        if removed.key in chosen or (not names and removed.prunable):
            out.append(_removed_diff(removed, stored.get(removed.key)))
    for key in sorted(chosen - {p.key for p in plan.pipelines} - {r.key for r in plan.removed}):
        # On the cluster only, never applied from here: shown, never to be acted on.
        out.append(_removed_diff(Removed(*key, None, True, False), stored[key]))
    return out


def _chosen(
    plan: Plan, stored: Mapping[Key, Stored], names: Sequence[str], project: str
) -> set[Key]:
    ours = {p.key for p in plan.pipelines}
    if not names:
        return ours
    known = ours | set(stored) | {r.key for r in plan.removed}
    chosen = set()
    for name in names:
        key: Key = tuple(name.split("/", 1)) if "/" in name else (project, name)  # type: ignore[assignment]
        if key not in known:
            raise InputError(
                f"pipeline {key[0]}/{key[1]} is neither in the repository nor on the cluster; "
                "name it as PIPELINE or PROJECT/PIPELINE"
            )
        chosen.add(key)
    return chosen


def _pipeline_diff(
    p: PipelinePlan, current: Stored | None, cluster: ClusterLookup, requested: Requested
) -> PipelineDiff:
    name = f"{p.pipeline.project}/{p.pipeline.name}"
    right_label = f"repository: {p.pipeline.where} (as pachhook would apply it)"
    if p.action == UNCHANGED or p.action not in APPLIED:
        return PipelineDiff(p.key, p.action, "the cluster runs this spec", ())
    ours = None
    if p.action == DRIFTED and p.deployed is not None:
        ours = next(
            (s for s in cluster.history(p.key) if s.version == p.deployed.since and s.by_pachhook),
            None,
        )
    if ours is not None and ours.digest == p.spec_digest:
        # The repository still holds what pachhook applied: its stored form is exact.
        repository = spec_of(ours.details)
        right_label += f" = version {ours.version} as pachhook applied it"
    else:
        doc = rewritten(p.pipeline, p.image, {})
        repository = as_stored(requested(p.pipeline, doc), *p.key)
    cluster_side = spec_of(current.details) if current is not None else None
    left_label = f"cluster: {name} (version {current.version})" if current else f"cluster: {name}"
    note = {
        "create": "not on the cluster: a run creates it",
        "update": "a run updates it",
        DRIFTED: "changed outside pachhook: a run restores the repository's spec",
    }.get(p.action, p.action)
    lines = unified(cluster_side, repository, left_label, right_label)
    if not lines:
        note += " (the fields shown are equal: the difference is in pachhook's annotations)"
    return PipelineDiff(p.key, p.action, note, tuple(lines))


def _removed_diff(removed: Removed, current: Stored | None) -> PipelineDiff:
    name = f"{removed.project}/{removed.name}"
    if current is None:
        return PipelineDiff(
            removed.key, "removed", "its spec is gone and it is not on the cluster", ()
        )
    note = (
        "its spec is gone: pachhook run --prune deletes it (keeping its output repo)"
        if removed.managed
        else "on the cluster only, not applied by pachhook from this repository: never deleted by it"
    )
    lines = unified(
        spec_of(current.details),
        None,
        f"cluster: {name} (version {current.version})",
        f"repository: {removed.spec_file or 'no spec'}",
    )
    return PipelineDiff(removed.key, "removed", note, tuple(lines))


# -- rendering --------------------------------------------------------------------------


def unified(
    cluster: dict[str, Any] | None, repository: dict[str, Any] | None, left: str, right: str
) -> list[str]:
    """A unified diff of the two specs, one line per field (`path: value`)."""
    a = dict(flatten(_opened(cluster))) if cluster is not None else {}
    b = dict(flatten(_opened(repository))) if repository is not None else {}
    a, b = _masked(a, b)
    before = [f"{path}: {_shown(a[path])}" for path in sorted(a)]
    after = [f"{path}: {_shown(b[path])}" for path in sorted(b)]
    if before == after:
        return []
    return list(
        difflib.unified_diff(
            before,
            after,
            fromfile=left if cluster is not None else "/dev/null",
            tofile=right if repository is not None else "/dev/null",
            lineterm="",
            n=CONTEXT,
        )
    )


def _opened(doc: dict[str, Any]) -> dict[str, Any]:
    """pod_spec and pod_patch are JSON in a string: compared (and masked) field by field."""
    out = dict(doc)
    for name in ("pod_spec", "pod_patch"):
        if isinstance(out.get(name), str):
            with contextlib.suppress(ValueError):
                out[name] = json.loads(out[name])
    return out


_SECRET_NAME = re.compile(r"(pass(word|wd)?|secret|token|credential|api_?key|private_?key)$", re.I)
_URL_CREDENTIALS = re.compile(r"//[^/@\s]+@")


def is_secret(path: str) -> bool:
    """Environment variables anywhere (transform.env, a pod patch's env values), and
    fields named like credentials."""
    parts = re.split(r"[.\[\]]+", path)
    if "env" in parts:
        return True
    last = next((part for part in reversed(parts) if part and not part.isdigit()), "")
    return bool(_SECRET_NAME.search(last))


def _masked(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    a, b = dict(a), dict(b)
    for path in a.keys() | b.keys():
        for side in (a, b):
            if isinstance(side.get(path), str):
                side[path] = _URL_CREDENTIALS.sub(f"//{MASK}@", side[path])
        if not is_secret(path):
            continue
        # Marked as different only where both sides have a value; never shown either way.
        same = a.get(path) == b.get(path) or path not in a or path not in b
        if path in a:
            a[path] = MASK if same else f"{MASK} (the cluster's value)"
        if path in b:
            b[path] = MASK if same else f"{MASK} (the repository's value)"
    return a, b


def _shown(value: Any) -> str:
    if isinstance(value, str) and value.startswith(MASK):
        return value
    return json.dumps(value, sort_keys=True)


def text(found: Sequence[PipelineDiff]) -> list[str]:
    """What `pachhook diff` prints: for each pipeline that differs, a line saying why,
    then its unified diff."""
    lines = []
    for d in found:
        if d.verdict == UNCHANGED or (d.verdict == "removed" and not d.lines):
            continue
        if d.verdict not in APPLIED and d.verdict != "removed":
            continue
        lines.append(f"# {d.key[0]}/{d.key[1]}: {d.note}")
        lines.extend(d.lines)
    return lines


def differ(found: Sequence[PipelineDiff]) -> bool:
    return any(d.verdict in APPLIED or (d.verdict == "removed" and d.lines) for d in found)
