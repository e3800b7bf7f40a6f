"""Read the registry and the cluster for a plan, and plan again knowing them.

The step between the pure plan and what is printed (Skaffold's build/cache lookup): the
plan says what may need work, the registry (is each tag there, with our content?) and the
cluster (one ListPipeline: which pipelines run which spec, and which were changed outside
pachhook) say what does. The adapters come in as arguments; the planner never sees them.
Nothing here writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple, Protocol

from pachhook.config import files_read
from pachhook.docker.registry import is_loopback, split_name
from pachhook.errors import PachhookError
from pachhook.pachyderm.stored import (
    Deployed,
    Stored,
    deployed,
    drift,
    managed_by,
    needs_history,
    stored_inputs,
)
from pachhook.plan.planner import (
    OFFLINE,
    READ,
    SKIP,
    UNREACHABLE,
    Plan,
    Planned,
    Remote,
    make_plan,
)

if TYPE_CHECKING:
    from pachhook.config import Config
    from pachhook.docker.digest import ImageState
    from pachhook.repo.selection import ChangeSet

Key = tuple[str, str]


class TagLookup(Protocol):
    def exists(self, state: ImageState) -> bool:
        """The registry serves the image's tag with our content. Raises the registry's
        error when it cannot be asked, a plain PachhookError when the tag holds other
        content."""


class ClusterLookup(Protocol):
    def pipelines(self) -> Mapping[Key, Stored]:
        """The version every pipeline runs."""

    def history(self, key: Key) -> Sequence[Stored]:
        """Every stored version of one pipeline."""


class Readers(NamedTuple):
    """Where state comes from; None: that side is not read."""

    registry: Callable[[], TagLookup] | None = None
    cluster: Callable[[], ClusterLookup] | None = None
    repository: str = ""  # this repository, as pachhook's annotations name it
    jobs: int = 8  # registry lookups at once


def with_state(planned: Planned, readers: Readers) -> Planned:
    """`planned` again, its actions decided by what the registry and the cluster hold.

    A side that cannot be read is left as the offline plan has it, with one line in the
    plan's notes saying why; a plan that read nothing (no relevant change) is returned
    as it is."""
    plan, workspace = planned.plan, planned.workspace
    if not plan.evaluated or workspace is None:
        return planned
    if readers.registry is None and readers.cluster is None:
        return planned
    considered = {p.key for p in plan.pipelines if p.action != SKIP}
    images = _images_to_ask(plan)
    known = {p.key for p in workspace.pipelines}
    notes: dict[str, str] = {}  # side -> why it could not be read

    def read_cluster() -> tuple[str, dict[Key, Deployed] | None]:
        if readers.cluster is None:
            return OFFLINE, None
        try:
            return READ, cluster_state(readers.cluster(), considered, known, readers.repository)
        except PachhookError as exc:
            # Unreachable, refused, or not configured at all: a plan is still worth having.
            notes["cluster"] = f"the cluster could not be read: {exc.message}"
            return UNREACHABLE, None

    def read_registry() -> tuple[str, dict[Key, bool] | None, dict[Key, str]]:
        if readers.registry is None:
            return OFFLINE, None, {}
        if not images:
            return READ, {}, {}  # nothing the plan needs is in the registry
        try:
            tags, refused = registry_state(readers.registry(), images, readers.jobs)
        except PachhookError as exc:
            notes["registry"] = f"the registry could not be read: {exc.message}"
            return UNREACHABLE, None, {}
        return READ, tags, refused

    # Both at once: the cluster's answer and the registry's are waited for side by side.
    with ThreadPoolExecutor(max_workers=1) as pool:
        cluster_future = pool.submit(read_cluster)
        registry, tags, refused = read_registry()
        cluster, pipelines = cluster_future.result()
    remote = Remote(
        tags=tags,
        refused=refused,
        pipelines=pipelines,
        registry=registry,
        cluster=cluster,
        notes=tuple(notes[side] for side in ("cluster", "registry") if side in notes),
    )
    again = make_plan(workspace, planned.resolved.changes, planned.base, remote)
    return planned._replace(plan=again)


def _images_to_ask(plan: Plan) -> list[ImageState]:
    """Images that may be built, and those a pipeline that may be applied runs."""
    run = {p.built_image for p in plan.pipelines if p.action != SKIP and p.built_image}
    return [
        i.state for i in plan.images if i.state is not None and (i.action != SKIP or i.name in run)
    ]


def registry_state(
    lookup: TagLookup, images: Iterable[ImageState], jobs: int
) -> tuple[dict[Key, bool], dict[Key, str]]:
    """(repository, tag) -> in the registry with our content; and the tags that hold other
    content, with the registry's refusal."""

    def one(state: ImageState) -> tuple[Key, bool, str | None]:
        key = (state.repository, state.tag)
        try:
            return key, lookup.exists(state), None
        except PachhookError as exc:
            if type(exc) is not PachhookError:
                raise  # the registry could not be asked (or its credentials not read)
            return key, False, exc.message

    images = list(images)
    if all(is_loopback(split_name(state.name)[0]) for state in images):
        # A loopback registry answers within the time threads take to hand over the
        # interpreter lock to one another: one at a time is quicker (2x, measured).
        jobs = 1
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        answers = list(pool.map(one, images))
    tags = {key: present for key, present, _ in answers}
    refused = {key: why for key, _, why in answers if why}
    return tags, refused


