"""Configuration: `pachhook.toml`, `[tool.pachhook]` in `pyproject.toml`, or the seed's variables."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from pachhook.errors import InputError, Problems, located

CONFIG_FILES = ("pachhook.toml", "pyproject.toml")  # read in this order: the first found wins
CONFIG_VARIABLE = "PACHHOOK_CONFIG"  # another config file (what --config sets)
TAG_POLICIES = ("digest", "git-sha")
BUILD_FAILURE_POLICIES = ("block", "warn")
COMMIT_HOOK_MODES = ("plan", "build", "off")
BUILDERS = ("auto", "buildkit", "classic")
CACHE_SOURCES = ("registry", "off")
# Variables pachhook reads its own credentials from: never handed to a build as a secret,
# since the repository (not the operator) names a build's secrets.
CREDENTIAL_VARIABLES = frozenset({"PACHYDERM_TOKEN", "DOCKERHUB_TOKEN", "DOCKERHUB_USERNAME"})


class BuildSecret(NamedTuple):
    """`--secret id=ID,env=VAR`: the value of VAR, mounted at /run/secrets/ID by BuildKit."""

    id: str
    env: str

    @property
    def spec(self) -> str:
        return f"id={self.id},env={self.env}"


ADD_URL_POLICIES = ("fixed", "check")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")  # Docker's tag grammar, kept short


class ImageConfig(NamedTuple):
    name: str  # what transform.image names, without tag
    context: str = "."  # repository-relative, posix
    dockerfile: str = "Dockerfile"  # as written: relative to the context
    target: str | None = None
    build_args: Mapping[str, str] = MappingProxyType({})
    platform: str | None = None
    builder: str = "auto"  # as configured: "auto", "buildkit" or "classic"
    cache_from: str = "off"  # "registry": reuse the layers of the image the cluster runs now
    secrets: tuple[BuildSecret, ...] = ()
    # The tag the specs name when several Dockerfiles build one repository
    # (`pachyderm/iris-train:python-svm`): pipelines naming that tag run this image,
    # and its tags start with it.
    variant: str | None = None
    add_urls: str = "fixed"  # what an ADD <url> means to the tag: see ADD_URL_POLICIES

    @property
    def dockerfile_path(self) -> str:
        """The Dockerfile, repository-relative (it may lie outside the context)."""
        return normalize(posixpath.join(self.context, self.dockerfile))

    @property
    def repository(self) -> str:
        return normalize_repository(self.name)

    @property
    def key(self) -> tuple[str, str | None]:
        """What tells two images apart: the repository, and the variant when there is one."""
        return (self.repository, self.variant)

    @property
    def label(self) -> str:
        """The image as people name it: `name`, or `name:variant`."""
        return f"{self.name}:{self.variant}" if self.variant else self.name


class BuildConfig(NamedTuple):
    """`[build]`: the defaults of every image."""

    builder: str = "auto"
    cache_from: str = "off"  # "registry" by default where CI is set


class PachydermConfig(NamedTuple):
    address: str | None = None
    project: str = "default"
    reprocess: bool = False


class TemplateConfig(NamedTuple):
    """One instance of a Jsonnet pipeline template, as `pachctl create pipeline --jsonnet
    FILE --arg K=V...` would make it."""

    file: str  # repository-relative, posix
    args: tuple[tuple[str, str], ...] = ()  # top-level arguments, strings, in config order
    name: str | None = None  # for messages
    line: int | None = None  # of its entry in the config file, for messages

    @property
    def label(self) -> str:
        """`templates/edges.jsonnet (suffix=1)`: how plans and messages name the instance."""
        if self.name:
            return f"{self.file} [{self.name}]"
        if not self.args:
            return self.file
        return f"{self.file} ({', '.join(f'{k}={v}' for k, v in self.args)})"


class PipelinesConfig(NamedTuple):
    include: tuple[str, ...] | None = None  # None: discover specs among tracked JSON/YAML files
    exclude: tuple[str, ...] = ()
    templates: tuple[TemplateConfig, ...] = ()
    template_timeout: float = 10.0  # seconds one template instance may take
    template_memory_mb: int = 512  # memory the Jsonnet evaluator may use


class HooksConfig(NamedTuple):
    deploy_branches: tuple[str, ...] | None = None  # None: the remote's default branch
    on_build_failure: str = "block"
    post_push_timeout: float = 120.0
    post_commit: str = "plan"  # what the post-commit and post-merge hooks do


class Config(NamedTuple):
    path: str | None  # the file it came from, None when from the environment alone
    tag_policy: str = "digest"
    jobs: int = 2
    pachyderm: PachydermConfig = PachydermConfig()
    images: tuple[ImageConfig, ...] = ()
    pipelines: PipelinesConfig = PipelinesConfig()
    hooks: HooksConfig = HooksConfig()
    build: BuildConfig = BuildConfig()


def normalize(path: str) -> str:
    """Repository-relative posix path; '.' for the root."""
    out = posixpath.normpath(path.replace("\\", "/")).lstrip("/") if path else "."
    return out or "."


# Docker's reference rules: docker/distribution reference.ParseNormalizedNamed.
DEFAULT_REGISTRY = "docker.io"
_LEGACY_REGISTRIES = {"index.docker.io", "registry-1.docker.io"}


def split_reference(ref: str) -> tuple[str, str | None, str | None]:
    """(repository as written, tag, digest) of an image reference."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest or None


