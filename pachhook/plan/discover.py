"""`pachhook init`: a configuration written from what the repository holds.

Every guess is checked before it is written: each Dockerfile is read with the input
analysis from its own folder, then from each folder above it, and the first context
from which its sources are found is the one written; image names come from the specs
that name an image after the Dockerfile's folder or name; spec files are included by
folder (`pipelines/*.json`), so a new spec there is managed without editing the config;
and the configuration written is loaded as `plan` loads it before it is returned.
Where a guess cannot be made, the value written is still valid and a comment says why.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from pachhook import globs
from pachhook.config import (
    DEFAULT_REGISTRY,
    Config,
    ImageConfig,
    env_config,
    matching_image,
    normalize_repository,
    parse,
    split_reference,
)
from pachhook.docker import inputs as dockerfile_inputs
from pachhook.errors import InputError, PachhookError
from pachhook.pachyderm.specs import SPEC_SUFFIXES, Pipeline, maybe_spec, parse_file
from pachhook.plan.workspace import load_workspace, split_duplicates
from pachhook.repo.git import Repo
from pachhook.repo.source import WorkingTreeSource

PLACEHOLDER_NAMESPACE = "change-me"
_NOT_DOCKERFILES = (".dockerignore", ".md", ".txt", ".orig", ".bak", ".swp")
_INVALID = re.compile(r"[^a-z0-9._-]+")


def is_dockerfile(path: str) -> bool:
    """Dockerfile names as projects write them: `Dockerfile`, `Dockerfile.gpu`,
    `Dockerfile-dev`, `R_Dockerfile`, `train.dockerfile` (not their ignore files)."""
    name = posixpath.basename(path).lower()
    if name.endswith(_NOT_DOCKERFILES):
        return False
    return (
        name == "dockerfile"
        or name.startswith(("dockerfile.", "dockerfile-", "dockerfile_"))
        or name.endswith((".dockerfile", "_dockerfile", "-dockerfile"))
    )


def dockerfile_stem(path: str) -> str | None:
    """What a Dockerfile's own name says beyond "Dockerfile": `R_Dockerfile` -> `r`,
    `Dockerfile-dev` -> `dev`, `train.dockerfile` -> `train`; None for `Dockerfile`."""
    name = posixpath.basename(path).lower()
    if name == "dockerfile":
        return None
    if name.startswith("dockerfile"):
        return name[len("dockerfile") + 1 :] or None
    return name[: -len("dockerfile") - 1] or None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _slug(text: str) -> str:
    """A valid lower-case repository path component."""
    slug = _INVALID.sub("-", text.lower()).strip("._-")
    return slug or "image"


def _leaf(folder: str, repo: Repo) -> str:
    return posixpath.basename(folder) if folder != "." else repo.root.name


def _parent(folder: str) -> str | None:
    if folder == ".":
        return None
    return posixpath.dirname(folder) or "."


# -- the images -------------------------------------------------------------------------


@dataclass
class _Image:
    path: str  # the Dockerfile, repository-relative
    context: str
    name: str = ""
    variant: str | None = None
    sure: bool = False
    comments: list[str] = field(default_factory=list)

    @property
    def folder(self) -> str:
        return posixpath.dirname(self.path) or "."

    @property
    def dockerfile(self) -> str:
        return posixpath.relpath(self.path, self.context) if self.context != "." else self.path


def _context_of(path: str, source: WorkingTreeSource) -> tuple[str, str | None]:
    """The nearest folder, from the Dockerfile's own up to the root, from which its
    sources are all found; else its own folder and why it cannot be built."""
    folder = posixpath.dirname(path) or "."
    first_error: str | None = None
    context: str | None = folder
    while context is not None:
        dockerfile = posixpath.relpath(path, context) if context != "." else path
        image = ImageConfig(name="x", context=context, dockerfile=dockerfile)
        try:
            dockerfile_inputs.analyze(image, source.paths, source.read, is_link=source.is_link)
            return context, None
        except InputError as exc:
            if first_error is None:
                first_error = exc.message
            if not dockerfile_inputs.is_missing_source(exc.message):
                break  # not a question of where the context is
        context = _parent(context)
    return folder, first_error


def _spec_images(pipelines: list[Pipeline]) -> list[tuple[str, str | None, str]]:
    found = []
    for p in pipelines:
        if p.image:
            name, tag, _ = split_reference(p.image.strip())
            found.append((name, tag, p.spec_file))
    return found


def _distance(folder: str, spec_file: str) -> int:
    """Folder steps from a Dockerfile's folder to a spec file's."""
    a = [] if folder == "." else folder.split("/")
    spec_folder = posixpath.dirname(spec_file)
    b = spec_folder.split("/") if spec_folder else []
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    return (len(a) - common) + (len(b) - common)


def _name_image(
    image: _Image,
    named: list[tuple[str, str | None, str]],
    single: bool,
    repo: Repo,
    dockerfiles_under: int,
) -> None:
    """Sets the image's name (and variant) from the specs, or a placeholder and why."""
    stem = dockerfile_stem(image.path)
    keys = {_slug(_leaf(image.folder, repo)), _slug(_leaf(image.context, repo))}
    if stem:
        keys.add(_slug(stem))
    fits: dict[tuple[str, str | None], list[tuple[int, str]]] = {}
    for name, tag, spec_file in named:
        leaf = _slug(name.rsplit("/", 1)[-1])
        tag_slug = _slug(tag) if tag else None
        if tag_slug and (f"{leaf}-{tag_slug}" in keys or tag_slug in keys):
            variant: str | None = tag
        elif leaf in keys:
            variant = None
        else:
            continue
        where = (_distance(image.folder, spec_file), spec_file)
        fits.setdefault((normalize_repository(name), variant), []).append(where)
        fits[(normalize_repository(name), variant)].sort()
    if fits:
        nearest = min(places[0][0] for places in fits.values())
        best = {k: v for k, v in fits.items() if v[0][0] == nearest}
        repositories = {k[0] for k in best}
        if len(repositories) == 1:
            (repository,) = repositories
            variants = {k[1] for k in best}
            image.name = _written(repository, named)
            image.variant = variants.pop() if len(variants) == 1 else None
            image.sure = True
            return
        listed = ", ".join(f"{r} ({v[0][1]})" for (r, _), v in sorted(best.items()))
        image.comments.append(f"specs name different images that fit: {listed}; keep the right one")
        image.name = f"{DEFAULT_REGISTRY}/{PLACEHOLDER_NAMESPACE}/{sorted(keys)[0]}"
        return
    # No image is named after it: the one image the specs in its folder name, when it is
    # the only Dockerfile there; or the one image of all specs for the only Dockerfile.
    below = {
        normalize_repository(n)
        for n, _, f in named
        if image.folder == "." or f.startswith(image.folder + "/")
    }
    everywhere = {normalize_repository(n) for n, _, _ in named}
    for choice, allowed in ((below, dockerfiles_under == 1), (everywhere, single)):
        if allowed and len(choice) == 1:
            image.name = _written(choice.pop(), named)
            image.sure = True
            return
    leaf = _slug(stem or _leaf(image.folder, repo))
    image.name = f"{DEFAULT_REGISTRY}/{PLACEHOLDER_NAMESPACE}/{leaf}"
    image.comments.append(
        f"no pipeline spec names an image after {image.path}'s folder or name: "
        "set the repository it is pushed to"
    )


