"""Configuration: `pachhook.toml`, `[tool.pachhook]` in `pyproject.toml`, or the seed's variables."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from pachhook.errors import InputError, located

CONFIG_FILES = ("pachhook.toml", "pyproject.toml")  # read in this order: the first found wins
TAG_POLICIES = ("digest", "git-sha")
BUILD_FAILURE_POLICIES = ("block", "warn")
COMMIT_HOOK_MODES = ("plan", "build", "off")


class ImageConfig(NamedTuple):
    name: str  # what transform.image names, without tag
    context: str = "."  # repository-relative, posix
    dockerfile: str = "Dockerfile"  # as written: relative to the context
    target: str | None = None
    build_args: Mapping[str, str] = MappingProxyType({})
    platform: str | None = None

    @property
    def dockerfile_path(self) -> str:
        """The Dockerfile, repository-relative (it may lie outside the context)."""
        return normalize(posixpath.join(self.context, self.dockerfile))

    @property
    def repository(self) -> str:
        return normalize_repository(self.name)


class PachydermConfig(NamedTuple):
    address: str | None = None
    project: str = "default"
    reprocess: bool = False


class PipelinesConfig(NamedTuple):
    include: tuple[str, ...] | None = None  # None: discover specs among tracked JSON/YAML files
    exclude: tuple[str, ...] = ()


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


# Docker's reference grammar (distribution/reference regexp.go), for names as written.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?")
NAME_TOTAL_LENGTH_MAX = 255


def reference_problem(ref: str) -> str | None:
    """What is wrong with an image reference by Docker's grammar; None when nothing is."""
    if not ref:
        return "it is empty"
    if ref != ref.strip() or any(c.isspace() for c in ref):
        return "it holds a blank"
    match = _REFERENCE.fullmatch(ref)
    if match is None:
        if _REFERENCE.fullmatch(ref.lower()) is not None:
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
}
PIPELINES: dict[str, tuple[Check, str]] = {
    "include": (_is_str_list, 'a list of glob patterns, such as ["pipelines/**/*.json"]'),
    "exclude": (_is_str_list, "a list of glob patterns"),
}
HOOKS: dict[str, tuple[Check, str]] = {
    "deploy_branches": (_is_str_list, 'a list of branch names, such as ["main"]'),
    "on_build_failure": (_one_of(*BUILD_FAILURE_POLICIES), 'one of "block", "warn"'),
    "post_push_timeout": (_is_number, "a number of seconds, such as 120"),
    "post_commit": (_one_of(*COMMIT_HOOK_MODES), 'one of "plan", "build", "off"'),
}
TABLES = {"pachyderm": PACHYDERM, "pipelines": PIPELINES, "hooks": HOOKS}


class _Reader:
    """Validates one config document, every message naming the file, line and key."""

    def __init__(self, path: str, text: str, prefix: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.prefix = prefix  # "" or "tool.pachhook."

    def line_of(self, key: str) -> int | None:
        leaf = key.rsplit(".", 1)[-1].split("[")[0]
        pattern = re.compile(rf"^\s*\[*\s*([\w.\"-]*\.)?\"?{re.escape(leaf)}\"?\s*[=\]]")
        for number, line in enumerate(self.lines, 1):
            if pattern.match(line):
                return number
        return None

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
                raise self.fail(full, f"unknown key; {hint}")
            check, expected = schema[key]
            if not check(value):
                raise self.fail(full, f"got {value!r}; expected {expected}")
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

    raw_images = doc.get("image", [])
    if not isinstance(raw_images, list):
        raise reader.fail("image", "must be an array of tables: write [[image]]")
    images = []
    for index, raw in enumerate(raw_images):
        where = f"image[{index}]"
        reader.table(raw, IMAGE, where)
        if "name" not in raw:
            raise reader.fail(where, 'has no name; add name = "registry/repository"')
        images.append(_image(raw, reader, where))
    images.extend(_env_images(env) if not images else ())
    _check_unique(images, reader)

    pach = sections["pachyderm"]
    pipes = sections["pipelines"]
    hooks = sections["hooks"]
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
        ),
        hooks=HooksConfig(
            deploy_branches=tuple(deploy) if deploy is not None else None,
            on_build_failure=hooks.get("on_build_failure", "block"),
            post_push_timeout=float(hooks.get("post_push_timeout", 120)),
            post_commit=hooks.get("post_commit", "plan"),
        ),
    )


def _image(raw: dict[str, Any], reader: _Reader, where: str) -> ImageConfig:
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
    )
    if image.dockerfile_path.startswith("../") or image.dockerfile_path == "..":
        raise reader.fail(f"{where}.dockerfile", f"{image.dockerfile!r} is outside the repository")
    return image


def _env_images(env: Mapping[str, str]) -> list[ImageConfig]:
    name = env.get("DOCKER_IMAGE_TAG", "").strip()
    if not name:
        return []
    # The seed names the repository here; a tag, if any, is replaced by pachhook's own.
    return [ImageConfig(name=split_reference(name)[0])]


def _check_unique(images: list[ImageConfig], reader: _Reader) -> None:
    seen: dict[str, int] = {}
    for index, image in enumerate(images):
        if image.repository in seen:
            raise reader.fail(
                f"image[{index}].name",
                f"{image.name!r} is also image[{seen[image.repository]}]; each image needs its own name",
            )
        seen[image.repository] = index


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


def find(read: Callable[[str], bytes | None]) -> Found:
    """The config file of a source (`read` returns a repository file's bytes or None):
    pachhook.toml, else a pyproject.toml with a [tool.pachhook] table."""
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


def parse_found(found: Found, env: Mapping[str, str]) -> Config:
    if found.path is None:
        return env_config(env)
    return parse(found.path, found.text, env)


def load(read: Callable[[str], bytes | None], env: Mapping[str, str]) -> Config:
    """The config of a source: `read` returns a repository file's bytes or None."""
    return parse_found(find(read), env)


def files_read(config: Config) -> tuple[str, ...]:
    """The files whose change can change `config`: pyproject.toml does not count once
    pachhook.toml is there, since pachhook.toml wins."""
    return CONFIG_FILES[:1] if config.path == CONFIG_FILES[0] else CONFIG_FILES