def matching_image(reference: str, images: Sequence[ImageConfig]) -> int | None:
    """The index of the image a pipeline's `transform.image` runs (see ImageIndex)."""
    return ImageIndex(images).match(reference)


class ImageIndex:
    """Which image a pipeline's `transform.image` runs: same repository, and the variant
    its tag names when one of them has it; else the repository's image without a
    variant. None when pachhook builds no such image."""

    def __init__(self, images: Sequence[ImageConfig]) -> None:
        self._by_repository: dict[str, dict[str | None, int]] = {}
        for index, image in enumerate(images):
            variants = self._by_repository.setdefault(image.repository, {})
            variants.setdefault(image.variant, index)

    def match(self, reference: str) -> int | None:
        variants = self._by_repository.get(normalize_repository(reference))
        if not variants:
            return None
        tag = split_reference(reference.strip())[1]
        if tag is not None and tag in variants:
            return variants[tag]
        return variants.get(None)


# Docker's reference grammar (distribution/reference regexp.go), for names as written.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_REF_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = rf"(?P<name>{_NAME})(?::{_REF_TAG})?(?:@{_DIGEST})?"  # compiled when first used
NAME_TOTAL_LENGTH_MAX = 255


def reference_problem(ref: str) -> str | None:
    """What is wrong with an image reference by Docker's grammar; None when nothing is."""
    if not ref:
        return "it is empty"
    if ref != ref.strip() or any(c.isspace() for c in ref):
        return "it holds a blank"
    match = re.fullmatch(_REFERENCE, ref)
    if match is None:
        if re.fullmatch(_REFERENCE, ref.lower()) is not None:
            return "a repository name must be lower case"
        return "it is not a valid reference (registry/name[:tag][@digest])"
    if len(match.group("name")) > NAME_TOTAL_LENGTH_MAX:
        return f"the repository name is longer than {NAME_TOTAL_LENGTH_MAX} characters"
    first, sep, _ = match.group("name").partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost"):
        if any(c.isupper() for c in match.group("name")):
            return "a repository name must be lower case"
    elif any(c.isupper() for c in match.group("name")[len(first) :]):
        return "a repository name must be lower case"
    return None


def normalize_repository(ref: str) -> str:
    """The fully qualified repository of a reference: tag and digest stripped,
    `docker.io` added where no registry is named, `library/` for official images."""
    name = split_reference(ref.strip())[0]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_REGISTRY, name
    if domain in _LEGACY_REGISTRIES:
        domain = DEFAULT_REGISTRY
    if domain == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    return f"{domain}/{path}"


# -- schema ---------------------------------------------------------------------------

Check = Callable[[Any], bool]


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, str) for x in v.values())


def _one_of(*choices: str) -> Check:
    return lambda v: v in choices


