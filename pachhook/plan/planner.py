"""The pure planner: workspace x change set (x remote state) -> actions with reasons.

No Docker, no network, no cluster: everything it knows comes in as arguments.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from pachhook.config import files_read
from pachhook.errors import InputError
from pachhook.pachyderm.specs import Pipeline, rewritten, spec_digest

if TYPE_CHECKING:
    from pachhook.docker.digest import ImageState
    from pachhook.plan.workspace import Workspace
    from pachhook.repo.selection import ChangeSet, Resolved

BUILD, SKIP = "build", "skip"
CREATE, UPDATE = "create", "update"


class Reason(NamedTuple):
    path: str | None
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "why": self.why}


class Remote(NamedTuple):
    """What the registry and the cluster hold, where it is known."""

    tags: frozenset[tuple[str, str]] | None = None  # (repository, tag) present in the registry
    pipelines: Mapping[tuple[str, str], str | None] | None = None  # key -> stored spec digest


class ImagePlan(NamedTuple):
    state: ImageState | None
    name: str
    action: str
    reasons: tuple[Reason, ...]
    tag: str | None

    @property
    def reference(self) -> str | None:
        return f"{self.name}:{self.tag}" if self.tag else None

    def to_json(self) -> dict[str, Any]:
        config = self.state.config if self.state else None
        return {
            "name": self.name,
            "context": config.context if config else None,
            "dockerfile": config.dockerfile_path if config else None,
            "target": config.target if config else None,
            "tag": self.tag,
            "action": self.action,
            "reasons": [r.to_json() for r in self.reasons],
        }


class PipelinePlan(NamedTuple):
    pipeline: Pipeline
    image: str | None  # the reference the deployed spec will carry
    built_image: str | None  # repository of the pachhook image it runs, if any
    action: str
    reasons: tuple[Reason, ...]
    spec_digest: str

    @property
    def key(self) -> tuple[str, str]:
        return self.pipeline.key

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.pipeline.name,
            "project": self.pipeline.project,
            "spec_file": self.pipeline.spec_file,
            "image": self.image,
            "action": self.action,
            "reasons": [r.to_json() for r in self.reasons],
        }


class Plan(NamedTuple):
    changed_files: tuple[str, ...]
    images: tuple[ImagePlan, ...]
    pipelines: tuple[PipelinePlan, ...]  # DAG order: upstream first
    removed: tuple[Pipeline, ...] = ()  # specs gone from the source: reported, never deleted
    evaluated: bool = True  # False: no changed file could matter, nothing was read
    notes: tuple[str, ...] = ()

    @property
    def builds(self) -> tuple[ImagePlan, ...]:
        return tuple(i for i in self.images if i.action == BUILD)

    @property
    def deploys(self) -> tuple[PipelinePlan, ...]:
        return tuple(p for p in self.pipelines if p.action != SKIP)

    @property
    def nothing_to_do(self) -> bool:
        return not self.builds and not self.deploys

    def to_json(self) -> dict[str, Any]:
        return {
            "changed_files": list(self.changed_files),
            "images": [i.to_json() for i in self.images],
            "pipelines": [p.to_json() for p in self.pipelines],
            "removed_pipelines": [
                {"name": p.name, "project": p.project, "spec_file": p.spec_file}
                for p in self.removed
            ],
            "evaluated": self.evaluated,
        }


class Planned(NamedTuple):
    """A plan and what it was made from."""

    plan: Plan
    workspace: Workspace | None  # None when nothing could matter and nothing was read
    resolved: Resolved
    base: dict[tuple[str, str], Pipeline] | None = None  # the changed specs at the base


# -- the plan that reads nothing -----------------------------------------------------


def unevaluated(changes: ChangeSet, images: Iterable[str]) -> Plan:
    """The plan when no changed path can matter (see relevance.py): every image (by
    name) skipped, nothing read."""
    why = (Reason(None, "no changed file is an input, a spec or the configuration"),)
    skipped = tuple(ImagePlan(None, name, SKIP, why, None) for name in images)
    return Plan(tuple(sorted(changes.paths)), skipped, (), evaluated=False)


# -- the planner -------------------------------------------------------------------


def make_plan(
    workspace: Workspace,
    changes: ChangeSet,
    base_pipelines: Mapping[tuple[str, str], Pipeline] | None = None,
    remote: Remote | None = None,
) -> Plan:
    """`base_pipelines`: the specs at the change's base, for the spec files that changed
    (None when there is no base, as in a first commit)."""
    remote = remote or Remote()
    config = workspace.config
    config_changed = bool(changes.paths & set(files_read(config)))
    everything = changes.everything or config_changed
    blanket = (
        Reason(None, changes.why or "--all: decided by state")
        if changes.everything
        else Reason(config.path or "pachhook.toml", "configuration changed")
    )

    image_plans: list[ImagePlan] = []
    hits_by_image: dict[str, tuple[Reason, ...]] = {}
    for state in workspace.images:
        hits = sorted(changes.paths & (set(state.inputs) | set(state.removed_inputs)))
        reasons = tuple(
            Reason(p, "input removed" if p in state.removed_inputs else "input changed")
            for p in hits
        )
        if everything:
            reasons = (blanket, *reasons)
        hits_by_image[state.repository] = reasons
        action = BUILD if reasons else SKIP
        if (
            action == BUILD
            and remote.tags is not None
            and (state.repository, state.tag) in remote.tags
        ):
            action = SKIP
            reasons = (*reasons, Reason(None, f"tag {state.tag} already in the registry"))
        if not reasons:
            reasons = (Reason(None, "no input changed"),)
        image_plans.append(ImagePlan(state, state.name, action, reasons, state.tag))

    by_repository = {s.repository: s for s in workspace.images}
    base = base_pipelines or {}
    pipeline_plans = []
    for pipeline in dag_order(workspace.pipelines):
        built = by_repository.get(pipeline.image_repository or "")
        image_ref = f"{built.name}:{built.tag}" if built else pipeline.image
        why: list[Reason] = []
        if everything:
            why.append(blanket)
        is_new = False
        if pipeline.spec_file in changes.paths:
            before = base.get(pipeline.key)
            if before is None:
                is_new = True
                why.append(Reason(pipeline.spec_file, "new spec"))
            elif before.canonical != pipeline.canonical:
                why.append(Reason(pipeline.spec_file, "spec changed"))
        if built is not None:
            for hit in hits_by_image[built.repository]:
                if hit.path is not None:
                    why.append(Reason(hit.path, f"image {built.name} changed"))
        # The digest of the spec as it would be applied: only worth computing where a
        # pipeline may be applied.
        desired = spec_digest(rewritten(pipeline, image_ref, {})) if why else ""
        action = _pipeline_action(pipeline, why, is_new, desired, remote)
        if action == SKIP and why and remote.pipelines is not None:
            why.append(Reason(None, "the cluster already runs this spec"))
        pipeline_plans.append(
            PipelinePlan(
                pipeline=pipeline,
                image=image_ref,
                built_image=built.name if built else None,
                action=action,
                reasons=tuple(why) or (Reason(None, "neither its spec nor its image changed"),),
                spec_digest=desired,
            )
        )

    removed = tuple(
        p for key, p in sorted(base.items()) if key not in {q.key for q in workspace.pipelines}
    )
    return Plan(
        changed_files=tuple(sorted(changes.paths)),
        images=tuple(image_plans),
        pipelines=tuple(pipeline_plans),
        removed=removed,
    )


def _pipeline_action(
    pipeline: Pipeline, reasons: list[Reason], is_new: bool, desired: str, remote: Remote
) -> str:
    if not reasons:
        return SKIP
    if remote.pipelines is None:
        return CREATE if is_new else UPDATE
    if pipeline.key not in remote.pipelines:
        return CREATE
    return SKIP if remote.pipelines[pipeline.key] == desired else UPDATE


def dag_order(pipelines: Iterable[Pipeline]) -> list[Pipeline]:
    """Upstream first; ties keep the order of the spec files. A cycle is an error."""
    items = list(pipelines)
    index = {p.key: n for n, p in enumerate(items)}
    downstream: dict[int, list[int]] = {n: [] for n in range(len(items))}
    waiting = [0] * len(items)
    for n, p in enumerate(items):
        for repo in set(p.inputs):
            upstream = index.get(repo)
            if upstream is not None and upstream != n:
                downstream[upstream].append(n)
                waiting[n] += 1
            elif upstream == n:
                raise InputError(
                    f"{p.where}: pipeline {p.name} reads its own output repo; fix its input"
                )
    ready = [n for n in range(len(items)) if waiting[n] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        n = heapq.heappop(ready)
        order.append(items[n])
        for m in downstream[n]:
            waiting[m] -= 1
            if waiting[m] == 0:
                heapq.heappush(ready, m)
    if len(order) < len(items):
        stuck = sorted(
            f"{items[n].project}/{items[n].name}" for n in range(len(items)) if waiting[n]
        )
        raise InputError(
            f"pipelines form a cycle through their input repos: {', '.join(stuck)}; "
            "break the cycle in their specs"
        )
    return order
