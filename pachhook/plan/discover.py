"""`pachhook init`: a configuration written from what the repository holds."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from pathlib import Path

from pachhook.config import DEFAULT_REGISTRY, ImageConfig, env_config, split_reference
from pachhook.pachyderm.specs import Pipeline
from pachhook.plan.workspace import pipelines_at
from pachhook.repo.git import Repo
from pachhook.repo.source import WorkingTreeSource


def is_dockerfile(path: str) -> bool:
    name = posixpath.basename(path)
    return name == "Dockerfile" or name.startswith("Dockerfile.") or name.endswith(".Dockerfile")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _guess_name(folder: str, pipelines: list[Pipeline], single: bool) -> tuple[str, bool]:
    """The image name a Dockerfile most likely builds: the one image its pipelines name."""
    names = {split_reference(p.image)[0] for p in pipelines if p.image}
    if single and len(names) == 1:
        return names.pop(), True
    near = {
        split_reference(p.image)[0]
        for p in pipelines
        if p.image and (folder == "." or p.spec_file.startswith(folder + "/"))
    }
    if len(near) == 1:
        return near.pop(), True
    leaf = posixpath.basename(folder) if folder != "." else Path.cwd().name
    return f"{DEFAULT_REGISTRY}/CHANGE-ME/{leaf.lower()}", False


def discover_config(repo: Repo, env: Mapping[str, str]) -> tuple[str, list[str]]:
    source = WorkingTreeSource(repo)
    defaults = env_config(env)
    pipelines = pipelines_at(source, defaults)
    dockerfiles = [p for p in source.paths if is_dockerfile(p)]
    lines = [
        "# pachhook configuration: see the README for every key.",
        'tag_policy = "digest"',
        "jobs = 2",
        "",
        "[pachyderm]",
        "# The cluster is PACHYDERM_CLUSTER_URL, else pachctl's context; an address here",
        "# must name that same cluster (see the README's Security model).",
        '# address = "grpcs://pachd.example.com:443"',
        'project = "default"',
        "reprocess = false",
    ]
    summary = []
    for path in dockerfiles:
        folder = posixpath.dirname(path) or "."
        name, sure = _guess_name(folder, pipelines, len(dockerfiles) == 1)
        image = ImageConfig(name=name, context=folder, dockerfile=posixpath.basename(path))
        lines += ["", "[[image]]"]
        if not sure:
            lines.append("# no pipeline spec names this image: set the repository it is pushed to")
        lines += [
            f"name = {_quote(image.name)}",
            f"context = {_quote(image.context)}",
            f"dockerfile = {_quote(image.dockerfile)}",
        ]
        summary.append(f"image {image.name}: {path}" + ("" if sure else " (name to be set)"))
    if pipelines:
        files = sorted({p.spec_file for p in pipelines})
        lines += ["", "[pipelines]", "include = [" + ", ".join(_quote(f) for f in files) + "]"]
        summary += [f"pipeline {p.project}/{p.name}: {p.where}" for p in pipelines]
    return "\n".join(lines) + "\n", summary
