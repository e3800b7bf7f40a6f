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
PIPELINE_WORDS = {"skip": "unchanged", "not applied": "not applied"}
PAST = {"create": "created", "update": "updated"}


def plan_markdown(plan: Mapping[str, Any], *, title: str = "pachhook plan") -> str:
    """What a run would do, and why."""
    images = [_plan_image(i) for i in plan.get("images", [])]
    pipelines = [_plan_pipeline(p) for p in plan.get("pipelines", [])]
    lines = [f"### {title}: {_headline(images, pipelines, plan)}", ""]
    lines += _facts(plan, None)
    lines += _tables(images, pipelines)
    lines += _removed(plan)
    return "\n".join(lines).rstrip() + "\n"


def run_markdown(plan: Mapping[str, Any], run: Mapping[str, Any]) -> str:
    """What a run did, and why; the plan gives the reasons of the images."""
    why = {i.get("name"): i.get("reasons", []) for i in plan.get("images", [])}
    ran = {i.get("name") for i in run.get("images", [])}
    images = [
        Row(
            _code(i.get("reference") or i.get("name")),
            _word(IMAGE_WORDS, i.get("status")),
            _image_detail(i),
            _reasons(why.get(i.get("name"), [])),
        )
        for i in run.get("images", [])
    ]
    # Images the run had no need to look at: the plan says why.
    images += [_plan_image(i) for i in plan.get("images", []) if i.get("name") not in ran]
    pipelines = [_run_pipeline(p) for p in run.get("pipelines", [])]
    failed = bool(run.get("error"))
    title = "pachhook run failed" if failed else "pachhook run"
    headline = _headline(images, pipelines, plan)
    did = any(i.get("status") == "built" for i in run.get("images", [])) or any(
        p.get("status") == "applied" for p in run.get("pipelines", [])
    )
    if not failed and not did and plan.get("evaluated") is not False:
        headline = f"nothing to do ({headline})"
    lines = [f"### {title}: {headline}", ""]
    lines += _facts(plan, run)
    if failed:
        lines += [f"**Error:** {_cell(str(run['error']))}", ""]
    lines += _tables(images, pipelines)
    lines += [f"- {_cell(str(note))}" for note in run.get("notes", [])]
    lines += _removed(plan)
    return "\n".join(lines).rstrip() + "\n"


def error_markdown(command: str, message: str) -> str:
    """A command that stopped before it had a plan: bad configuration, a bad spec ..."""
    return f"### pachhook {command} failed\n\n{_cell(message)}\n"


class Row(NamedTuple):
    name: str  # Markdown already
    word: str  # what happens to it, counted in the headline
    detail: str  # what follows the word: a time, an error
    why: str  # Markdown already

    def line(self) -> str:
        return f"| {self.name} | {_cell(self.word + self.detail)} | {self.why} |"


def _plan_image(image: Mapping[str, Any]) -> Row:
    name = image.get("name", "")
    tag = image.get("tag")
    ref = f"{name}:{tag}" if tag else name
    word = _word(IMAGE_WORDS, image.get("action"))
    return Row(_code(ref), word, "", _reasons(image.get("reasons", [])))


def _image_detail(image: Mapping[str, Any]) -> str:
    seconds = image.get("seconds")
    detail = ""
    if image.get("status") == "built" and isinstance(seconds, int | float):
        detail = f" in {seconds:.1f} s"
    if image.get("error"):
        detail += f": {image['error']}"
    return detail


def _plan_pipeline(pipeline: Mapping[str, Any]) -> Row:
    name = f"{pipeline.get('project')}/{pipeline.get('name')}"
    action = pipeline.get("action")
    word = f"to {action}" if action in PAST else _word(PIPELINE_WORDS, action)
    return Row(_code(name), word, "", _reasons(pipeline.get("reasons", [])))


def _run_pipeline(pipeline: Mapping[str, Any]) -> Row:
    name = f"{pipeline.get('project')}/{pipeline.get('name')}"
    action, status = pipeline.get("action"), pipeline.get("status")
    if status == "applied":
        word = PAST.get(str(action), f"{action} applied")
    elif status == "planned":
        word = f"to {action}" if action in PAST else _word(PIPELINE_WORDS, action)
    elif status == "not applied" and action in PAST:
        word = f"not {PAST[str(action)]}"
    else:
        word = _word(PIPELINE_WORDS, status)
    return Row(_code(name), word, "", _reasons(pipeline.get("reasons", [])))


def _headline(images: list[Row], pipelines: list[Row], plan: Mapping[str, Any]) -> str:
    if plan.get("evaluated") is False:
        return "nothing to do (no changed file is an image input, a pipeline spec or the configuration)"
    parts = []
    for what, rows in (("image", images), ("pipeline", pipelines)):
        counts = Counter(row.word for row in rows)
        if counts:
            listed = ", ".join(f"{n} {word}" for word, n in counts.items())
            parts.append(f"{what}s {listed}")
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
    changed = plan.get("changed_files", [])
    facts.append(f"{len(changed)} changed file{'' if len(changed) == 1 else 's'}")
    return [" · ".join(facts), ""]


def _tables(images: list[Row], pipelines: list[Row]) -> list[str]:
    lines: list[str] = []
    if images:
        lines += ["| image | | why |", "| --- | --- | --- |"]
        lines += _rows(images)
        lines.append("")
    if pipelines:
        lines += ["| pipeline (upstream first) | | why |", "| --- | --- | --- |"]
        lines += _rows(pipelines)
        lines.append("")
    return lines


def _rows(rows: list[Row]) -> list[str]:
    out = [row.line() for row in rows[:MAX_ROWS]]
    if len(rows) > MAX_ROWS:
        out.append(f"| … and {len(rows) - MAX_ROWS} more | | |")
    return out


def _removed(plan: Mapping[str, Any]) -> list[str]:
    removed = plan.get("removed_pipelines", [])
    return [
        f"- {_code(str(p.get('project')) + '/' + str(p.get('name')))}: its spec is gone from "
        f"{_code(p.get('spec_file'))}; pachhook never deletes a pipeline"
        for p in removed
    ]


def _reasons(reasons: Iterable[Any]) -> str:
    items = list(reasons)
    parts = []
    for reason in items[:MAX_REASONS]:
        if isinstance(reason, Mapping):
            path, why = reason.get("path"), reason.get("why", "")
        else:  # "path: why" as a run record keeps them
            path, why = None, str(reason)
        parts.append(f"{_code(path)}: {_cell(str(why))}" if path else _cell(str(why)))
    if len(items) > MAX_REASONS:
        parts.append(f"and {len(items) - MAX_REASONS} more")
    return "; ".join(parts)


def _word(words: Mapping[str, str], value: Any) -> str:
    return words.get(str(value), str(value))


def _code(text: Any) -> str:
    """Inline code; a backtick in a file name cannot close it."""
    return "`" + str(text).replace("`", "'").replace("|", "\\|").replace("\n", " ") + "`"


def _cell(text: str) -> str:
    """Text that stays in its table cell and on its line."""
    return " ".join(text.replace("|", "\\|").split())
