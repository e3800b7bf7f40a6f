"""Execute a plan: reconcile with the registry, build -> push -> verify, then deploy.

The executor decides order and the all-or-nothing rules; the adapters
(`build.DockerImages`, `deploy.PachydermCluster`) do the talking. It returns a
record; reporting and the ledger read the record.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pachhook.docker.digest import ImageState
from pachhook.docker.engine import ImageResult
from pachhook.errors import PachhookError
from pachhook.pachyderm.specs import (
    ANNOTATION_COMMIT,
    ANNOTATION_DIGEST,
    ANNOTATION_REPOSITORY,
    ANNOTATION_SPEC_FILE,
    ANNOTATION_VERSION,
    Pipeline,
    rewritten,
)
from pachhook.pachyderm.stored import Deployed, Stored
from pachhook.plan.planner import (
    BUILD,
    DRIFTED,
    EXISTS,
    HELD,
    READ,
    SKIP,
    ImagePlan,
    PipelinePlan,
    Plan,
    Planned,
    Remote,
    Removed,
    make_plan,
)
from pachhook.plan.state import cluster_state
from pachhook.repo.source import Source

PRUNE = "prune"  # the action of a pipeline deleted because its spec is gone
LEFT_DRIFTED = "left as it is (--no-restore-drift)"  # the reason a drifted one was not applied


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    push: bool = True
    deploy: bool = True
    reprocess: bool | None = None  # None: the config decides
    jobs: int | None = None  # None: the config decides
    held_because: str = "--no-deploy"  # why pipelines wait, when deploy is False
    prune: bool = False  # delete the pipelines pachhook applied from here whose spec is gone
    restore_drift: bool = True  # False: a pipeline changed outside pachhook is left as it is


@dataclass(frozen=True)
class PipelineResult:
    project: str
    name: str
    action: str  # create | update | drifted | unchanged | skip | prune
    status: str  # applied | unchanged | not applied | planned | deleted | not deleted
    image: str | None
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunRecord:
    id: str
    started: float
    finished: float
    trigger: str
    source: str
    commit: str | None
    changed_files: int
    images: tuple[ImageResult, ...]
    pipelines: tuple[PipelineResult, ...]
    transaction: str | None = None
    error: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    @property
    def left_drifted(self) -> list[str]:
        """Pipelines changed outside pachhook that this run left as they are."""
        return [
            f"{p.project}/{p.name}"
            for p in self.pipelines
            if p.action == DRIFTED and LEFT_DRIFTED in p.reasons and self.ok
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started": self.started,
            "finished": self.finished,
            "trigger": self.trigger,
            "source": self.source,
            "commit": self.commit,
            "changed_files": self.changed_files,
            "images": [vars_of(i) for i in self.images],
            "pipelines": [vars_of(p) for p in self.pipelines],
            "transaction": self.transaction,
            "error": self.error,
            "notes": list(self.notes),
        }


def vars_of(obj: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(obj).items()}


class Images(Protocol):
    """The Docker engine and the registry."""

    def exists(self, state: ImageState) -> bool:
        """The registry serves a manifest for the image's tag (and it is ours)."""

    def build(self, state: ImageState, source: Source, *, push: bool) -> ImageResult:
        """Build from `source`, then (with `push`) push and verify the tag in the registry."""