# key -> (check, what a right value looks like)
TOP: dict[str, tuple[Check, str]] = {
    "tag_policy": (_one_of(*TAG_POLICIES), 'one of "digest", "git-sha"'),
    "jobs": (_is_positive_int, "a whole number of at least 1"),
}
PACHYDERM: dict[str, tuple[Check, str]] = {
    "address": (_is_str, 'a string such as "grpcs://pachd.example.com:443"'),
    "project": (_is_str, 'a string such as "default"'),
    "reprocess": (_is_bool, "true or false"),
}
IMAGE: dict[str, tuple[Check, str]] = {
    "name": (_is_str, 'a string such as "docker.io/acme/housing-prices"'),
    "context": (_is_str, 'a folder relative to the repository root, such as "."'),
    "dockerfile": (_is_str, 'a path relative to the context, such as "Dockerfile"'),
    "target": (_is_str, "the name of a build stage"),
    "build_args": (_is_str_map, 'a table of strings (quote numbers), such as { PY = "3.11" }'),
    "platform": (_is_str, 'a string such as "linux/amd64"'),
    "builder": (_one_of(*BUILDERS), 'one of "auto", "buildkit", "classic"'),
    "cache_from": (_one_of(*CACHE_SOURCES), 'one of "registry", "off"'),
    "secrets": (_is_str_list, 'a list such as ["id=pip,env=PIP_TOKEN"]'),
    "variant": (
        lambda v: isinstance(v, str) and _TAG.match(v) is not None,
        'the tag the specs name, such as "python-svm"',
    ),
    "add_urls": (_one_of(*ADD_URL_POLICIES), 'one of "fixed", "check"'),
}
BUILD: dict[str, tuple[Check, str]] = {
    "builder": (_one_of(*BUILDERS), 'one of "auto", "buildkit", "classic"'),
    "cache_from": (_one_of(*CACHE_SOURCES), 'one of "registry", "off"'),
}
PIPELINES: dict[str, tuple[Check, str]] = {
    "include": (_is_str_list, 'a list of glob patterns, such as ["pipelines/**/*.json"]'),
    "exclude": (_is_str_list, "a list of glob patterns"),
    "template": (lambda v: True, ""),  # checked entry by entry: TEMPLATE
    "template_timeout": (_is_number, "a number of seconds, such as 10"),
    "template_memory_mb": (
        lambda v: _is_positive_int(v) and v >= 128,
        "a whole number of megabytes, at least 128 (go-jsonnet's own runtime needs ~90)",
    ),
}
TEMPLATE: dict[str, tuple[Check, str]] = {
    "file": (_is_str, 'a path relative to the repository root, such as "templates/edges.jsonnet"'),
    "args": (
        lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        'a table of strings, such as { suffix = "1" } (pachctl passes --arg values as strings)',
    ),
    "name": (_is_str, 'a string such as "edges-1"'),
}
HOOKS: dict[str, tuple[Check, str]] = {
    "deploy_branches": (_is_str_list, 'a list of branch names, such as ["main"]'),
    "on_build_failure": (_one_of(*BUILD_FAILURE_POLICIES), 'one of "block", "warn"'),
    "post_push_timeout": (_is_number, "a number of seconds, such as 120"),
    "post_commit": (_one_of(*COMMIT_HOOK_MODES), 'one of "plan", "build", "off"'),
}
TABLES = {"pachyderm": PACHYDERM, "pipelines": PIPELINES, "hooks": HOOKS, "build": BUILD}


