"""The pure planner: workspace x change set (x remote state) -> actions with reasons.

No Docker, no network, no cluster: everything it knows comes in as arguments.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from pachhook.config import ImageConfig, ImageIndex, files_read
from pachhook.errors import InputError
from pachhook.pachyderm.specs import Pipeline, applied_digest

if TYPE_CHECKING:
    from pachhook.docker.digest import ImageState
    from pachhook.pachyderm.stored import Deployed
    from pachhook.plan.workspace import Workspace
    from pachhook.repo.selection import ChangeSet, Resolved

BUILD, SKIP, EXISTS = "build", "skip", "exists"
CREATE, UPDATE, UNCHANGED, DRIFTED = "create", "update", "unchanged", "drifted"
BROKEN = "broken"  # an image that cannot be built from the source: reported, not built
HELD = "held"  # a pipeline that would change but runs (or reads from) a broken image
APPLIED = (CREATE, UPDATE, DRIFTED)  # the pipeline actions a run applies
# How the registry and the cluster were known when the plan was made.
READ, OFFLINE, UNREACHABLE = "read", "offline", "unreachable"


class Reason(NamedTuple):
    path: str | None
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "why": self.why}


class Remote(NamedTuple):
    """What the registry and the cluster hold, where it is known."""

    # (repository, tag) -> whether the registry has the tag with our content; a tag not
    # asked about is missing. None: the registry was not read.
    tags: Mapping[tuple[str, str], bool] | None = None
    # (repository, tag) -> why the registry's tag cannot be used (it holds other content)
    refused: Mapping[tuple[str, str], str] = {}
    pipelines: Mapping[tuple[str, str], Deployed] | None = None  # None: the cluster was not read
    registry: str = OFFLINE
    cluster: str = OFFLINE
    notes: tuple[str, ...] = ()  # why a side could not be read


class Removed(NamedTuple):
    """A pipeline whose spec is gone from the source."""

    project: str
    name: str
    spec_file: str | None
    on_cluster: bool | None = None  # None: the cluster was not read
    managed: bool = False  # pachhook applied it from this repository: `run --prune` deletes it
    inputs: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.project, self.name)

    @property
    def prunable(self) -> bool:
        return bool(self.on_cluster) and self.managed

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "project": self.project,
            "spec_file": self.spec_file,
            "on_cluster": self.on_cluster,
            "managed": self.managed,
        }


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
    drift: tuple[str, ...] = ()  # with DRIFTED: the fields changed outside pachhook
    deployed: Deployed | None = None  # what the cluster holds, when it was read

    @property
    def key(self) -> tuple[str, str]:
        return self.pipeline.key

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.pipeline.name,
            "project": self.pipeline.project,
            "spec_file": self.pipeline.spec_file,
            "image": self.image,
            "action": self.action,
            "reasons": [r.to_json() for r in self.reasons],
            # A spec evaluated from a template: the instance it came from.
            **({"origin": self.pipeline.origin} if self.pipeline.origin else {}),
        }
        if self.action == DRIFTED:
            out["drift"] = list(self.drift)
        return out


class Plan(NamedTuple):
    changed_files: tuple[str, ...]
    images: tuple[ImagePlan, ...]
    pipelines: tuple[PipelinePlan, ...]  # DAG order: upstream first
    removed: tuple[Removed, ...] = ()  # specs gone from the source; downstream first
    evaluated: bool = True  # False: no changed file could matter, nothing was read
    notes: tuple[str, ...] = ()  # what the plan leaves out or cannot see in the source
    registry: str = OFFLINE  # READ, OFFLINE or UNREACHABLE
    cluster: str = OFFLINE
    unread: tuple[str, ...] = ()  # why the registry or the cluster could not be read

    @property
    def builds(self) -> tuple[ImagePlan, ...]:
        return tuple(i for i in self.images if i.action == BUILD)

    @property
    def deploys(self) -> tuple[PipelinePlan, ...]:
        return tuple(p for p in self.pipelines if p.action in APPLIED)

    @property
    def broken(self) -> tuple[ImagePlan, ...]:
        return tuple(i for i in self.images if i.action == BROKEN)

    @property
    def held(self) -> tuple[PipelinePlan, ...]:
        return tuple(p for p in self.pipelines if p.action == HELD)

    @property
    def drifted(self) -> tuple[PipelinePlan, ...]:
        return tuple(p for p in self.pipelines if p.action == DRIFTED)

    @property
    def prunable(self) -> tuple[Removed, ...]:
        """What `run --prune` deletes, downstream first."""
        return tuple(r for r in self.removed if r.prunable)

    @property
    def nothing_to_do(self) -> bool:
        return not self.builds and not self.deploys

    @property
    def state(self) -> dict[str, str]:
        return {"registry": self.registry, "cluster": self.cluster}

    def to_json(self) -> dict[str, Any]:
        return {
            "changed_files": list(self.changed_files),
            "state": self.state,
            "images": [i.to_json() for i in self.images],
            "pipelines": [p.to_json() for p in self.pipelines],
            "removed_pipelines": [r.to_json() for r in self.removed],
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
    (None when there is no base, as in a first commit).

    `remote`: what the registry and the cluster hold, where they were read. The actions
    then say what a run will do: a tag already in the registry `exists`, a pipeline the
    cluster already runs is `unchanged`, one changed outside pachhook is `drifted`.
    Without it they say what a run does if the registry and the cluster differ."""
    remote = remote or Remote()
    config = workspace.config
    config_changed = bool(changes.paths & set(files_read(config)))
    everything = changes.everything or config_changed
    blanket = (
        Reason(None, changes.why or "--all: decided by state")
        if changes.everything
        else Reason(config.path or "pachhook.toml", "configuration changed")
    )

    hits_by_image: dict[tuple[str, str | None], tuple[Reason, ...]] = {}
    for state in workspace.images:
        hits = sorted(changes.paths & (set(state.inputs) | set(state.removed_inputs)))
        reasons = tuple(
            Reason(p, "input removed" if p in state.removed_inputs else "input changed")
            for p in hits
        )
        hits_by_image[state.key] = (blanket, *reasons) if everything else reasons

    broken_plans, broken_now = _broken(workspace, changes, everything)
    index = ImageIndex([s.config for s in workspace.images])
    broken_configs = [b.config for b in workspace.broken]
    broken_index = ImageIndex(broken_configs)
    base = base_pipelines or {}
    pipeline_plans = []
    held_outputs: set[tuple[str, str]] = set()
    run_by: dict[tuple[str, str | None], str] = {}  # image -> a pipeline to apply that runs it
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
        desired = applied_digest(pipeline, image_ref) if why else ""
        deployed = remote.pipelines.get(pipeline.key) if remote.pipelines is not None else None
        action = _pipeline_action(why, is_new, desired, remote, deployed)
        said = _cluster_says(action, deployed, remote)
        if said:
            why.append(said)
        if action in APPLIED and built is not None:
            run_by.setdefault(built.key, f"{pipeline.project}/{pipeline.name}")
        pipeline_plans.append(
            PipelinePlan(
                pipeline=pipeline,
                image=image_ref,
                built_image=built.name if built else None,
                action=action,
                reasons=tuple(why) or (Reason(None, "neither its spec nor its image changed"),),
                spec_digest=desired,
                drift=(deployed.drift or ()) if deployed and action == DRIFTED else (),
                deployed=deployed,
            )
        )

    image_plans = tuple(
        _image_plan(state, hits_by_image[state.key], run_by.get(state.key), remote)
        for state in workspace.images
    )
    return Plan(
        changed_files=tuple(sorted(changes.paths)),
        images=image_plans + broken_plans,
        pipelines=tuple(pipeline_plans),
        removed=_removed(workspace, base, remote),
        registry=remote.registry,
        cluster=remote.cluster,
        notes=_notes(workspace),
        unread=remote.notes,
    )


