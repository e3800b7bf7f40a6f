"""The pure planner: workspace x change set (x remote state) -> actions with reasons.

No Docker, no network, no cluster: everything it knows comes in as arguments.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from pachhook.config import ImageConfig, ImageIndex, files_read
from pachhook.errors import InputError
from pachhook.pachyderm.specs import Pipeline, rewritten, spec_digest

if TYPE_CHECKING:
    from pachhook.docker.digest import ImageState
    from pachhook.plan.workspace import Workspace
    from pachhook.repo.selection import ChangeSet, Resolved

BUILD, SKIP = "build", "skip"
CREATE, UPDATE = "create", "update"
BROKEN = "broken"  # an image that cannot be built from the source: reported, not built
HELD = "held"  # a pipeline that would change but runs (or reads from) a broken image


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
    config: ImageConfig | None = None  # for an image with no state (one that is broken)

    @property
    def reference(self) -> str | None:
        return f"{self.name}:{self.tag}" if self.tag else None

    @property
    def label(self) -> str:
        config = self.state.config if self.state else self.config
        return config.label if config else self.name

    def to_json(self) -> dict[str, Any]:
        config = self.state.config if self.state else self.config
        return {
            "name": self.name,
            "variant": config.variant if config else None,
            "context": config.context if config else None,
            "dockerfile": config.dockerfile_path if config else None,
            "target": config.target if config else None,
            "builder": self.state.builder if self.state else None,
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
            # A spec evaluated from a template: the instance it came from.
            **({"origin": self.pipeline.origin} if self.pipeline.origin else {}),
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
        return tuple(p for p in self.pipelines if p.action not in (SKIP, HELD))

    @property
    def broken(self) -> tuple[ImagePlan, ...]:
        return tuple(i for i in self.images if i.action == BROKEN)

    @property
    def held(self) -> tuple[PipelinePlan, ...]:
        return tuple(p for p in self.pipelines if p.action == HELD)

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
            "notes": list(self.notes),
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
    hits_by_image: dict[tuple[str, str | None], tuple[Reason, ...]] = {}
    for state in workspace.images:
        hits = sorted(changes.paths & (set(state.inputs) | set(state.removed_inputs)))
        reasons = tuple(
            Reason(p, "input removed" if p in state.removed_inputs else "input changed")
            for p in hits
        )
        if everything:
            reasons = (blanket, *reasons)
        hits_by_image[state.key] = reasons
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

    broken_now: set[tuple[str, str | None]] = set()
    for unbuildable in workspace.broken:
        bad_context = unbuildable.config.context
        inside = any(
            bad_context == "."
            or p == unbuildable.config.dockerfile_path
            or p.startswith(bad_context + "/")
            for p in changes.paths
        )
        # Reported as broken where the run would build it; else it waits, said so.
        action = BROKEN if everything or inside else SKIP
        if action == BROKEN:
            broken_now.add(unbuildable.config.key)
        said = (
            unbuildable.error
            if action == BROKEN
            else f"cannot be built from this source: {unbuildable.error}"
        )
        image_plans.append(
            ImagePlan(
                None,
                unbuildable.config.name,
                action,
                (Reason(None, said),),
                None,
                unbuildable.config,
            )
        )

    index = ImageIndex([s.config for s in workspace.images])
    broken_configs = [b.config for b in workspace.broken]
    broken_index = ImageIndex(broken_configs)
    base = base_pipelines or {}
    pipeline_plans = []
    held_outputs: set[tuple[str, str]] = set()
    for pipeline in dag_order(workspace.pipelines):
        found = index.match(pipeline.image) if pipeline.image else None
        built = workspace.images[found] if found is not None else None
        image_ref = f"{built.name}:{built.tag}" if built else pipeline.image
        why: list[Reason] = []
        if everything:
            why.append(blanket)
        is_new = False
        # A spec file, or a template and the files its evaluation read.
        touched = [path for path in pipeline.files if path in changes.paths]
        if touched:
            before = base.get(pipeline.key)
            if before is None:
                is_new = True
                why.append(Reason(touched[0], "new spec"))
            elif before.canonical != pipeline.canonical:
                what = "evaluated spec changed" if pipeline.origin else "spec changed"
                why.append(Reason(touched[0], what))
        if built is not None:
            for hit in hits_by_image[built.key]:
                if hit.path is not None:
                    why.append(Reason(hit.path, f"image {built.config.label} changed"))
        bad = broken_index.match(pipeline.image) if built is None and pipeline.image else None
        blocker = _blocker(pipeline, bad, broken_configs, broken_now, held_outputs)
        if why and blocker:
            held_outputs.add(pipeline.key)
            pipeline_plans.append(
                PipelinePlan(pipeline, image_ref, None, HELD, (*why, Reason(None, blocker)), "")
            )
            continue
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

    present = {q.key for q in workspace.pipelines} | {g[0].key for g in workspace.duplicates}
    removed = tuple(p for key, p in sorted(base.items()) if key not in present)
    return Plan(
        changed_files=tuple(sorted(changes.paths)),
        images=tuple(image_plans),
        pipelines=tuple(pipeline_plans),
        removed=removed,
        notes=_notes(workspace),
    )


def _blocker(
    pipeline: Pipeline,
    bad: int | None,
    broken: list[ImageConfig],
    broken_now: set[tuple[str, str | None]],
    held_outputs: set[tuple[str, str]],
) -> str | None:
    """Why a pipeline must wait: it runs an image that cannot be built, or reads the
    output of a pipeline that waits (its input repo may not exist yet)."""
    if bad is not None and broken[bad].key in broken_now:
        return f"held: its image {broken[bad].label} cannot be built (see above)"
    upstream = sorted(f"{p}/{n}" for p, n in set(pipeline.inputs) & held_outputs)
    if upstream:
        return f"held: it reads {', '.join(upstream)}, which is held"
    return None


def _notes(workspace: Workspace) -> tuple[str, ...]:
    """What the plan leaves out or cannot see, said once each."""
    from pachhook.plan.workspace import duplicate_line

    notes = [duplicate_line(group) for group in workspace.duplicates]
    for state in workspace.images:
        for url in state.urls:
            if state.config.add_urls == "check":
                why = 'its tag follows what the server says of it (add_urls = "check")'
            else:
                why = (
                    "downloaded at build time; the tag does not follow its content (set "
                    'add_urls = "check" on the image to follow it, or ADD a file of the repository)'
                )
            notes.append(
                f"image {state.config.label}: ADD {url} ({state.config.dockerfile_path}): {why}"
            )
    return tuple(notes)


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
