"""A plan, or a run, as Markdown: the job summary in CI and `pachhook plan --format markdown`.

It reads the JSON forms (`Plan.to_json()`, `RunRecord.to_json()`), not the classes: an
action or status it has no words for is shown as it is spelled there, so a new one reads
right without a change here. Nothing in those forms is a secret, and neither is anything
added here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

MAX_ROWS = 200  # per table; GitHub keeps at most 1 MiB of summary per step
MAX_REASONS = 3

# Words for what happened; anything else is shown as spelled.
IMAGE_WORDS = {
    "build": "to build",
    "skip": "unchanged",
    "built": "built",
    "exists": "found in the registry",
    "failed": "failed",
    "planned": "planned",
}
PIPELINE_WORDS = {"skip": "unchanged"}
PAST = {"create": "created", "update": "updated"}
# What a run's result says about the registry or the cluster, beside the plan's reasons.
IMAGE_STATE = {
    "built": "no image with these inputs in the registry",
    "exists": "built before, from the same inputs",
}
PIPELINE_STATE = {"create": "not on the cluster", "update": "the cluster runs another spec"}

Reason = tuple[str | None, str]  # (path, why)


class Row(NamedTuple):
    name: str
    word: str  # what happens to it, counted in the headline
    detail: str  # what follows the word: a time, an error
    reasons: tuple[Reason, ...]
    state: str | None = None  # what the registry or the cluster said, for a run


def plan_markdown(plan: Mapping[str, Any], *, title: str = "pachhook plan") -> str:
    """What a run would do, and why."""
    images = [_plan_image(i) for i in plan.get("images", [])]
    pipelines = [_plan_pipeline(p) for p in plan.get("pipelines", [])]
    return _document(
        f"{title}: {_headline(images, pipelines, plan)}", plan, None, images, pipelines
    )


def run_markdown(plan: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """What a run did, and why; the plan gives the reasons of the images."""
    why = {i.get("name"): _reasons_of(i.get("reasons", [])) for i in plan.get("images", [])}
    ran = {i.get("name") for i in run.get("images", [])}
    images = [_run_image(i, why.get(i.get("name"), ())) for i in run.get("images", [])]
    # Images the run had no need to look at: the plan says why.
    images += [_plan_image(i) for i in plan.get("images", []) if i.get("name") not in ran]
    pipelines = [_run_pipeline(p) for p in run.get("pipelines", [])]
    failed = bool(run.get("error"))
    headline = _headline(images, pipelines, plan)
    did = any(i.get("status") == "built" for i in run.get("images", [])) or any(
        p.get("status") == "applied" for p in run.get("pipelines", [])
    )
    if not failed and not did and plan.get("evaluated") is not False:
        headline = f"nothing to do ({headline})"
    title = f"pachhook run{' failed' if failed else ''}: {headline}"
    return _document(title, plan, run, images, pipelines)


def error_markdown(command: str, message: str) -> str:
    """A command that stopped before it had a plan: bad configuration, a bad spec ..."""
    return f"### pachhook {command} failed\n\n{_cell(message)}\n"


def _document(
    title: str,
    plan: Mapping[str, Any],
    run: Mapping[str, Any] | None,
    images: list[Row],
    pipelines: list[Row],
) -> str:
    # A reason every row gives (CI's "decided by state", a changed config) is said once.
    rows = images + pipelines
    shared = (
        [r for r in rows[0].reasons if r[0] is None and all(r in x.reasons for x in rows)]
        if len(rows) > 1
        else []
    )
    lines = [f"### {title}", ""]
    lines += [" · ".join(_facts(plan, run) + [_cell(why) for _, why in shared]), ""]
    if run is not None and run.get("error"):
        lines += [f"**Error:** {_cell(str(run['error']))}", ""]
    for heading, table in (("image", images), ("pipeline (upstream first)", pipelines)):
        if table:
            lines += [f"| {heading} | | why |", "| --- | --- | --- |"]
            lines += [_line(row, shared) for row in table[:MAX_ROWS]]
            if len(table) > MAX_ROWS:
                lines.append(f"| … and {len(table) - MAX_ROWS} more | | |")
            lines.append("")
    if run is not None:
        lines += [f"- {_cell(str(note))}" for note in run.get("notes", [])]
    for p in plan.get("removed_pipelines", []):
        name = f"{p.get('project')}/{p.get('name')}"
        lines.append(
            f"- {_code(name)}: its spec is gone from {_code(p.get('spec_file'))}; "
            "pachhook never deletes a pipeline"
        )
    return "\n".join(lines).rstrip() + "\n"


def _plan_image(image: Mapping[str, Any]) -> Row:
    name, tag = image.get("name", ""), image.get("tag")
    word = _word(IMAGE_WORDS, image.get("action"))
    return Row(f"{name}:{tag}" if tag else name, word, "", _reasons_of(image.get("reasons", [])))


def _run_image(image: Mapping[str, Any], reasons: tuple[Reason, ...]) -> Row:
    status = str(image.get("status"))
    seconds = image.get("seconds")
    timed = status == "built" and isinstance(seconds, int | float)
    detail = f" in {seconds:.1f} s" if timed else ""
    if image.get("error"):
        detail += f": {image['error']}"
    name = image.get("reference") or image.get("name")
    return Row(str(name), _word(IMAGE_WORDS, status), detail, reasons, IMAGE_STATE.get(status))


def _plan_pipeline(pipeline: Mapping[str, Any]) -> Row:
    name = f"{pipeline.get('project')}/{pipeline.get('name')}"
    action = pipeline.get("action")
    word = f"to {action}" if action in PAST else _word(PIPELINE_WORDS, action)
    return Row(name, word, "", _reasons_of(pipeline.get("reasons", [])))


def _run_pipeline(pipeline: Mapping[str, Any]) -> Row:
    name = f"{pipeline.get('project')}/{pipeline.get('name')}"
    action, status = str(pipeline.get("action")), pipeline.get("status")
    state = None
    if status == "applied":
        word = PAST.get(action, f"{action} applied")
        state = PIPELINE_STATE.get(action)
    elif status == "planned":
        word = f"to {action}" if action in PAST else _word(PIPELINE_WORDS, action)
    elif status == "not applied" and action in PAST:
        word = f"not {PAST[action]}"
    else:
        word = str(status)
    return Row(name, word, "", _reasons_of(pipeline.get("reasons", [])), state)


def _headline(images: list[Row], pipelines: list[Row], plan: Mapping[str, Any]) -> str:
    if plan.get("evaluated") is False:
        return "nothing to do (no changed file is an image input, a pipeline spec or the configuration)"
    parts = []
    for what, rows in (("image", images), ("pipeline", pipelines)):
        counts = Counter(row.word for row in rows)
        if counts:
            parts.append(f"{what}s " + ", ".join(f"{n} {word}" for word, n in counts.items()))
    return "; ".join(parts) or "nothing to do (no images, no pipelines)"


def _facts(plan: Mapping[str, Any], run: Mapping[str, Any] | None) -> list[str]:
    facts = []
    if run is not None:
        if run.get("commit"):
            facts.append(f"commit `{str(run['commit'])[:12]}`")
        started, finished = run.get("started"), run.get("finished")
        if isinstance(started, int | float) and isinstance(finished, int | float):
            facts.append(f"{finished - started:.1f} s")
        if run.get("transaction"):
            facts.append(f"transaction `{run['transaction']}`")
    changed = len(plan.get("changed_files", []))
    facts.append(f"{changed} changed file{'' if changed == 1 else 's'}")
    return facts


def _line(row: Row, shared: list[Reason]) -> str:
    reasons = [r for r in row.reasons if r not in shared]
    parts = [f"{_code(path)}: {_cell(why)}" if path else _cell(why) for path, why in reasons]
    if row.state:
        parts.insert(0, _cell(row.state))
    if len(parts) > MAX_REASONS:
        parts = [*parts[:MAX_REASONS], f"and {len(parts) - MAX_REASONS} more"]
    return f"| {_code(row.name)} | {_cell(row.word + row.detail)} | {'; '.join(parts)} |"


def _reasons_of(reasons: Iterable[Any]) -> tuple[Reason, ...]:
    """The plan's {"path", "why"} objects, or a run record's "path: why" texts."""
    out: list[Reason] = []
    for reason in reasons:
        if isinstance(reason, Mapping):
            path = reason.get("path")
            out.append((str(path) if path else None, str(reason.get("why", ""))))
        else:
            out.append((None, str(reason)))
    return tuple(out)


def _word(words: Mapping[str, str], value: Any) -> str:
    return words.get(str(value), str(value))


def _code(text: Any) -> str:
    """Inline code; a backtick in a file name cannot close it."""
    return "`" + str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def _cell(text: str) -> str:
    """Text that stays in its table cell and on its line."""
    return " ".join(str(text).replace("|", "\\|").split())
