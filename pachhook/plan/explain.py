"""`pachhook explain`: what each path affects, and why."""

from __future__ import annotations

from collections.abc import Iterable

from pachhook.config import ImageIndex, files_read
from pachhook.pachyderm.specs import is_spec_candidate
from pachhook.plan.workspace import Workspace, duplicate_line


def explain_paths(workspace: Workspace, paths: Iterable[str]) -> list[str]:
    lines = []
    for path in paths:
        lines.append(f"{path}:")
        lines.extend(f"  {line}" for line in _explain(workspace, path))
    return lines


def _explain(workspace: Workspace, path: str) -> list[str]:
    config = workspace.config
    if path in files_read(config):
        return ["the configuration: a change re-evaluates every image and pipeline"]
    out = []
    for state in workspace.images:
        image = state.config
        if path in state.inputs:
            roles = {image.dockerfile_path: "its Dockerfile"}
            if state.ignore_file is not None:
                beside = state.ignore_file == image.dockerfile_path + ".dockerignore"
                roles[state.ignore_file] = (
                    "its ignore file (BuildKit's, beside the Dockerfile)"
                    if beside
                    else "its ignore file"
                )
            role = roles.get(path, "read by its Dockerfile (COPY, ADD or RUN --mount)")
            out.append(f"image {image.label}: {role}; a change rebuilds it")
            if path == image.dockerfile_path:
                following = (
                    "the tag follows what its server says of it"
                    if image.add_urls == "check"
                    else 'the tag does not follow it (add_urls = "check" makes it)'
                )
                out.extend(
                    f"  ADD {url}: an input no file holds, downloaded at build time; {following}"
                    for url in state.urls
                )
            index = ImageIndex([s.config for s in workspace.images])
            users = [
                p
                for p in workspace.pipelines
                if p.image and index.match(p.image) == workspace.images.index(state)
            ]
            for pipeline in users:
                out.append(
                    f"  pipeline {pipeline.project}/{pipeline.name} ({pipeline.where}) runs that image"
                )
        elif image.context == "." or path.startswith(image.context + "/"):
            out.append(
                f"image {image.name}: inside its context, but not an input "
                "(no COPY/ADD takes it, or the ignore file leaves it out)"
            )
    out.extend(_templates(workspace, path))
    for broken in workspace.broken:
        if path == broken.config.dockerfile_path or _inside(path, broken.config.context):
            out.append(
                f"image {broken.config.label}: cannot be built from this source: {broken.error}"
            )
    specs = [p for p in workspace.pipelines if p.spec_file == path and p.origin is None]
    for group in workspace.duplicates:
        if any(p.spec_file == path for p in group):
            out.append(duplicate_line(group))
    for pipeline in specs:
        out.append(
            f"spec of pipeline {pipeline.project}/{pipeline.name} ({pipeline.where}): a change updates it"
        )
    if not specs and is_spec_candidate(path, config) and config.pipelines.include is not None:
        out.append("matches [pipelines] include but defines no pipeline")
    return out or ["affects nothing: not an input of any image, not a spec, not the configuration"]


def _templates(workspace: Workspace, path: str) -> list[str]:
    out = []
    for instance in workspace.templates:
        if path not in instance.files:
            continue
        role = "the template" if path == instance.template.file else "imported by it"
        out.append(f"template {instance.template.label}: {role}; a change re-evaluates it")
        for pipeline in workspace.pipelines:
            if pipeline.origin == instance.template.label:
                out.append(
                    f"  pipeline {pipeline.project}/{pipeline.name} is evaluated from it; "
                    "updated when its evaluated spec changes"
                )
    return out


def _inside(path: str, folder: str) -> bool:
    return folder == "." or path.startswith(folder + "/")