def cluster_state(
    lookup: ClusterLookup, considered: set[Key], known: set[Key], repository: str
) -> dict[Key, Deployed]:
    """What the cluster runs, for the planner. A considered pipeline that someone else
    wrote after pachhook (or that lost pachhook's annotations) has its versions read to
    find what changed; so has one pachhook applied from here whose spec is gone (not in
    `known`), for its inputs: the order a prune deletes in."""
    stored = lookup.pipelines()
    out = {}
    for key, current in stored.items():
        found = None
        inputs: tuple[Key, ...] = ()
        if key in considered and needs_history(current):
            found = drift(current, lookup.history(key))
        elif key not in known and managed_by(current, repository):
            versions = lookup.history(key)
            now = next((s for s in versions if s.version == current.version), None)
            inputs = stored_inputs(now) if now is not None else ()
        out[key] = deployed(current, repository, found, inputs)
    return out


class Known:
    """A cluster whose pipelines were already read once."""

    def __init__(self, stored: Mapping[Key, Stored], cluster: ClusterLookup) -> None:
        self._stored = stored
        self._cluster = cluster

    def pipelines(self) -> Mapping[Key, Stored]:
        return self._stored

    def history(self, key: Key) -> Sequence[Stored]:
        return self._cluster.history(key)


class Prefetch:
    """State asked for while the plan is still being made (`plan_selection`'s prefetch):
    the cluster's pipelines as soon as the configuration is known, and the registry's
    tags of the images surely to be decided (every image with --all or a changed
    configuration, else those with a changed input) as soon as their digests are. The
    answers (and the import of the gRPC client) come while the specs are read.

    `readers` gives `with_state` what it reads through: answers already in, the rest
    asked then."""

    def __init__(
        self,
        cluster: Callable[[Config], ClusterLookup] | None,
        registry: Callable[[Config], TagLookup] | None,
        jobs: int = 8,
    ) -> None:
        self._connect = cluster
        self._registry = registry
        self._jobs = jobs
        self._cluster_thread: threading.Thread | None = None
        self._known: Known | None = None
        self._cluster_error: PachhookError | None = None
        self._tags_thread: threading.Thread | None = None
        self._tags: _Answered | None = None

    def config(self, config: Config) -> None:
        connect = self._connect
        if connect is None:
            return

        def read() -> None:
            try:
                cluster = connect(config)
                self._known = Known(cluster.pipelines(), cluster)
            except PachhookError as exc:
                self._cluster_error = exc

        # Daemons: a plan that fails meanwhile must not wait for an answer.
        self._cluster_thread = threading.Thread(target=read, name="cluster-state", daemon=True)
        self._cluster_thread.start()

    def images(self, images: Sequence[ImageState], changes: ChangeSet, config: Config) -> None:
        if self._registry is None:
            return
        everything = changes.everything or bool(changes.paths & set(files_read(config)))
        wanted = [
            s
            for s in images
            if everything or changes.paths & (set(s.inputs) | set(s.removed_inputs))
        ]
        answered = self._tags = _Answered(self._registry(config))
        if not wanted:
            return

        def ask() -> None:
            try:
                answered.found = registry_state(answered.lookup, wanted, self._jobs)
            except PachhookError as exc:
                answered.error = exc

        self._tags_thread = threading.Thread(target=ask, name="registry-state", daemon=True)
        self._tags_thread.start()

    def readers(self, repository: str) -> Readers:
        return Readers(
            registry=self._answered_tags if self._registry is not None else None,
            cluster=self._cluster if self._connect is not None else None,
            repository=repository,
            jobs=self._jobs,
        )

    def _cluster(self) -> ClusterLookup:
        if self._cluster_thread is None:
            raise PachhookError("the cluster was not asked (internal order of calls)")
        self._cluster_thread.join()
        if self._cluster_error is not None:
            raise self._cluster_error
        assert self._known is not None
        return self._known

    def _answered_tags(self) -> TagLookup:
        if self._tags is None:
            raise PachhookError("the registry was not asked (internal order of calls)")
        if self._tags_thread is not None:
            self._tags_thread.join()
        return self._tags


class _Answered:
    """A registry whose answers for some tags are already in."""

    def __init__(self, lookup: TagLookup) -> None:
        self.lookup = lookup
        self.found: tuple[dict[Key, bool], dict[Key, str]] | None = None
        self.error: PachhookError | None = None

    def exists(self, state: ImageState) -> bool:
        if self.error is not None:
            raise self.error
        key = (state.repository, state.tag)
        if self.found is not None and key in self.found[0]:
            refused = self.found[1].get(key)
            if refused:
                raise PachhookError(refused)
            return self.found[0][key]
        return self.lookup.exists(state)
