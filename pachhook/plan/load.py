"""Load what the planner needs for a selection, and call it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from pachhook.config import Config, parse_found
from pachhook.config import find as find_config
from pachhook.errors import InputError
from pachhook.pachyderm.specs import Pipeline, is_spec_candidate
from pachhook.plan.planner import Planned, Remote, make_plan, unevaluated
from pachhook.plan.relevance import relevance
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
    found = find_config(source.read)
    config = None
    if not changes.everything:
        first_look, config = relevance(found, env, repo.state_dir)
        if not first_look.matters(changes.paths):
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
    base = _base_pipelines(repo, changes.base, changed_specs, workspace)
    return Planned(
        make_plan(workspace, changes, base, remote or Remote()), workspace, resolved, base
    )


def _base_pipelines(
    repo: Repo, base: str | None, spec_paths: list[str], workspace: Workspace
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
        return found
    finally:
        source.close()