def _broken(
    workspace: Workspace, changes: ChangeSet, everything: bool
) -> tuple[tuple[ImagePlan, ...], set[tuple[str, str | None]]]:
    """The images that cannot be built from the source, and those of them the run would
    build (the others wait, and are said to)."""
    plans = []
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
        plans.append(
            ImagePlan(
                None,
                unbuildable.config.name,
                action,
                (Reason(None, said),),
                None,
                unbuildable.config,
            )
        )
    return tuple(plans), broken_now


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


def _image_plan(
    state: ImageState, reasons: tuple[Reason, ...], run_by: str | None, remote: Remote
) -> ImagePlan:
    """`reasons`: why it may need building; `run_by`: a pipeline to apply that runs it.
    The registry, where read, says whether it does."""
    key = (state.repository, state.tag)
    read = remote.tags is not None
    present = remote.tags.get(key) if remote.tags is not None else None
    refused = remote.refused.get(key)
    if not reasons and (run_by is None or not read):
        return ImagePlan(state, state.name, SKIP, (Reason(None, "no input changed"),), state.tag)
    if not reasons:
        reasons = (Reason(None, f"no input changed; pipeline {run_by} runs it"),)
    if refused:
        return ImagePlan(state, state.name, BUILD, (*reasons, Reason(None, refused)), state.tag)
    if present:
        found = Reason(None, f"tag {state.tag} already in the registry")
        return ImagePlan(state, state.name, EXISTS, (*reasons, found), state.tag)
    if read:
        reasons = (*reasons, Reason(None, f"tag {state.tag} not in the registry"))
    return ImagePlan(state, state.name, BUILD, reasons, state.tag)