class Cluster(Protocol):
    """A Pachyderm cluster."""

    def pipelines(self) -> Mapping[tuple[str, str], Stored]:
        """The version every pipeline runs."""

    def history(self, key: tuple[str, str]) -> Sequence[Stored]:
        """Every stored version of one pipeline."""

    def missing_repos(self, repos: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The repos of `repos` that do not exist."""

    def apply(self, specs: Sequence[tuple[Pipeline, dict[str, Any]]], reprocess: bool) -> str:
        """Create or update every spec in one transaction, in order; its id."""

    def delete(self, key: tuple[str, str]) -> None:
        """Delete one pipeline, keeping its output repo."""


Progress = Callable[[str], None]


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def execute(
    planned: Planned,
    options: RunOptions,
    *,
    trigger: str,
    images: Callable[[], Images],
    cluster: Callable[[], Cluster],
    progress: Progress = lambda line: None,
    repository: str = "",
    run_id: str | None = None,
) -> RunRecord:
    """`repository`: this repository, as the annotations of applied pipelines name it."""
    started = time.time()
    plan = planned.plan
    source = planned.resolved.source
    record = RunRecord(
        id=run_id or new_run_id(),
        started=started,
        finished=started,
        trigger=trigger,
        source=source.label,
        commit=source.commit,
        changed_files=len(plan.changed_files),
        images=(),
        pipelines=(),
    )
    pruning = options.prune and options.deploy and options.push and bool(plan.prunable)
    if not plan.evaluated or (plan.nothing_to_do and not pruning):
        found = tuple(
            ImageResult(i.name, i.reference or i.name, "exists")
            for i in plan.images
            if i.action == EXISTS
        )
        done = replace(record, finished=time.time(), images=found, pipelines=_skipped(plan))
        return _broken(done, plan)

    # Pipelines to apply need their image in the registry, changed or not.
    needed = {p.image for p in plan.deploys if p.built_image} if options.deploy else set()
    wanted = [i for i in plan.images if i.action == BUILD or (i.tag and i.reference in needed)]
    if options.dry_run:
        results = tuple(ImageResult(i.name, i.reference or i.name, "planned") for i in wanted)
        pipes = tuple(_result(p, "planned") for p in plan.pipelines)
        return replace(record, finished=time.time(), images=results, pipelines=pipes)

    image_results: list[ImageResult] = []
    if wanted:
        docker = images()
        image_results = _build_all(docker, wanted, source, options, planned, progress)
    # Found in the registry while planning, and run by no pipeline of this run: recorded
    # as found (those a pipeline runs were asked again above).
    image_results += [
        ImageResult(i.name, i.reference or i.name, "exists")
        for i in plan.images
        if i.action == EXISTS and i not in wanted
    ]
    failed = [r for r in image_results if not r.ok]
    record = replace(record, images=tuple(image_results))
    if failed:
        names = ", ".join(r.reference for r in failed)
        return _failed(record, plan, f"image failed: {names}; no pipeline was updated")
    if not options.deploy or not options.push:
        why = options.held_because if not options.deploy else "--no-push: images are local only"
        return _broken(
            replace(
                record,
                finished=time.time(),
                pipelines=tuple(_result(p, "not applied") for p in plan.deploys),
                notes=(f"pipelines not updated ({why})",),
            ),
            plan,
        )
    try:
        return _broken(_deploy(record, planned, options, cluster(), progress, repository), plan)
    except PachhookError as exc:
        # An unreachable cluster, a refused token or a failed transaction is this run's
        # outcome, not a crash: the record (and so the ledger) still says what was built.
        return _failed(record, plan, exc.message)


def _broken(record: RunRecord, plan: Plan) -> RunRecord:
    """Images that cannot be built from the source fail the run once the rest is done:
    everything that does not depend on them was built and applied."""
    if not plan.broken or record.error:
        return record
    names = ", ".join(i.label for i in plan.broken)
    held = ", ".join(f"{p.pipeline.project}/{p.pipeline.name}" for p in plan.held)
    first = plan.broken[0].reasons[0].why
    return replace(
        record,
        finished=time.time(),
        error=(
            f"cannot build {names} from {record.source} ({first})"
            + (f"; held: {held}" if held else "")
            + "; everything else is done"
        ),
    )


def _failed(record: RunRecord, plan: Plan, error: str) -> RunRecord:
    pipelines = tuple(_result(p, "not applied") for p in plan.pipelines)
    return replace(record, finished=time.time(), pipelines=pipelines, error=error)


def _build_all(
    docker: Images,
    wanted: list[ImagePlan],
    source: Source,
    options: RunOptions,
    planned: Planned,
    progress: Progress,
) -> list[ImageResult]:
    jobs = options.jobs or (planned.workspace.config.jobs if planned.workspace else 2)

    def one(image: ImagePlan) -> ImageResult:
        reference = image.reference or image.name
        state = image.state
        if state is None:
            return ImageResult(image.name, reference, "failed", error="the image was not read")
        try:
            present = options.push and docker.exists(state)
        except PachhookError as exc:
            # The registry could not be asked, or holds this tag for other content.
            return ImageResult(image.name, reference, "failed", error=exc.message)
        if present:
            progress(f"{reference}: already in the registry, not built")
            return ImageResult(image.name, reference, "exists")
        progress(f"{reference}: building")
        return docker.build(state, source, push=options.push)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, wanted))


def _deploy(
    record: RunRecord,
    planned: Planned,
    options: RunOptions,
    cluster: Cluster,
    progress: Progress,
    repository: str,
) -> RunRecord:
    workspace = planned.workspace
    assert workspace is not None
    considered = {p.key for p in planned.plan.pipelines if p.action != SKIP}
    held = cluster_state(cluster, considered, {p.key for p in workspace.pipelines}, repository)
    # Narrow by change, decide by state: the same planner, knowing the cluster as it is now
    # that the lock is held.
    plan: Plan = make_plan(
        workspace,
        planned.resolved.changes,
        planned.base,
        Remote(pipelines=held, cluster=READ),
    )
    deploys = [p for p in plan.deploys if p.action != DRIFTED or options.restore_drift]
    outputs = {p.key for p in deploys} | set(held)
    repos = sorted({repo for p in deploys for repo in p.pipeline.inputs if repo not in outputs})
    missing = cluster.missing_repos(repos) if repos else []
    if missing:
        names = ", ".join(f"{project}/{name}" for project, name in missing)
        users = sorted({p.pipeline.name for p in deploys if set(p.pipeline.inputs) & set(missing)})
        raise PachhookError(
            f"input repo {names} does not exist (needed by {', '.join(users)}); "
            "create it with pachctl create repo; nothing was applied"
        )
    reprocess = options.reprocess
    if reprocess is None:
        reprocess = workspace.config.pachyderm.reprocess
    commit = planned.resolved.source.commit or "working tree"
    specs = [
        (p.pipeline, rewritten(p.pipeline, p.image, _annotations(p, held, commit, repository)))
        for p in deploys
    ]
    transaction = None
    if specs:
        progress(f"applying {len(specs)} pipeline(s) in one transaction")
        transaction = cluster.apply(specs, reprocess)
    applied = {p.key for p in deploys}
    pipes = [
        _result(p, "applied")
        if p.key in applied
        else _result(p, "not applied", LEFT_DRIFTED)
        if p.action == DRIFTED
        else _result(p, "unchanged")
        for p in plan.pipelines
    ]
    record = replace(record, transaction=transaction)
    error = None
    if options.prune and plan.prunable:
        # After the transaction, one call each: pachd cannot delete inside a transaction.
        progress(
            f"deleting {len(plan.prunable)} pipeline(s) whose spec is gone (output repos kept)"
        )
        for removed in plan.prunable:
            if error is None:
                try:
                    cluster.delete(removed.key)
                    pipes.append(_pruned(removed, "deleted"))
                    continue
                except PachhookError as exc:
                    error = f"{exc.message}; the pipelines applied above stay applied"
            pipes.append(_pruned(removed, "not deleted"))
    return replace(record, finished=time.time(), pipelines=tuple(pipes), error=error)


def _annotations(
    p: PipelinePlan, held: Mapping[tuple[str, str], Deployed], commit: str, repository: str
) -> dict[str, str]:
    """What pachhook writes on every spec it applies: the digest that decides next time,
    where it came from, and the version this write makes (update: one more than now)."""
    now = held.get(p.key)
    annotations = {
        ANNOTATION_DIGEST: p.spec_digest,
        ANNOTATION_COMMIT: commit,
        ANNOTATION_SPEC_FILE: p.pipeline.spec_file,
        ANNOTATION_VERSION: str(now.version + 1 if now else 1),
    }
    if repository:
        annotations[ANNOTATION_REPOSITORY] = repository
    return annotations


def _pruned(removed: Removed, status: str) -> PipelineResult:
    where = (
        f"its spec is gone from {removed.spec_file}" if removed.spec_file else "its spec is gone"
    )
    return PipelineResult(
        project=removed.project,
        name=removed.name,
        action=PRUNE,
        status=status,
        image=None,
        reasons=(f"{where}; output repo kept",),
    )


def _skipped(plan: Plan) -> tuple[PipelineResult, ...]:
    return tuple(_result(p, "unchanged") for p in plan.pipelines)


def _result(p: PipelinePlan, status: str, *extra: str) -> PipelineResult:
    return PipelineResult(
        project=p.pipeline.project,
        name=p.pipeline.name,
        action=p.action,
        status=(
            "held"
            if p.action == HELD and status != "planned"
            else status
            if p.action != SKIP or status == "planned"
            else "unchanged"
        ),
        image=p.image,
        reasons=tuple(f"{r.path}: {r.why}" if r.path else r.why for r in p.reasons) + extra,
    )
