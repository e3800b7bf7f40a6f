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
from pachhook.pachyderm.specs import ANNOTATION_COMMIT, ANNOTATION_DIGEST, Pipeline, rewritten
from pachhook.plan.planner import (
    BUILD,
    SKIP,
    ImagePlan,
    PipelinePlan,
    Plan,
    Planned,
    Remote,
    make_plan,
)
from pachhook.repo.source import Source


@dataclass(frozen=True)
class RunOptions:
    dry_run: bool = False
    push: bool = True
    deploy: bool = True
    reprocess: bool | None = None  # None: the config decides
    jobs: int | None = None  # None: the config decides
    held_because: str = "--no-deploy"  # why pipelines wait, when deploy is False


@dataclass(frozen=True)
class PipelineResult:
    project: str
    name: str
    action: str  # create | update | skip
    status: str  # applied | unchanged | not applied | planned
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

    def pipeline_digests(self) -> Mapping[tuple[str, str], str | None]:
        """Every pipeline's stored spec digest annotation (None when it has none)."""

    def missing_repos(self, repos: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The repos of `repos` that do not exist."""

    def apply(self, specs: Sequence[tuple[Pipeline, dict[str, Any]]], reprocess: bool) -> str:
        """Create or update every spec in one transaction, in order; its id."""


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
    run_id: str | None = None,
) -> RunRecord:
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
    if not plan.evaluated or plan.nothing_to_do:
        return replace(record, finished=time.time(), pipelines=_skipped(plan))

    # Pipelines to apply need their image in the registry, changed or not.
    needed = {p.built_image for p in plan.deploys if p.built_image} if options.deploy else set()
    wanted = [i for i in plan.images if i.action == BUILD or (i.name in needed and i.tag)]
    if options.dry_run:
        results = tuple(ImageResult(i.name, i.reference or i.name, "planned") for i in wanted)
        pipes = tuple(_result(p, "planned") for p in plan.pipelines)
        return replace(record, finished=time.time(), images=results, pipelines=pipes)

    image_results: list[ImageResult] = []
    if wanted:
        docker = images()
        image_results = _build_all(docker, wanted, source, options, planned, progress)
    failed = [r for r in image_results if not r.ok]
    record = replace(record, images=tuple(image_results))
    if failed:
        names = ", ".join(r.reference for r in failed)
        return _failed(record, plan, f"image failed: {names}; no pipeline was updated")
    if not options.deploy or not options.push:
        why = options.held_because if not options.deploy else "--no-push: images are local only"
        return replace(
            record,
            finished=time.time(),
            pipelines=tuple(_result(p, "not applied") for p in plan.deploys),
            notes=(f"pipelines not updated ({why})",),
        )
    try:
        return _deploy(record, planned, options, cluster(), progress)
    except PachhookError as exc:
        # An unreachable cluster, a refused token or a failed transaction is this run's
        # outcome, not a crash: the record (and so the ledger) still says what was built.
        return _failed(record, plan, exc.message)


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
    record: RunRecord, planned: Planned, options: RunOptions, cluster: Cluster, progress: Progress
) -> RunRecord:
    assert planned.workspace is not None
    digests = cluster.pipeline_digests()
    # Narrow by change, decide by state: the same planner, now knowing the cluster.
    plan: Plan = make_plan(
        planned.workspace,
        planned.resolved.changes,
        planned.base,
        Remote(pipelines=digests),
    )
    deploys = plan.deploys
    outputs = {p.key for p in deploys} | set(digests)
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
        reprocess = planned.workspace.config.pachyderm.reprocess
    commit = planned.resolved.source.commit or "working tree"
    specs = [
        (
            p.pipeline,
            rewritten(
                p.pipeline, p.image, {ANNOTATION_DIGEST: p.spec_digest, ANNOTATION_COMMIT: commit}
            ),
        )
        for p in deploys
    ]
    transaction = None
    if specs:
        progress(f"applying {len(specs)} pipeline(s) in one transaction")
        transaction = cluster.apply(specs, reprocess)
    pipes = tuple(
        _result(p, "applied" if p.action != SKIP else "unchanged") for p in plan.pipelines
    )
    return replace(record, finished=time.time(), pipelines=pipes, transaction=transaction)


def _skipped(plan: Plan) -> tuple[PipelineResult, ...]:
    return tuple(_result(p, "unchanged") for p in plan.pipelines)


def _result(p: PipelinePlan, status: str) -> PipelineResult:
    return PipelineResult(
        project=p.pipeline.project,
        name=p.pipeline.name,
        action=p.action,
        status=status if p.action != SKIP or status == "planned" else "unchanged",
        image=p.image,
        reasons=tuple(f"{r.path}: {r.why}" if r.path else r.why for r in p.reasons),
    )
