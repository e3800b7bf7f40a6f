"""Discovery of images and pipeline specs at a source."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from pachhook import globs
from pachhook.config import Config, ImageConfig, load
from pachhook.docker import buildkit
from pachhook.docker import inputs as dockerfile
from pachhook.docker.digest import ImageState, digest_tag, input_digest
from pachhook.docker.parse import unbuildable
from pachhook.errors import InputError, Problems, located
from pachhook.pachyderm.specs import (
    MAX_SPEC_BYTES,
    Pipeline,
    is_spec_candidate,
    maybe_spec,
    parse_file,
    project_name_problem,
)
from pachhook.repo.source import Source, WorkingTreeSource

BUILD_OUTPUT_HINT = (
    "if it is a build output, build it first and run pachhook run --working-tree (which "
    "reads the git-ignored files a Dockerfile names), or commit it"
)


@dataclass(frozen=True)
class BrokenImage:
    """An image that cannot be built from the source: the rest of the plan goes on."""

    config: ImageConfig
    error: str  # one line: file and line, what is wrong, what to do


if TYPE_CHECKING:
    from pachhook.pachyderm.templates import Instance


@dataclass(frozen=True)
class Workspace:
    config: Config
    source_label: str
    commit: str | None
    images: tuple[ImageState, ...]
    pipelines: tuple[Pipeline, ...]  # the duplicated ones left out
    spec_files: frozenset[str]
    templates: tuple[Instance, ...] = ()  # evaluated [[pipelines.template]] instances
    broken: tuple[BrokenImage, ...] = ()
    # Pipelines defined in more than one place: each group, reported and not planned.
    duplicates: tuple[tuple[Pipeline, ...], ...] = ()


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
    image: ImageConfig,
    config: Config,
    source: Source,
    index: int,
    missing: frozenset[str],
    env: Mapping[str, str] | None = None,
) -> ImageState:
    _check_image(image, index, config, source)
    builder = _builder(image, config, index, env)
    return _state(image, config, source, missing, _analysis(image, source, builder))


class _Analyzed(NamedTuple):
    analysis: dockerfile.Analysis
    paths: list[str]  # what the analysis saw: git's files, and build outputs where needed
    outside_git: tuple[str, ...]
    builder: str  # whose rules the analysis followed: the builder that builds it


def _builder(image: ImageConfig, config: Config, index: int, env: Mapping[str, str] | None) -> str:
    builder = buildkit.resolve(image, os.environ if env is None else env)
    if image.secrets and builder != buildkit.BUILDKIT:
        raise InputError(
            f"{config.path or 'DOCKER_IMAGE_TAG'}: image[{index}].secrets: build secrets need "
            f"BuildKit, and image {image.name} is built with the classic builder; set "
            'builder = "buildkit" (or "auto" with a Docker CLI that builds with BuildKit)'
        )
    return builder


def _analysis(image: ImageConfig, source: Source, builder: str) -> _Analyzed:
    problem = unbuildable(source.read(image.dockerfile_path) or b"", image.dockerfile_path)
    if problem:
        raise InputError(f"{located(image.dockerfile_path, problem[0])}: {problem[1]}")
    paths = source.paths
    outside_git: tuple[str, ...] = ()
    try:
        analysis = dockerfile.analyze(
            image, paths, source.read, is_link=source.is_link, builder=builder
        )
    except InputError as exc:
        if not dockerfile.is_missing_source(exc.message):
            raise
        ignored = source.ignored(image.context) if isinstance(source, WorkingTreeSource) else []
        if not ignored:
            raise InputError(f"{exc.message}; {BUILD_OUTPUT_HINT}") from None
        # A build output made before the run: read the folder as docker build would,
        # with the git-ignored files its ignore file lets through.
        paths = sorted({*paths, *ignored})
        analysis = dockerfile.analyze(
            image, paths, source.read, is_link=source.is_link, builder=builder
        )
        outside_git = tuple(p for p in analysis.inputs if p not in source.path_set)
    return _Analyzed(analysis, paths, outside_git, builder)


def _state(
    image: ImageConfig, config: Config, source: Source, missing: frozenset[str], found: _Analyzed
) -> ImageState:
    analysis, paths, outside_git, builder = found
    inputs = analysis.inputs
    removed: tuple[str, ...] = ()
    context_missing = sorted(p for p in missing if _inside(p, image.context))
    if context_missing:
        # A deleted file changes the image when the Dockerfile would have copied it.
        universe = sorted(set(paths) | set(context_missing))
        with_missing = dockerfile.image_inputs(
            image, universe, source.read, is_link=source.is_link, builder=builder
        )
        removed = tuple(p for p in with_missing if p in missing)
    text = source.text(image.dockerfile_path) or ""
    digest = input_digest(image, inputs, source.content_entry, text, builder)
    if analysis.urls and image.add_urls == "check":
        from pachhook.docker.urls import url_versions

        # The tag follows what the server says of each URL's content.
        versions = url_versions(analysis.urls, image.dockerfile_path)
        digest = hashlib.sha256(f"{digest}\0{versions}".encode()).hexdigest()
    return ImageState(
        image,
        inputs,
        removed,
        digest,
        _tag(image, config, source, digest),
        builder,
        analysis.ignore_file,
        outside_git=outside_git,
        urls=analysis.urls,
    )


def _tag(image: ImageConfig, config: Config, source: Source, digest: str) -> str:
    """Policy `git-sha`: the last commit that touched the image's context, Dockerfile or the
    configuration (the folder rather than the inputs, so that a commit deleting an input
    counts too). The working tree has no such commit: it keeps the digest tag."""
    if config.tag_policy != "git-sha":
        return digest_tag(digest, image.variant)
    paths = [image.context, image.dockerfile_path, *([config.path] if config.path else [])]
    commit = source.last_commit_touching(paths)
    if commit is None:
        return digest_tag(digest, image.variant)
    return f"{image.variant}-{commit}" if image.variant else commit


def _inside(path: str, folder: str) -> bool:
    return folder == "." or path.startswith(folder + "/")


def pipelines_at(
    source: Source,
    config: Config,
    paths: Iterable[str] | None = None,
    problems: Problems | None = None,
) -> list[Pipeline]:
    """The pipeline specs of `source` (or of just `paths`, where they are spec files).
    With `problems`, a bad file is recorded there and the others are still read."""
    own = problems is None
    problems = Problems() if problems is None else problems
    strict = config.pipelines.include is not None
    candidates = [
        p for p in (source.paths if paths is None else paths) if is_spec_candidate(p, config)
    ]
    if strict and paths is None:
        with problems.gather():
            _check_includes(config, candidates, source.paths)
    found: list[Pipeline] = []
    for path in candidates:
        data = source.read(path)
        if data is None or (not strict and not (len(data) <= MAX_SPEC_BYTES and maybe_spec(data))):
            continue  # discovery passes over data files, however large
        try:
            found.extend(parse_file(path, data, config.pachyderm.project, strict=strict))
        except InputError as exc:
            if strict or _looks_specific(data):
                problems.add(exc)
    if own:
        problems.check()
    return found


def _looks_specific(data: bytes) -> bool:
    # An unparsable file found by discovery is only reported when it names the spec's fields.
    return b'"pipeline"' in data or b"\npipeline:" in data or data.startswith(b"pipeline:")


def _check_includes(config: Config, candidates: list[str], paths: list[str]) -> None:
    """Every include pattern names a file; one whose files are all excluded names them
    too (that is how a file named by include is left out)."""
    problems = Problems()
    for pattern in config.pipelines.include or ():
        if any(p == pattern or globs.matches(p, (pattern,)) for p in candidates):
            continue
        # Rare: look among every file, the excluded ones too.
        if any(p == pattern or globs.matches(p, (pattern,)) for p in paths):
            continue
        where = config.path or "PACHYDERM_PIPELINE_FILES"
        problems.add(
            InputError(
                f"{where}: pipelines.include: {pattern!r} matches no file; fix the pattern "
                "or the path"
            )
        )
    problems.check()


def split_duplicates(
    pipelines: Iterable[Pipeline],
) -> tuple[list[Pipeline], list[tuple[Pipeline, ...]]]:
    """(pipelines defined once, groups of pipelines defined more than once)."""
    groups: dict[tuple[str, str], list[Pipeline]] = {}
    for pipeline in pipelines:
        groups.setdefault(pipeline.key, []).append(pipeline)
    unique = [group[0] for group in groups.values() if len(group) == 1]
    return unique, [tuple(group) for group in groups.values() if len(group) > 1]


def duplicate_line(group: tuple[Pipeline, ...]) -> str:
    first = group[0]
    places = ", ".join(p.origin or p.where for p in group)
    if any(p.origin for p in group):
        # Templated instances are not files to exclude: their config entries are the choice.
        files = ", ".join(
            f'"{f}"' for f in dict.fromkeys(p.spec_file for p in group if not p.origin)
        )
        choose = "drop one of its [[pipelines.template]] instances" + (
            f", or exclude [{files}] in [pipelines] exclude" if files else ""
        )
    else:
        others = ", ".join(f'"{p.spec_file}"' for p in group[1:] if p.spec_file != first.spec_file)
        choose = (
            f"choose one with [pipelines] exclude = [{others}]"
            if others
            else "rename one of them (both are in one file)"
        )
    return (
        f"pipeline {first.project}/{first.name} is defined {len(group)} times ({places}); "
        f"it is left out of the plan: {choose}"
    )


def load_workspace(
    source: Source,
    env: Mapping[str, str],
    *,
    missing: frozenset[str] = frozenset(),
    config: Config | None = None,
    on_images: Callable[[tuple[ImageState, ...]], None] | None = None,
) -> Workspace:
    """Everything pachhook knows of a source. `missing`: changed paths the source lacks;
    `on_images`: told the images before the specs are read."""
    config = config or config_of(source, env)
    problems = Problems()
    with problems.gather():
        check_config(config)
    with problems.gather():
        check_unmerged(source, config)
    analyzed: list[tuple[ImageConfig, _Analyzed]] = []
    broken: list[BrokenImage] = []
    for index, image in enumerate(config.images):
        with problems.gather():
            _check_image(image, index, config, source)
            builder = _builder(image, config, index, env)
            try:
                analyzed.append((image, _analysis(image, source, builder)))
            except InputError as exc:
                if not dockerfile.is_missing_source(exc.message):
                    raise  # a Dockerfile its builder refuses is bad input, as a bad config is
                # A source that is not in this source (a build output, a wildcard that
                # matches nothing yet): the image cannot be built from it, and that does
                # not stop the others.
                broken.append(BrokenImage(image, exc.message))
    # The checkout rules of every input in one batch, before any digest asks for one.
    source.checkout_rules(sorted({p for _, found in analyzed for p in found.analysis.inputs}))
    images: list[ImageState] = []
    for image, found in analyzed:
        try:
            images.append(_state(image, config, source, missing, found))
        except InputError as exc:
            broken.append(BrokenImage(image, exc.message))
    if on_images is not None:
        on_images(tuple(images))
    pipelines = pipelines_at(source, config, problems=problems)
    instances: list[Instance] = []
    with problems.gather():
        instances = template_instances(source, config)
        pipelines += templated_pipelines(instances, config)
    problems.check()
    unique, duplicates = split_duplicates(pipelines)
    return Workspace(
        config=config,
        source_label=source.label,
        commit=source.commit,
        images=tuple(images),
        pipelines=tuple(unique),
        spec_files=frozenset(p.spec_file for p in pipelines),
        templates=tuple(instances),
        broken=tuple(broken),
        duplicates=tuple(duplicates),
    )


def template_instances(source: Source, config: Config) -> list[Instance]:
    """The [[pipelines.template]] instances at `source` (the Jsonnet code is loaded only
    when there are some)."""
    if not config.pipelines.templates:
        return []
    from pachhook.pachyderm.templates import instantiate

    return instantiate(source, config)


def templated_pipelines(instances: Iterable[Instance], config: Config) -> list[Pipeline]:
    return [p for i in instances for p in i.pipelines(config.pachyderm.project)]
