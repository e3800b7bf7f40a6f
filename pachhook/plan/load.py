"""Load what the planner needs for a selection, and call it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pachhook.config import Config, parse_found
from pachhook.config import find as find_config
from pachhook.errors import InputError
from pachhook.pachyderm.specs import Pipeline, is_spec_candidate, rewritten
from pachhook.plan.planner import Plan, Planned, Remote, make_plan, unevaluated
from pachhook.plan.relevance import relevance, templates_unchanged
from pachhook.repo.cachefile import read_json, write_json
from pachhook.repo.git import Repo
from pachhook.repo.selection import ChangeSet, Selection, resolve
from pachhook.repo.source import CommitSource

if TYPE_CHECKING:
    from pachhook.docker.digest import ImageState
    from pachhook.plan.workspace import Workspace


class Prefetch(Protocol):
    """Told what the plan is made of as soon as it is known, so that state can be asked
    for while the rest is read (plan/state.py)."""

    def config(self, config: Config) -> None: ...

    def images(self, images: Sequence[ImageState], changes: ChangeSet, config: Config) -> None: ...


def plan_selection(
    repo: Repo,
    selection: Selection,
    env: Mapping[str, str],
    remote: Remote | None = None,
    *,
    prefetch: Prefetch | None = None,
) -> Planned:
    resolved = resolve(repo, selection)
    source, changes = resolved.source, resolved.changes
    found = find_config(source.read, env)
    config = None
    if not changes.everything:
        first_look, config = relevance(found, env, repo.state_dir)
        target = source.commit if isinstance(source, CommitSource) else None
        if not first_look.matters(changes.paths) and templates_unchanged(
            first_look, changes, repo, target
        ):
            return Planned(unevaluated(changes, first_look.images), None, resolved)
    from pachhook.plan.workspace import load_workspace

    config = config or parse_found(found, env)
    if prefetch is not None:
        prefetch.config(config)
    missing = frozenset(changes.paths - source.path_set)
    known = config
    workspace = load_workspace(
        source,
        env,
        missing=missing,
        config=config,
        on_images=(lambda images: prefetch.images(images, changes, known)) if prefetch else None,
    )
    changed_specs = [p for p in changes.paths if is_spec_candidate(p, config)]
    base = _base_pipelines(repo, changes.base, changed_specs, workspace, changes.paths)
    plan = make_plan(workspace, changes, base, remote or Remote())
    check_specs(plan, repo.state_dir)
    return Planned(plan, workspace, resolved, base)


CHECKED_SPECS = "checked-specs.json"  # under the state dir: digests of specs read without fault
CHECKED_KEPT = 5000


def check_specs(plan: Plan, state_dir: Path | None = None) -> None:
    """Every spec the plan would apply, read the way it will be sent (python-pachyderm's
    PipelineSpec: an unknown field or a wrong type is named now, before any image is
    built, not after every image was pushed). A spec read without fault once is
    remembered by its digest under `state_dir`: a repeated plan neither reads it again
    nor imports python-pachyderm for it."""
    if not plan.deploys:
        return
    known = _checked(state_dir)
    fresh = [p for p in plan.deploys if p.spec_digest not in known]
    if not fresh:
        return
    from pachhook.pachyderm.cluster import to_request

    for p in fresh:
        to_request(p.pipeline, rewritten(p.pipeline, p.image, {}), reprocess=False)
    if state_dir is not None:
        digests = list(dict.fromkeys([*known, *(p.spec_digest for p in fresh)]))
        _write_checked(state_dir, digests[-CHECKED_KEPT:])


def _checked(state_dir: Path | None) -> dict[str, None]:
    data = read_json(state_dir / CHECKED_SPECS) if state_dir is not None else None
    return dict.fromkeys(d for d in data if isinstance(d, str)) if isinstance(data, list) else {}


def _write_checked(state_dir: Path, digests: list[str]) -> None:
    write_json(state_dir / CHECKED_SPECS, digests)  # only a cache: lost, specs are read again


def _base_pipelines(
    repo: Repo,
    base: str | None,
    spec_paths: list[str],
    workspace: Workspace,
    changed: frozenset[str] = frozenset(),
) -> dict[tuple[str, str], Pipeline] | None:
    if base is None:
        return None
    from pachhook.plan.workspace import pipelines_at

    source = CommitSource(repo, base)
    try:
        found = {}
        for path in spec_paths:
            try:
                for pipeline in pipelines_at(source, workspace.config, [path]):
                    found[pipeline.key] = pipeline
            except InputError:
                # A spec that was broken before the change counts as new now.
                continue
        found.update(_base_templated(source, workspace, changed))
        return found
    finally:
        source.close()


def _base_templated(
    source: CommitSource, workspace: Workspace, changed: frozenset[str]
) -> dict[tuple[str, str], Pipeline]:
    """The specs at the base of the template instances that a changed file reaches; an
    instance that cannot be evaluated there counts as new."""
    touched = [i.template for i in workspace.templates if changed.intersection(i.files)]
    if not touched:
        return {}
    from pachhook.pachyderm.templates import instantiate

    found: dict[tuple[str, str], Pipeline] = {}
    project = workspace.config.pachyderm.project
    for instance in instantiate(source, workspace.config, touched, skip_failures=True):
        try:
            found.update((p.key, p) for p in instance.pipelines(project))
        except InputError:
            continue
    return found


def uncommitted_config(repo: Repo, *, reads_committed: bool) -> str | None:
    """One line when the working tree's configuration is not the committed one (the one
    plan, run, the hooks and CI read), for a command that reads the committed one
    (`reads_committed`) or no configuration at all."""
    from pachhook.config import CONFIG_FILES, has_tool_table
    from pachhook.repo.git import zsplit
    from pachhook.repo.source import blob_id

    listed = repo.git("ls-tree", "-z", "HEAD", "--", *CONFIG_FILES, check=False)
    committed = {}
    for record in zsplit(listed):
        meta, _, path = record.partition("\t")
        committed[path] = meta.split(" ")[-1]
    for path in CONFIG_FILES:
        try:
            data: bytes | None = (repo.root / path).read_bytes()
        except OSError:
            data = None
        oid = committed.get(path)
        if (None if data is None else blob_id(data)) == oid:
            continue
        if path != CONFIG_FILES[0]:
            # pyproject.toml matters only where it holds pachhook's table.
            before = repo.git("cat-file", "blob", oid, check=False) if oid else ""
            now = data.decode("utf-8", errors="replace") if data is not None else ""
            if not has_tool_table(before) and not has_tool_table(now):
                continue
        state = (
            "is not committed yet"
            if oid is None
            else "was deleted"
            if data is None
            else "has uncommitted changes"
        )
        if reads_committed:
            reads = "this command reads the committed one (add --working-tree to read yours)"
        else:
            reads = "plan, run and the hooks read the committed one"
        return f"note: {path} {state}; {reads}: commit it to use it everywhere"
    return None
