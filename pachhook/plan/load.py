"""Load what the planner needs for a selection, and call it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pachhook.config import find as find_config
from pachhook.config import parse_found
from pachhook.errors import InputError
from pachhook.pachyderm.specs import Pipeline, is_spec_candidate
from pachhook.plan.planner import Planned, Remote, make_plan, unevaluated
from pachhook.plan.relevance import relevance, templates_unchanged
from pachhook.repo.git import Repo
from pachhook.repo.selection import Selection, resolve
from pachhook.repo.source import CommitSource

if TYPE_CHECKING:
    from pachhook.plan.workspace import Workspace


def plan_selection(
    repo: Repo, selection: Selection, env: Mapping[str, str], remote: Remote | None = None
) -> Planned:
    resolved = resolve(repo, selection)
    source, changes = resolved.source, resolved.changes
    found = find_config(source.read)
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
    missing = frozenset(changes.paths - source.path_set)
    workspace = load_workspace(source, env, missing=missing, config=config)
    changed_specs = [p for p in changes.paths if is_spec_candidate(p, config)]
    base = _base_pipelines(repo, changes.base, changed_specs, workspace, changes.paths)
    return Planned(
        make_plan(workspace, changes, base, remote or Remote()), workspace, resolved, base
    )


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
