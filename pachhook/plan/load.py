"""Load what the planner needs for a selection, and call it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
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
    if state_dir is None:
        return {}
    try:
        data = json.loads((state_dir / CHECKED_SPECS).read_text())
    except (OSError, ValueError):
        return {}
    return dict.fromkeys(d for d in data if isinstance(d, str)) if isinstance(data, list) else {}


def _write_checked(state_dir: Path, digests: list[str]) -> None:
    path = state_dir / CHECKED_SPECS
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{CHECKED_SPECS}.{os.getpid()}")
        temp.write_text(json.dumps(digests))
        temp.replace(path)
    except OSError:
        pass  # only a cache: the next plan reads the specs again


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
