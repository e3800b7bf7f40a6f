"""Turn plans and results into lines for people, and into JSON."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from pachhook.plan import SKIP, Plan, Reason

if TYPE_CHECKING:
    from pachhook.run import RunRecord


def reasons_text(reasons: Iterable[Reason], limit: int = 3) -> str:
    items = list(reasons)
    parts = [f"{r.path}: {r.why}" if r.path else r.why for r in items[:limit]]
    if len(items) > limit:
        parts.append(f"+{len(items) - limit} more")
    return "; ".join(parts)


def plan_lines(plan: Plan, *, verbose: bool = False) -> list[str]:
    lines = [f"changed files: {len(plan.changed_files)}"]
    if not plan.evaluated:
        lines.append(
            "nothing to do: no changed file is an image input, a pipeline spec or the configuration"
        )
        return lines
    shown_images = [i for i in plan.images if verbose or i.action != SKIP]
    lines.append(
        f"images: {len(plan.builds)} to build, {len(plan.images) - len(plan.builds)} unchanged"
    )
    for image in shown_images:
        ref = image.reference or image.name
        lines.append(f"  {image.action:<7}{ref}  ({reasons_text(image.reasons)})")
    lines.append(
        f"pipelines (upstream first): {len(plan.deploys)} to apply, "
        f"{len(plan.pipelines) - len(plan.deploys)} unchanged"
    )
    for pipeline in plan.pipelines:
        if not verbose and pipeline.action == SKIP:
            continue
        p = pipeline.pipeline
        lines.append(
            f"  {pipeline.action:<7}{p.project}/{p.name}  {p.where}  -> {pipeline.image}  "
            f"({reasons_text(pipeline.reasons)})"
        )
    for p in plan.removed:
        lines.append(
            f"  removed {p.project}/{p.name}  (its spec is gone from {p.spec_file}; "
            "pachhook never deletes a pipeline: run `pachctl delete pipeline` if you mean it)"
        )
    if plan.nothing_to_do:
        lines.append("nothing to do")
    return lines


def record_lines(record: RunRecord) -> list[str]:
    lines = []
    for image in record.images:
        extra = f" ({image.error})" if image.error else ""
        lines.append(f"image {image.reference}: {image.status} in {image.seconds:.1f}s{extra}")
        if image.log_path and not image.ok:
            lines.append(f"  full build log: {image.log_path}")
    applied = [p for p in record.pipelines if p.status == "applied"]
    for p in applied:
        lines.append(f"pipeline {p.project}/{p.name}: {p.action}d -> {p.image}")
    if record.transaction:
        lines.append(f"transaction {record.transaction}: {len(applied)} pipeline(s) applied")
    lines.extend(record.notes)
    seconds = record.finished - record.started
    if record.error:
        lines.append(f"failed after {seconds:.1f}s: {record.error}")
    else:
        lines.append(f"done in {seconds:.1f}s")
    return lines