def _written(repository: str, named: list[tuple[str, str | None, str]]) -> str:
    """The repository as the specs write it (pipelines match it either way)."""
    for name, _, _ in named:
        if normalize_repository(name) == repository:
            return name
    return repository


def _unique(images: list[_Image]) -> None:
    """No two images with one name: the variants the specs name tell Dockerfiles of one
    repository apart; where they cannot, the later ones get a placeholder and why."""
    per_repository: dict[str, int] = {}
    for image in images:
        repository = normalize_repository(image.name)
        per_repository[repository] = per_repository.get(repository, 0) + 1
    for image in images:
        if per_repository[normalize_repository(image.name)] == 1:
            image.variant = None  # alone, it runs whatever tag the specs name
    taken: dict[tuple[str, str | None], _Image] = {}
    for image in images:
        key = (normalize_repository(image.name), image.variant)
        other = taken.get(key)
        if other is None:
            taken[key] = image
            continue
        stem = dockerfile_stem(image.path) or posixpath.basename(image.folder) or "image"
        base = f"{DEFAULT_REGISTRY}/{PLACEHOLDER_NAMESPACE}/{_slug(stem)}"
        candidate, n = base, 2
        while (normalize_repository(candidate), None) in taken:
            candidate, n = f"{base}-{n}", n + 1
        image.comments.append(
            f"{other.path} also builds {image.name}"
            + (f":{image.variant}" if image.variant else "")
            + ": name this one"
        )
        image.name, image.variant, image.sure = candidate, None, False
        taken[(normalize_repository(candidate), None)] = image


# -- the specs --------------------------------------------------------------------------


@dataclass
class _Specs:
    pipelines: list[Pipeline]  # of the files that can be included
    includable: list[str]  # spec files every document of which is a spec
    unusable: dict[str, str]  # spec-looking files that cannot be included, and why


def _specs(source: WorkingTreeSource, config: Config) -> _Specs:
    pipelines: list[Pipeline] = []
    includable: list[str] = []
    unusable: dict[str, str] = {}
    project = config.pachyderm.project
    for path in source.paths:
        if not path.endswith(SPEC_SUFFIXES):
            continue
        data = source.read(path)
        if data is None or not maybe_spec(data):
            continue
        try:
            found = parse_file(path, data, project, strict=False)
        except InputError as exc:
            if b'"pipeline"' in data or b"pipeline:" in data:
                unusable[path] = exc.message
            continue
        if not found:
            continue
        try:
            parse_file(path, data, project, strict=True)
        except InputError as exc:
            unusable[path] = exc.message
            continue
        includable.append(path)
        pipelines.extend(found)
    return _Specs(pipelines, includable, unusable)


