"""Discovery of images and pipeline specs at a source."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pachhook import globs
from pachhook.config import Config, ImageConfig, load
from pachhook.docker import inputs as dockerfile
from pachhook.docker.digest import ImageState, digest_tag, input_digest
from pachhook.docker.parse import unbuildable
from pachhook.errors import InputError, located
from pachhook.pachyderm.specs import (
    MAX_SPEC_BYTES,
    Pipeline,
    is_spec_candidate,
    maybe_spec,
    parse_file,
    project_name_problem,
)
from pachhook.repo.source import Source


@dataclass(frozen=True)
class Workspace:
    config: Config
    source_label: str
    commit: str | None
    images: tuple[ImageState, ...]
    pipelines: tuple[Pipeline, ...]
    spec_files: frozenset[str]


def config_of(source: Source, env: Mapping[str, str]) -> Config:
    return load(source.read, env)


def check_config(config: Config) -> None:
    """What the configuration says that pachd or a connection would refuse, found before
    any work: the address's syntax and scheme, the default project's name."""
    where = config.path or "(environment)"
    if config.pachyderm.address:
        from pachhook.pachyderm.connection import parse_address

        parse_address(config.pachyderm.address, f"{where}: [pachyderm] address")
    problem = project_name_problem(config.pachyderm.project)
    if problem:
        raise InputError(
            f"{where}: [pachyderm] project {config.pachyderm.project!r}: {problem}; fix it"
        )


def check_unmerged(source: Source, config: Config) -> None:
    """A file in a merge conflict is never built from nor deployed: its content holds both
    sides and the conflict markers."""
    unmerged = source.unmerged
    if not unmerged:
        return
    contexts = ["" if i.context == "." else i.context + "/" for i in config.images]
    for path in sorted(unmerged):
        if (
            any(path.startswith(c) for c in contexts)
            or path in {i.dockerfile_path for i in config.images}
            or is_spec_candidate(path, config)
            or path == config.path
        ):
            raise InputError(
                f"{path}: in a merge conflict; resolve it and git add it, then run again"
            )


def _check_image(image: ImageConfig, index: int, config: Config, source: Source) -> None:
    where = config.path or "DOCKER_IMAGE_TAG"
    prefix = "" if image.context == "." else image.context + "/"
    if prefix and not any(p.startswith(prefix) for p in _from(source.paths, prefix)):
        raise InputError(
            f"{where}: image[{index}].context: folder {image.context!r} of image {image.name} "
            "has no files; fix the path (relative to the repository root)"
        )
    if image.dockerfile_path not in source.path_set:
        raise InputError(
            f"{where}: image[{index}].dockerfile: {image.dockerfile_path!r} of image {image.name} "
            "does not exist; fix the path (relative to the context) or add the Dockerfile"
        )


def _from(paths: list[str], prefix: str) -> Iterable[str]:
    """Paths that sort at or after `prefix` (bisect keeps the check cheap on big trees)."""
    import bisect

    start = bisect.bisect_left(paths, prefix)
    return paths[start : start + 1]


def image_state(
    image: ImageConfig, config: Config, source: Source, index: int, missing: frozenset[str]
) -> ImageState:
    _check_image(image, index, config, source)
    problem = unbuildable(source.read(image.dockerfile_path) or b"", image.dockerfile_path)
    if problem:
        raise InputError(f"{located(image.dockerfile_path, problem[0])}: {problem[1]}")
    inputs = dockerfile.image_inputs(image, source.paths, source.read, is_link=source.is_link)
    removed: tuple[str, ...] = ()
    context_missing = sorted(p for p in missing if _inside(p, image.context))
    if context_missing:
        # A deleted file changes the image when the Dockerfile would have copied it.
        universe = sorted(set(source.paths) | set(context_missing))
        with_missing = dockerfile.image_inputs(image, universe, source.read, is_link=source.is_link)
        removed = tuple(p for p in with_missing if p in missing)
    text = source.text(image.dockerfile_path) or ""
    digest = input_digest(image, inputs, source.entry, text)
    return ImageState(image, inputs, removed, digest, _tag(image, config, source, digest))


def _tag(image: ImageConfig, config: Config, source: Source, digest: str) -> str:
    """Policy `git-sha`: the last commit that touched the image's context, Dockerfile or the
    configuration (the folder rather than the inputs, so that a commit deleting an input
    counts too). The working tree has no such commit: it keeps the digest tag."""
    if config.tag_policy != "git-sha":
        return digest_tag(digest)
    paths = [image.context, image.dockerfile_path, *([config.path] if config.path else [])]
    return source.last_commit_touching(paths) or digest_tag(digest)


def _inside(path: str, folder: str) -> bool:
    return folder == "." or path.startswith(folder + "/")


def pipelines_at(
    source: Source, config: Config, paths: Iterable[str] | None = None
) -> list[Pipeline]:
    """The pipeline specs of `source` (or of just `paths`, where they are spec files)."""
    strict = config.pipelines.include is not None
    candidates = [
        p for p in (source.paths if paths is None else paths) if is_spec_candidate(p, config)
    ]
    if strict and paths is None:
        _check_includes(config, candidates)
    found: list[Pipeline] = []
    for path in candidates:
        data = source.read(path)
        if data is None or (not strict and not (len(data) <= MAX_SPEC_BYTES and maybe_spec(data))):
            continue  # discovery passes over data files, however large
        try:
            found.extend(parse_file(path, data, config.pachyderm.project, strict=strict))
        except InputError:
            if strict or _looks_specific(data):
                raise
    return found


def _looks_specific(data: bytes) -> bool:
    # An unparsable file found by discovery is only reported when it names the spec's fields.
    return b'"pipeline"' in data or b"\npipeline:" in data or data.startswith(b"pipeline:")


def _check_includes(config: Config, candidates: list[str]) -> None:
    for pattern in config.pipelines.include or ():
        if not any(p == pattern or globs.matches(p, (pattern,)) for p in candidates):
            where = config.path or "PACHYDERM_PIPELINE_FILES"
            raise InputError(
                f"{where}: pipelines.include: {pattern!r} matches no file; fix the pattern or the path"
            )


def check_unique(pipelines: Iterable[Pipeline]) -> None:
    seen: dict[tuple[str, str], Pipeline] = {}
    for pipeline in pipelines:
        other = seen.get(pipeline.key)
        if other is not None:
            raise InputError(
                f"{pipeline.where}: pipeline {pipeline.project}/{pipeline.name} is also defined at "
                f"{other.where}; rename one of them"
            )
        seen[pipeline.key] = pipeline


def load_workspace(
    source: Source,
    env: Mapping[str, str],
    *,
    missing: frozenset[str] = frozenset(),
    config: Config | None = None,
) -> Workspace:
    """Everything pachhook knows of a source. `missing`: changed paths the source lacks."""
    config = config or config_of(source, env)
    check_config(config)
    check_unmerged(source, config)
    images = tuple(
        image_state(img, config, source, i, missing) for i, img in enumerate(config.images)
    )
    pipelines = pipelines_at(source, config)
    check_unique(pipelines)
    return Workspace(
        config=config,
        source_label=source.label,
        commit=source.commit,
        images=images,
        pipelines=tuple(pipelines),
        spec_files=frozenset(p.spec_file for p in pipelines),
    )