def _pipeline_action(
    reasons: list[Reason], is_new: bool, desired: str, remote: Remote, deployed: Deployed | None
) -> str:
    if not reasons:
        return SKIP
    if remote.pipelines is None:
        return CREATE if is_new else UPDATE
    if deployed is None:
        return CREATE
    if deployed.drift:
        return DRIFTED
    return UNCHANGED if deployed.digest == desired else UPDATE


def _cluster_says(action: str, deployed: Deployed | None, remote: Remote) -> Reason | None:
    """What the cluster told, as a reason; None where it was not asked."""
    if remote.pipelines is None or action == SKIP:
        return None
    if deployed is None:
        return Reason(None, "not on the cluster")
    version = deployed.version
    if action == DRIFTED:
        fields = ", ".join(deployed.drift or ())
        return Reason(
            None,
            f"changed outside pachhook since pachhook applied version {deployed.since}: {fields}",
        )
    if action == UNCHANGED:
        return Reason(None, f"the cluster already runs this spec (version {version})")
    if deployed.digest is None:
        return Reason(None, f"the cluster's version {version} was not applied by pachhook")
    return Reason(None, f"the cluster runs another spec (version {version})")


def _removed(
    workspace: Workspace, base: Mapping[tuple[str, str], Pipeline], remote: Remote
) -> tuple[Removed, ...]:
    """Specs gone from the source: those of the change's base, and (with the cluster read)
    every pipeline pachhook applied from this repository whose spec is no longer here;
    downstream first, the order a prune deletes them in."""
    # A pipeline defined twice is still in the repository (it waits for the user's choice).
    keys = {p.key for p in workspace.pipelines} | {g[0].key for g in workspace.duplicates}
    found = {
        key: Removed(p.project, p.name, p.spec_file, inputs=p.inputs)
        for key, p in sorted(base.items())
        if key not in keys
    }
    on_cluster = remote.pipelines
    if on_cluster is not None:
        for key, deployed in sorted(on_cluster.items()):
            if key not in keys and deployed.managed_here:
                found.setdefault(key, Removed(*key, deployed.spec_file, inputs=deployed.inputs))
        for key, removed in found.items():
            held = on_cluster.get(key)
            found[key] = removed._replace(
                on_cluster=held is not None,
                managed=bool(held and held.managed_here),
                inputs=held.inputs if held and held.inputs else removed.inputs,
            )
    return _downstream_first(list(found.values()))


def _downstream_first(items: list[Removed]) -> tuple[Removed, ...]:
    """A pipeline before the pipelines whose output repos it reads; ties by name."""
    keys = {r.key for r in items}
    readers: dict[tuple[str, str], set[tuple[str, str]]] = {r.key: set() for r in items}
    for r in items:
        for repo in r.inputs:
            if repo in keys and repo != r.key:
                readers[repo].add(r.key)
    by_key = {r.key: r for r in items}
    order: list[Removed] = []
    done: set[tuple[str, str]] = set()
    while len(order) < len(items):
        ready = sorted(k for k in by_key if k not in done and readers[k] <= done)
        # A cycle cannot be stored by pachd; should one appear, take the rest by name.
        for key in ready or sorted(k for k in by_key if k not in done):
            order.append(by_key[key])
            done.add(key)
    return tuple(order)


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
