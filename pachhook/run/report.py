"""Turn plans and results into lines for people, and into JSON."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from pachhook.plan.planner import (
    APPLIED,
    BROKEN,
    BUILD,
    CREATE,
    DRIFTED,
    HELD,
    READ,
    UPDATE,
    Plan,
    Reason,
    Removed,
)

if TYPE_CHECKING:
    from pachhook.run.executor import RunRecord


def reasons_text(reasons: Iterable[Reason], limit: int = 3) -> str:
    items = list(reasons)
    parts = [f"{r.path}: {r.why}" if r.path else r.why for r in items[:limit]]
    if len(items) > limit:
        parts.append(f"+{len(items) - limit} more")
    return "; ".join(parts)


class Row(NamedTuple):
    """One line of a plan, whatever it is rendered as (lines here; a table elsewhere)."""

    kind: str  # image | pipeline | removed
    action: str
    name: str  # image reference, or project/name
    where: str | None  # spec file (and line)
    target: str | None  # the image a pipeline will run
    why: str


def state_text(plan: Plan) -> str | None:
    """How the registry and the cluster were known; None when nothing was read because
    nothing could matter."""
    if not plan.evaluated:
        return None
    text = f"state: registry {plan.registry}, cluster {plan.cluster}"
    if plan.registry != READ or plan.cluster != READ:
        text += "; actions where not read are what a run does if the cluster and registry differ"
    return text


def summary_texts(plan: Plan) -> tuple[str, str]:
    """The images' and the pipelines' counts."""
    counts = Counter(i.action for i in plan.images)
    images = f"images: {counts[BUILD]} to build" + "".join(
        f", {n} {_IMAGE_WORDS.get(action, action)}"
        for action, n in sorted(counts.items())
        if action != BUILD
    )
    actions = Counter(p.action for p in plan.pipelines)
    applied = sum(actions[a] for a in APPLIED)
    kinds = ", ".join(f"{actions[a]} {a}" for a in APPLIED if actions[a])
    pipelines = f"pipelines (upstream first): {applied} to apply" + (f" ({kinds})" if kinds else "")
    held = actions[HELD]
    rest = len(plan.pipelines) - applied - held
    if rest:
        pipelines += f", {rest} unchanged"
    if held:
        pipelines += f", {held} held"
    return images, pipelines


_IMAGE_WORDS = {"exists": "in the registry", "skip": "unchanged", "broken": "cannot be built"}


def plan_rows(plan: Plan, *, verbose: bool = False) -> list[Row]:
    """What needs doing (with `verbose`, everything), images first, then pipelines in DAG
    order, then specs that are gone."""
    rows = [
        Row("image", i.action, i.reference or i.label, None, None, reasons_text(i.reasons))
        for i in plan.images
        if verbose or i.action in (BUILD, BROKEN)
    ]
    rows += [
        Row(
            "pipeline",
            p.action,
            f"{p.pipeline.project}/{p.pipeline.name}",
            p.pipeline.where,
            image_text(p.image),
            reasons_text(p.reasons),
        )
        for p in plan.pipelines
        if verbose or p.action in APPLIED or p.action == HELD
    ]
    rows += [
        Row("removed", "removed", f"{r.project}/{r.name}", r.spec_file, None, removed_text(r))
        for r in plan.removed
    ]
    return rows


def removed_text(removed: Removed) -> str:
    gone = f"its spec is gone from {removed.spec_file}" if removed.spec_file else "its spec is gone"
    if removed.on_cluster is None:
        return (
            f"{gone}; pachhook run --prune deletes it if pachhook applied it from this "
            "repository, keeping its output repo"
        )
    if not removed.on_cluster:
        return f"{gone}; not on the cluster"
    if removed.managed:
        return f"{gone}; still on the cluster: pachhook run --prune deletes it, keeping its output repo"
    return (
        f"{gone}; still on the cluster, not applied by pachhook from this repository, so "
        "never deleted by it (pachctl delete pipeline if you mean it)"
    )


def plan_lines(plan: Plan, *, verbose: bool = False) -> list[str]:
    lines = [f"changed files: {len(plan.changed_files)}"]
    if not plan.evaluated:
        lines.append(
            "nothing to do: no changed file is an image input, a pipeline spec or the configuration"
        )
        return lines
    state = state_text(plan)
    if state:
        lines.append(state)
    images, pipelines = summary_texts(plan)
    rows = plan_rows(plan, verbose=verbose)
    lines.append(images)
    lines += [f"  {r.action:<6} {r.name}  ({r.why})" for r in rows if r.kind == "image"]
    lines.append(pipelines)
    lines += [
        f"  {r.action:<6} {r.name}  {r.where}  -> {r.target}  ({r.why})"
        for r in rows
        if r.kind == "pipeline"
    ]
    lines += [f"  removed {r.name}  ({r.why})" for r in rows if r.kind == "removed"]
    lines.extend(f"note: {note}" for note in plan.notes)
    if plan.nothing_to_do:
        lines.append("nothing to do")
    return lines


def image_text(image: str | None) -> str:
    """A pipeline's image; a spec without transform.image runs pachd's default image,
    which pachhook neither builds nor sets."""
    return image or "pachd's default image (the spec names no transform.image)"


_DONE = {
    CREATE: "created",
    UPDATE: "updated",
    DRIFTED: "restored (it was changed outside pachhook)",
}


def record_lines(record: RunRecord) -> list[str]:
    lines = []
    for image in record.images:
        extra = f" ({image.error})" if image.error else ""
        lines.append(f"image {image.reference}: {image.status} in {image.seconds:.1f}s{extra}")
        if image.log_path and not image.ok:
            lines.append(f"  full build log: {image.log_path}")
    applied = [p for p in record.pipelines if p.status == "applied"]
    for p in applied:
        lines.append(
            f"pipeline {p.project}/{p.name}: {_DONE.get(p.action, p.action)} -> {image_text(p.image)}"
        )
    left = set(record.left_drifted)
    for p in record.pipelines:
        if f"{p.project}/{p.name}" in left:
            lines.append(
                f"pipeline {p.project}/{p.name}: changed outside pachhook, left as it is "
                "(--no-restore-drift); pachhook diff shows how"
            )
        elif p.status in ("deleted", "not deleted"):
            lines.append(f"pipeline {p.project}/{p.name}: {p.status} ({'; '.join(p.reasons)})")
    if record.transaction:
        lines.append(f"transaction {record.transaction}: {len(applied)} pipeline(s) applied")
    lines.extend(record.notes)
    return lines


def outcome_line(record: RunRecord) -> str:
    seconds = record.finished - record.started
    if record.error:
        return f"failed after {seconds:.1f}s: {record.error}"
    return f"done in {seconds:.1f}s"


# -- the ledger, for `pachhook status` ----------------------------------------------------

# Fields that may carry an entry's time, in order of preference; any kind of entry may
# be in the ledger, so none of them is assumed.
_TIME_FIELDS = ("started", "time", "created", "updated", "at")
_SHOWN_ELSEWHERE = frozenset(
    {"kind", "state", "trigger", "commit", "error", "finished", "id", "by_hand", *_TIME_FIELDS}
)
LIVE = ("pending", "waiting", "running")  # states a process is still working on
REDO = ("interrupted", "failed", "rejected", "timeout")  # states that want the by-hand command
PENDING_GRACE = 60.0  # seconds past its timeout a post-push deploy may take to start waiting


def _when(entry: dict[str, Any]) -> str:
    for name in _TIME_FIELDS:
        value = _number(entry.get(name))
        if value is not None:
            try:
                return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
            except (OverflowError, OSError, ValueError):
                return "(a time out of range)"
        value = entry.get(name)
        if isinstance(value, str) and value:
            return value
    return "(no time)"


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def _moment(entry: dict[str, Any]) -> float:
    for name in ("finished", *_TIME_FIELDS):
        value = _number(entry.get(name))
        if value is not None:
            return value
    return 0.0


def _short(commit: Any) -> str:
    return commit[:12] if isinstance(commit, str) and len(commit) == 40 else str(commit)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _key(entry: dict[str, Any]) -> tuple[str, str]:
    return (str(entry.get("kind")), str(entry.get("id")))


def state_of(entry: dict[str, Any], now: float | None = None) -> str:
    """An entry's state as it stands: a process that is gone without writing its last
    state was interrupted (killed outright, or the machine went down)."""
    state = str(entry.get("state"))
    if state in ("running", "waiting"):
        if entry.get("kind") == "watch":
            return state if _alive(entry) else "ended"
        return state if _alive(entry) else "interrupted"
    if state == "pending" and entry.get("kind") == "post-push":
        timeout = _number(entry.get("timeout")) or 120.0
        now = time.time() if now is None else now
        if now > _moment(entry) + timeout + PENDING_GRACE:
            return "interrupted"  # its process never started waiting, or was killed first
    return state


def latest(entries: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The latest entry with a state of every (kind, id)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        if "state" in entry:
            found[_key(entry)] = entry
    return found


def _deployed(entry: dict[str, Any]) -> bool:
    """A run that deployed its commit: no error, and no pipeline left unapplied."""
    if entry.get("kind") == "post-push":
        return entry.get("state") == "done"
    if entry.get("kind") != "run" or entry.get("error") or entry.get("state") == "running":
        return False
    if "finished" not in entry:
        return False
    return all(p.get("status") != "not applied" for p in _dicts(entry.get("pipelines")))


def superseded_by(entry: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A later run or post-push deploy that deployed the same commit (for a run of the
    working tree: the same commit's working tree), if any."""
    commit = entry.get("commit")
    if not commit or entry.get("kind") not in ("post-push", "run"):
        return None
    working_tree = entry.get("source") == "working tree"
    after = _moment(entry)
    for other in reversed(entries):
        if other is entry or _moment(other) < after or _key(other) == _key(entry):
            continue
        if working_tree and other.get("source") != "working tree":
            continue
        if other.get("commit") == commit and _deployed(other):
            return other
    return None