class _Reader:
    """Validates one config document, every message naming the file, line and key."""

    def __init__(self, path: str, text: str, prefix: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.prefix = prefix  # "" or "tool.pachhook."
        self.problems = Problems()  # every error of the file is reported at once

    def line_of(self, key: str) -> int | None:
        leaf = key.rsplit(".", 1)[-1].split("[")[0]
        pattern = re.compile(rf"^\s*\[*\s*([\w.\"-]*\.)?\"?{re.escape(leaf)}\"?\s*[=\]]")
        # A key of an array's entry (`pipelines.template[1].args`) is looked for from
        # that entry's header on.
        entry = re.match(r"^([\w.]+)\[(\d+)\]", key)
        start = (self.entry_line(entry[1], int(entry[2])) or 1) - 1 if entry else 0
        for number, line in enumerate(self.lines[start:], start + 1):
            if pattern.match(line):
                return number
        return None

    def entry_line(self, array: str, index: int) -> int | None:
        """The line of entry `index` of an array of tables (`[[pipelines.template]]`)."""
        header = re.compile(rf"^\s*\[\[\s*({re.escape(self.prefix)})?{re.escape(array)}\s*\]\]")
        lines = [n for n, line in enumerate(self.lines, 1) if header.match(line)]
        return lines[index] if index < len(lines) else None

    def fail(self, key: str, message: str) -> InputError:
        return InputError(f"{located(self.path, self.line_of(key))}: {self.prefix}{key}: {message}")

    def table(self, data: Any, schema: dict[str, tuple[Check, str]], where: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self.fail(where, "must be a table")
        for key, value in data.items():
            full = f"{where}.{key}" if where else key
            if key not in schema:
                import difflib

                close = difflib.get_close_matches(key, schema, n=1)
                hint = (
                    f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(schema)}"
                )
                self.problems.add(self.fail(full, f"unknown key; {hint}"))
                continue
            check, expected = schema[key]
            if not check(value):
                self.problems.add(self.fail(full, f"got {value!r}; expected {expected}"))
        return data


def parse(path: str, text: str, env: Mapping[str, str]) -> Config:
    """Parse one config file's text (`pachhook.toml` or `pyproject.toml`)."""
    if not text.strip():
        return _parsed(path, {}, text, env)
    import tomllib  # a hook with nothing to do may never need it

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else len(text.splitlines()) or None
        raise InputError(f"{located(path, line)}: not valid TOML ({exc}); fix the syntax") from None
    except RecursionError:
        raise InputError(
            f"{path}: nested too deeply to read (arrays or tables within each other hundreds "
            "of levels deep); flatten it"
        ) from None
    return _parsed(path, doc, text, env)


def _parsed(path: str, doc: dict[str, Any], text: str, env: Mapping[str, str]) -> Config:
    prefix = ""
    if path.endswith("pyproject.toml"):
        doc = doc.get("tool", {}).get("pachhook", {})
        prefix = "tool.pachhook."
    reader = _Reader(path, text, prefix)
    schema: dict[str, tuple[Check, str]] = {
        **TOP,
        "image": (lambda v: True, ""),
        **{name: (lambda v: True, "") for name in TABLES},
    }
    reader.table(doc, schema, "")
    sections = {
        name: reader.table(doc.get(name, {}), table, name) for name, table in TABLES.items()
    }

    raw_build = sections["build"]
    build = BuildConfig(
        builder=raw_build.get("builder", "auto"),
        cache_from=raw_build.get("cache_from", "registry" if in_ci(env) else "off"),
    )
    raw_images = doc.get("image", [])
    if not isinstance(raw_images, list):
        raise reader.fail("image", "must be an array of tables: write [[image]]")
    images = []
    for index, raw in enumerate(raw_images):
        where = f"image[{index}]"
        with reader.problems.gather():
            before = len(reader.problems.messages)
            reader.table(raw, IMAGE, where)
            if "name" not in raw:
                raise reader.fail(where, 'has no name; add name = "registry/repository"')
            if len(reader.problems.messages) == before:
                images.append(_image(raw, reader, where, build))
    images.extend(_env_images(env, build) if not raw_images else ())
    with reader.problems.gather():
        _check_unique(images, reader)
    pach = sections["pachyderm"]
    pipes = sections["pipelines"]
    hooks = sections["hooks"]
    templates: tuple[TemplateConfig, ...] = ()
    with reader.problems.gather():
        templates = _templates(pipes.get("template", []), reader)
    reader.problems.check()

    include = pipes.get("include")
    if include is None and env.get("PACHYDERM_PIPELINE_FILES"):
        include = env["PACHYDERM_PIPELINE_FILES"].split()
    deploy = hooks.get("deploy_branches")
    return Config(
        path=path,
        tag_policy=doc.get("tag_policy", "digest"),
        jobs=doc.get("jobs", 2),
        pachyderm=PachydermConfig(
            address=pach.get("address") or None,
            project=pach.get("project", "default"),
            reprocess=pach.get("reprocess", False),
        ),
        images=tuple(images),
        pipelines=PipelinesConfig(
            include=tuple(include) if include is not None else None,
            exclude=tuple(pipes.get("exclude", ())),
            templates=templates,
            template_timeout=float(pipes.get("template_timeout", 10)),
            template_memory_mb=pipes.get("template_memory_mb", 512),
        ),
        hooks=HooksConfig(
            deploy_branches=tuple(deploy) if deploy is not None else None,
            on_build_failure=hooks.get("on_build_failure", "block"),
            post_push_timeout=float(hooks.get("post_push_timeout", 120)),
            post_commit=hooks.get("post_commit", "plan"),
        ),
        build=build,
    )


def in_ci(env: Mapping[str, str]) -> bool:
    """Whether this runs in CI, as CI services say it: CI set (to anything but 0, false or
    no), or GITHUB_ACTIONS=true."""
    if env.get("GITHUB_ACTIONS", "").strip().lower() == "true":
        return True
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _image(raw: dict[str, Any], reader: _Reader, where: str, build: BuildConfig) -> ImageConfig:
    name = raw["name"]
    repo, tag, digest = split_reference(name)
    problem = reference_problem(name)
    if problem:
        raise reader.fail(f"{where}.name", f"{name!r} is no image name: {problem}; fix it")
    if tag or digest:
        raise reader.fail(
            f"{where}.name",
            f"{name!r} carries a tag or digest; give the repository alone ({repo!r})",
        )
    context = normalize(raw.get("context", "."))
    if context.startswith("../"):
        raise reader.fail(f"{where}.context", f"{context!r} is outside the repository")
    image = ImageConfig(
        name=name,
        context=context,
        dockerfile=raw.get("dockerfile", "Dockerfile"),
        target=raw.get("target"),
        build_args={k: str(v) for k, v in raw.get("build_args", {}).items()},
        platform=raw.get("platform"),
        builder=raw.get("builder", build.builder),
        cache_from=raw.get("cache_from", build.cache_from),
        secrets=tuple(_secret(spec, reader, f"{where}.secrets") for spec in raw.get("secrets", [])),
        variant=raw.get("variant"),
        add_urls=raw.get("add_urls", "fixed"),
    )
    if len({s.id for s in image.secrets}) < len(image.secrets):
        raise reader.fail(f"{where}.secrets", "two secrets share an id; give each its own")
    if image.dockerfile_path.startswith("../") or image.dockerfile_path == "..":
        raise reader.fail(f"{where}.dockerfile", f"{image.dockerfile!r} is outside the repository")
    return image


def _templates(raw: Any, reader: _Reader) -> tuple[TemplateConfig, ...]:
    if not isinstance(raw, list):
        raise reader.fail(
            "pipelines.template", "must be an array of tables: write [[pipelines.template]]"
        )
    found = []
    for index, entry in enumerate(raw):
        where = f"pipelines.template[{index}]"
        before = len(reader.problems.messages)
        reader.table(entry, TEMPLATE, where)
        if len(reader.problems.messages) != before:
            continue  # said already; the rest of it may not be what it should
        if "file" not in entry:
            raise reader.fail(where, 'has no file; add file = "templates/NAME.jsonnet"')
        file = normalize(entry["file"])
        if file == "." or file == ".." or file.startswith("../"):
            raise reader.fail(
                f"{where}.file",
                f"{entry['file']!r} is outside the repository; name a file of the repository",
            )
        args = tuple(entry.get("args", {}).items())
        line = reader.line_of(f"{where}.file")
        found.append(TemplateConfig(file, args, entry.get("name"), line))
    return tuple(found)


_SECRET_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _secret(spec: str, reader: _Reader, where: str) -> BuildSecret:
    """`id=ID,env=VAR` only: a file (`src=`) named by the repository could be any file of
    the machine that builds."""
    fields: dict[str, str] = {}
    for part in spec.split(","):
        key, eq, value = part.strip().partition("=")
        if not eq or key not in ("id", "env") or key in fields:
            raise reader.fail(where, f"{spec!r}: write id=ID,env=VARIABLE")
        fields[key] = value.strip()
    secret_id, variable = fields.get("id", ""), fields.get("env", "")
    if not _SECRET_ID.match(secret_id) or not _VARIABLE.match(variable):
        raise reader.fail(where, f"{spec!r}: write id=ID,env=VARIABLE (a variable's name)")
    if variable in CREDENTIAL_VARIABLES:
        raise reader.fail(
            where,
            f"{spec!r}: {variable} holds one of pachhook's own credentials and is never given "
            "to a build; put the build's secret in a variable of its own",
        )
    return BuildSecret(secret_id, variable)


def _env_images(env: Mapping[str, str], build: BuildConfig) -> list[ImageConfig]:
    name = env.get("DOCKER_IMAGE_TAG", "").strip()
    if not name:
        return []
    # The seed names the repository here; a tag, if any, is replaced by pachhook's own.
    return [
        ImageConfig(
            name=split_reference(name)[0], builder=build.builder, cache_from=build.cache_from
        )
    ]


def _check_unique(images: list[ImageConfig], reader: _Reader) -> None:
    seen: dict[tuple[str, str | None], int] = {}
    for index, image in enumerate(images):
        if image.key in seen:
            reader.problems.add(
                reader.fail(
                    f"image[{index}].name",
                    f"{image.label!r} is also image[{seen[image.key]}]; each image needs its own "
                    "name (or, for one repository built from several Dockerfiles, its own variant)",
                )
            )
        seen.setdefault(image.key, index)


def env_config(env: Mapping[str, str]) -> Config:
    return parse("(environment)", "", env)._replace(path=None)


def has_tool_table(pyproject_text: str) -> bool:
    """Whether a pyproject.toml holds pachhook's table: `[tool.pachhook]` or a sub-table,
    or the same data written as dotted keys (`pachhook.image = ...` under `[tool]`, or
    `tool.pachhook.jobs = 2` at the top)."""
    if re.search(r"^\s*\[\[?\s*tool\s*\.\s*[\"']?pachhook\b", pyproject_text, re.M):
        return True
    if "pachhook" not in pyproject_text:
        return False  # the common case, decided without parsing
    import tomllib

    try:
        tool = tomllib.loads(pyproject_text).get("tool")
    except (tomllib.TOMLDecodeError, RecursionError):
        return False  # not pachhook's to judge: the project's own tools will complain
    return isinstance(tool, dict) and "pachhook" in tool


class Found(NamedTuple):
    """The configuration file of a source, as text: `path` None when there is none."""

    path: str | None
    text: str


def find(read: Callable[[str], bytes | None], env: Mapping[str, str] | None = None) -> Found:
    """The config file of a source (`read` returns a repository file's bytes or None):
    the file PACHHOOK_CONFIG names (--config), else pachhook.toml, else a pyproject.toml
    with a [tool.pachhook] table."""
    chosen = (env or {}).get(CONFIG_VARIABLE, "").strip()
    if chosen:
        return _chosen(read, chosen)
    own, pyproject = CONFIG_FILES
    data = read(own)
    if data is not None:
        return Found(own, data.decode("utf-8", errors="replace"))
    data = read(pyproject)
    if data is not None:
        text = data.decode("utf-8", errors="replace")
        if has_tool_table(text):
            return Found(pyproject, text)
    return Found(None, "")


def _chosen(read: Callable[[str], bytes | None], given: str) -> Found:
    path = normalize(given)
    if given.startswith("/") or path == ".." or path.startswith("../"):
        raise InputError(
            f"--config {given}: give the config file's path relative to the repository root"
        )
    data = read(path)
    if data is None:
        raise InputError(
            f"--config {given}: no such file in the repository (from --config or "
            f"{CONFIG_VARIABLE}); give a path relative to the repository root"
        )
    return Found(path, data.decode("utf-8", errors="replace"))


def parse_found(found: Found, env: Mapping[str, str]) -> Config:
    if found.path is None:
        return env_config(env)
    return parse(found.path, found.text, env)


def load(read: Callable[[str], bytes | None], env: Mapping[str, str]) -> Config:
    """The config of a source: `read` returns a repository file's bytes or None."""
    return parse_found(find(read, env), env)


def files_read(config: Config) -> tuple[str, ...]:
    """The files whose change can change `config`: pyproject.toml does not count once
    pachhook.toml is there, since pachhook.toml wins; a file named by --config is all."""
    if config.path is not None and config.path not in CONFIG_FILES:
        return (config.path,)
    return CONFIG_FILES[:1] if config.path == CONFIG_FILES[0] else CONFIG_FILES
