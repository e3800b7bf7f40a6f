"""Load what the planner needs for a selection, and call it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pachhook.config import find as find_config
from pachhook.config import parse_found
from pachhook.errors import InputError
from pachhook.pachyderm.specs import Pipeline, is_spec_candidate, rewritten
from pachhook.plan.planner import Plan, Planned, Remote, make_plan, unevaluated
from pachhook.plan.relevance import relevance
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
        if not first_look.matters(changes.paths):
            return Planned(unevaluated(changes, first_look.images), None, resolved)
    from pachhook.plan.workspace import load_workspace

    config = config or parse_found(found, env)
    missing = frozenset(changes.paths - source.path_set)
    workspace = load_workspace(source, env, missing=missing, config=config)
    changed_specs = [p for p in changes.paths if is_spec_candidate(p, config)]
    base = _base_pipelines(repo, changes.base, changed_specs, workspace)
    plan = make_plan(workspace, changes, base, remote or Remote())
    check_specs(plan)
    return Planned(plan, workspace, resolved, base)


def check_specs(plan: Plan) -> None:
    """Every spec the plan would apply, read the way it will be sent (python-pachyderm's
    PipelineSpec: an unknown field or a wrong type is named now, before any image is
    built, not after every image was pushed)."""
    if not plan.deploys:
        return
    from pachhook.pachyderm.cluster import to_request

    for p in plan.deploys:
        to_request(p.pipeline, rewritten(p.pipeline, p.image, {}), reprocess=False)


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