def pending_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries whose latest state is still being worked on by a process that lives (or a
    post-push deploy still within its time), oldest first."""
    return [e for e in latest(entries).values() if state_of(e) in LIVE]


def interrupted_entries(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs and post-push deploys whose process is gone without saying how they ended,
    and that no later deploy of the same commit has made up for; oldest first."""
    return [
        e
        for e in latest(entries).values()
        if state_of(e) == "interrupted" and superseded_by(e, entries) is None
    ]


def _alive(entry: dict[str, Any]) -> bool:
    from pachhook.run.ledger import process_alive

    return process_alive(entry.get("pid"))


def status_lines(
    entries: list[dict[str, Any]],
    pending: list[dict[str, Any]],
    everything: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Ledger entries (newest first) for people: one header line each, then details.
    `everything`: the whole ledger, to tell what later entries resolved."""
    everything = entries if everything is None else everything
    newest = latest(everything)
    lines = []
    for entry in pending:
        state = state_of(entry)
        lines.append(
            f"{state}: {entry.get('kind', 'entry')} {entry.get('id', '')}"
            + (f" (pid {entry.get('pid')})" if state != "pending" else "")
            + f" since {_when(entry)}"
            + (f" (commit {_short(entry['commit'])})" if entry.get("commit") else "")
        )
    for entry in interrupted_entries(everything):
        lines.append(
            f"interrupted: {entry.get('kind', 'entry')} {entry.get('id', '')}"
            + (f" (commit {_short(entry['commit'])})" if entry.get("commit") else "")
            + (f"; to redo it: {entry['by_hand']}" if isinstance(entry.get("by_hand"), str) else "")
        )
    if lines:
        lines.append("")
    for entry in entries:
        if entry.get("state") == "running" and newest.get(_key(entry)) is not entry:
            continue  # its final entry says how it ended
        if entry.get("kind") == "run" and "finished" in entry:
            lines.extend(_run_lines(entry))
        else:
            lines.extend(_entry_lines(entry, everything))
    return lines


def _header(entry: dict[str, Any]) -> str:
    parts = [_when(entry), str(entry.get("kind", "entry"))]
    if entry.get("trigger"):
        parts[-1] += f" ({entry['trigger']})"
    if "state" in entry and not (entry.get("kind") == "run" and "finished" in entry):
        state = state_of(entry)
        shown = f"state {state}"
        if state != entry["state"] and entry.get("pid"):
            # A watcher killed outright has simply ended; a run or a deploy was interrupted.
            shown = "state " + (str(entry["state"]) if state == "ended" else state)
            shown += f" (pid {entry.get('pid')} has ended)"
        parts.append(shown)
    if entry.get("commit"):
        parts.append(f"commit {_short(entry['commit'])}")
    return "  ".join(parts)


def _run_lines(entry: dict[str, Any]) -> list[str]:
    header = _header(entry)
    header += "  failed" if entry.get("error") else "  ok"
    started, finished = _number(entry.get("started")), _number(entry.get("finished"))
    if started is not None and finished is not None:
        header += f"  {finished - started:.1f}s"
    lines = [header]
    images = _dicts(entry.get("images"))
    if images:
        by_status: dict[str, list[str]] = {}
        for image in images:
            by_status.setdefault(str(image.get("status")), []).append(
                str(image.get("reference") or image.get("name"))
            )
        parts = [f"{status} {', '.join(refs)}" for status, refs in sorted(by_status.items())]
        lines.append(f"  images: {'; '.join(parts)}")
    pipelines = _dicts(entry.get("pipelines"))
    applied = [
        f"{p.get('project')}/{p.get('name')}" for p in pipelines if p.get("status") == "applied"
    ]
    other = len(pipelines) - len(applied)
    if applied or entry.get("transaction"):
        text = f"  pipelines: applied {len(applied)} ({', '.join(applied)})"
        if entry.get("transaction"):
            text += f" in transaction {entry['transaction']}"
        lines.append(text + (f"; {other} not changed" if other else ""))
    elif pipelines:
        lines.append(f"  pipelines: none applied ({len(pipelines)} considered)")
    if entry.get("error"):
        lines.append(f"  error: {entry['error']}")
    return lines


def _entry_lines(entry: dict[str, Any], everything: list[dict[str, Any]]) -> list[str]:
    lines = [_header(entry)]
    extra = [
        f"{k}={v}"
        for k, v in sorted(entry.items())
        if k not in _SHOWN_ELSEWHERE and isinstance(v, str | int | float | bool)
    ]
    if extra:
        lines.append(f"  {'  '.join(extra)}")
    if entry.get("error"):
        lines.append(f"  error: {entry['error']}")
    if state_of(entry) in REDO and isinstance(entry.get("by_hand"), str):
        later = superseded_by(entry, everything)
        if later is not None:
            what = f"run {later.get('id')}" if later.get("kind") == "run" else "a later deploy"
            lines.append(f"  superseded: {what} deployed this commit at {_when(later)}")
        else:
            lines.append(f"  by hand: {entry['by_hand']}")
    return lines