def _include_lines(source: WorkingTreeSource, specs: _Specs, chosen_out: list[str]) -> list[str]:
    """include as one glob per folder and suffix (with exclude for the other files the glob
    would name), or the files themselves where a folder holds more other files than specs."""
    groups: dict[tuple[str, str], list[str]] = {}
    for path in specs.includable:
        folder = posixpath.dirname(path)
        suffix = posixpath.splitext(path)[1]
        groups.setdefault((folder, suffix), []).append(path)
    include: list[str] = []
    exclude: list[str] = list(chosen_out)
    usable = set(specs.includable)
    for (folder, suffix), files in sorted(groups.items()):
        pattern = f"{folder}/*{suffix}" if folder else f"*{suffix}"
        others = [p for p in source.paths if globs.matches(p, (pattern,)) and p not in usable]
        if len(others) > len(files):
            include.extend(files)
        else:
            include.append(pattern)
            exclude.extend(others)
    exclude = sorted(dict.fromkeys(exclude))
    lines = ["", "[pipelines]", "include = [" + ", ".join(_quote(p) for p in include) + "]"]
    if exclude:
        lines.append("exclude = [" + ", ".join(_quote(p) for p in exclude) + "]")
    return lines


# -- the configuration ------------------------------------------------------------------


def discover_config(repo: Repo, env: Mapping[str, str]) -> tuple[str, list[str]]:
    source = WorkingTreeSource(repo)
    defaults = env_config(env)
    specs = _specs(source, defaults)
    unique, duplicates = split_duplicates(specs.pipelines)
    dockerfiles = [p for p in source.paths if is_dockerfile(p)]

    images: list[_Image] = []
    for path in dockerfiles:
        context, error = _context_of(path, source)
        image = _Image(path, context)
        if context != image.folder:
            image.comments.append(
                f"context: {path} copies files found from here, not from its own folder"
            )
        if error:
            image.comments.append(f"cannot be built from git yet: {error}")
        images.append(image)
    named = _spec_images(specs.pipelines)
    for image in images:
        under = sum(
            1
            for other in images
            if image.folder == "." or other.path.startswith(image.folder + "/")
        )
        _name_image(image, named, len(images) == 1, repo, under)
    _unique(images)

    # Alternative specs of one pipeline: the first of each group (preferring one whose
    # image is built here) stays in, the others are excluded; swapping is one edit.
    built = [ImageConfig(i.name, i.context, i.dockerfile, variant=i.variant) for i in images]
    chosen_out: list[str] = []
    duplicate_comments: list[str] = []
    for group in duplicates:
        ranked = sorted(
            group,
            key=lambda p: (
                p.image is None or matching_image(p.image, built) is None,
                posixpath.basename(p.spec_file).split(".")[0] != p.name,  # edges.json: edges
                p.spec_file,
            ),
        )
        keep, rest = ranked[0], ranked[1:]
        chosen_out.extend(p.spec_file for p in rest if p.spec_file != keep.spec_file)
        duplicate_comments.append(
            f"# pipeline {keep.project}/{keep.name} is defined in "
            + ", ".join(p.where for p in ranked)
            + f": {keep.spec_file} is used (to use another, exclude {keep.spec_file} in its place)"
        )

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
    for image in images:
        lines += ["", "[[image]]"]
        lines += [f"# {comment}" for comment in image.comments]
        lines += [
            f"name = {_quote(image.name)}",
            f"context = {_quote(image.context)}",
            f"dockerfile = {_quote(image.dockerfile)}",
        ]
        if image.variant:
            lines.append(f"variant = {_quote(image.variant)}  # the tag the specs name")
        label = image.name + (f":{image.variant}" if image.variant else "")
        summary.append(f"image {label}: {image.path}" + ("" if image.sure else " (name to be set)"))
    if specs.includable or specs.unusable:
        pipeline_lines = _include_lines(source, specs, chosen_out)
        # Comments go under the table's header, where they are read with it.
        lines += pipeline_lines[:2] + duplicate_comments + pipeline_lines[2:]
        for why in (specs.unusable[path] for path in sorted(specs.unusable)):
            lines.append(f"# left out: {why}")
        used = [p for p in unique if p.spec_file not in chosen_out]
        used += [p for g in duplicates for p in g if p.spec_file not in chosen_out]
        summary += [f"pipeline {p.project}/{p.name}: {p.where}" for p in used]
    template_lines, template_summary = _templates(source)
    lines += template_lines
    summary += template_summary
    text = "\n".join(lines) + "\n"
    _check(text, source, env)
    return text, summary


def _check(text: str, source: WorkingTreeSource, env: Mapping[str, str]) -> None:
    """The configuration written must load as `plan` loads it (images that cannot be
    built from git yet are reported by plan, and are no error here)."""
    try:
        config = parse("pachhook.toml", text, env)
        load_workspace(source, env, config=config)
    except InputError as exc:
        raise PachhookError(
            f"init: the configuration found does not load ({exc.message}); "
            "write pachhook.toml by hand (see the README), and please report this"
        ) from None


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
