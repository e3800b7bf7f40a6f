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
        '# address = "grpcs://pachd.example.com:443"  # else PACHYDERM_CLUSTER_URL, else pachctl\'s context',
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
    template_lines, template_summary = _templates(source)
    lines += template_lines
    summary += template_summary
    return "\n".join(lines) + "\n", summary


def _templates(source: WorkingTreeSource) -> tuple[list[str], list[str]]:
    """Commented [[pipelines.template]] entries for the Jsonnet files that look like
    pipeline templates: their args are for the user to give."""
    import re

    from pachhook.pachyderm.jsonnet import top_level_function

    def mentions_spec(data: bytes | None) -> bool:
        return data is not None and b"transform" in data and b"pipeline" in data

    lines: list[str] = []
    summary = []
    for path in (p for p in source.paths if p.endswith(".jsonnet")):
        data = source.read(path) or b""
        text = data.decode("utf-8", errors="replace")
        header = top_level_function(text)
        folder = posixpath.dirname(path)
        imported = (
            posixpath.normpath(posixpath.join(folder, name))
            for name in re.findall(r"\bimport\s+['\"]([^'\"]+)['\"]", text)
        )
        if not mentions_spec(data) and not (
            header
            and any(mentions_spec(source.read(p)) for p in imported if not p.startswith(".."))
        ):
            continue
        if not lines:
            lines += [
                "",
                "# Jsonnet pipeline templates, as `pachctl create pipeline --jsonnet FILE --arg K=V`",
                "# takes them: give each instance its args (strings) and uncomment it; one file may",
                "# be instantiated several times with different args.",
            ]
        required = [p.name for p in header.parameters if not p.optional] if header else []
        optional = [p.name for p in header.parameters if p.optional] if header else []
        args = ", ".join(f'{name} = "CHANGE-ME"' for name in required)
        lines += ["# [[pipelines.template]]", f"# file = {_quote(path)}"]
        if header:
            lines.append(f"# args = {{ {args} }}" if args else "# args = {}")
        if optional:
            lines.append(f"#   (optional args: {', '.join(optional)})")
        summary.append(
            f"template {path}: commented out in the config"
            + (f", its args to be set ({', '.join(required)})" if required else "")
        )
    return lines, summary
