"""Pipeline specs: find, parse, normalise and rewrite them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, NamedTuple

from pachhook import globs
from pachhook.config import Config, normalize_repository, reference_problem
from pachhook.errors import InputError, located

SPEC_SUFFIXES = (".json", ".yaml", ".yml")
# What pachhook writes into metadata.annotations of every spec it applies.
ANNOTATION_PREFIX = "pachhook.io/"
ANNOTATION_DIGEST = "pachhook.io/spec-digest"
ANNOTATION_COMMIT = "pachhook.io/source-commit"
# Which repository manages the pipeline (its remote URL without credentials) and from
# which spec file: what `run --prune` goes by.
ANNOTATION_REPOSITORY = "pachhook.io/repository"
ANNOTATION_SPEC_FILE = "pachhook.io/spec-file"
# The pipeline version the write makes: a stored version that differs was written by
# someone else (pachctl edit pipeline keeps every annotation).
ANNOTATION_VERSION = "pachhook.io/version"


@lru_cache(maxsize=4096)
def snake(key: str) -> str:
    """pachctl reads specs with protojson, which takes proto names and camelCase alike."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()


def field(doc: Any, *names: str) -> Any:
    """The value at a path of field names, whichever of the two spellings the spec uses."""
    for name in names:
        if not isinstance(doc, dict):
            return None
        for key, value in doc.items():
            if snake(key) == name:
                doc = value
                break
        else:
            return None
    return doc


class Pipeline(NamedTuple):
    project: str
    name: str
    spec_file: str
    line: int | None  # where the document starts, for messages
    image: str | None  # transform.image as written
    inputs: tuple[tuple[str, str], ...]  # (project, repo) of every input repo pachd must have
    document: dict[str, Any]  # the spec as written
    # A spec evaluated from a Jsonnet template: the instance, as messages name it
    # (`templates/edges.jsonnet (suffix=1)`), and every file the evaluation read.
    origin: str | None = None
    made_from: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.project, self.name)

    @property
    def where(self) -> str:
        return self.origin or located(self.spec_file, self.line)

    @property
    def files(self) -> tuple[str, ...]:
        """The files whose change can change this spec."""
        return self.made_from or (self.spec_file,)

    @property
    def image_repository(self) -> str | None:
        return normalize_repository(self.image) if self.image else None

    @property
    def canonical(self) -> str:
        """The document in one spelling and key order: equal texts, equal specs."""
        import json

        return json.dumps(_snake_keys(self.document), sort_keys=True, separators=(",", ":"))


def _snake_keys(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {snake(k): _snake_keys(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_snake_keys(v) for v in doc]
    return doc


def looks_like_spec(doc: Any) -> bool:
    return isinstance(field(doc, "pipeline", "name"), str) and isinstance(
        field(doc, "transform"), dict
    )


def input_repos(node: Any, project: str) -> Iterator[tuple[str, str]]:
    """Input repos of every input kind; a cron input's repo is made by pachd itself."""
    if not isinstance(node, dict):
        return
    pfs = field(node, "pfs")
    if isinstance(pfs, dict) and isinstance(field(pfs, "repo"), str):
        yield (field(pfs, "project") or project, field(pfs, "repo"))
    for kind in ("cross", "union", "join", "group"):
        children = field(node, kind)
        if isinstance(children, list):
            for child in children:
                yield from input_repos(child, project)


MAX_SPEC_BYTES = 1 << 20  # a spec file larger than this is refused (specs are a few KiB)
MAX_NODES = 100_000  # values in one document once YAML aliases are expanded
MAX_DEPTH = 64  # levels of nesting in one document (real specs use under ten)
JSON_TYPES = (str, int, float, bool, type(None), list, dict)


def _documents(path: str, text: str) -> Iterator[tuple[int, Any]]:
    """(line, document) for each document of a JSON or YAML file."""
    if path.endswith(".json"):
        documents = _json_documents(path, text)
    else:
        documents = _yaml_documents(path, text)
    for line, doc in documents:
        _check_shape(path, line, doc)
        yield line, doc


_DOCUMENT_MARKER = re.compile(r"^---[ \t]*(?:#.*)?\r?$", re.M)


def _json_documents(path: str, text: str) -> Iterator[tuple[int, Any]]:
    # pachctl 2.x decodes a spec file as a stream of YAML documents, so JSON objects
    # separated by `---` lines are several specs (Pachyderm's own examples do this).
    start = 0
    for marker in _DOCUMENT_MARKER.finditer(text):
        yield from _json_values(path, text, start, marker.start())
        start = marker.end()
    yield from _json_values(path, text, start, len(text))


def _json_values(path: str, text: str, pos: int, stop: int) -> Iterator[tuple[int, Any]]:
    import json

    # pachctl reads a stream of JSON values: one object, an array, or several objects in a row.
    decoder = json.JSONDecoder(object_pairs_hook=_unique_keys)
    text = text[:stop]
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return
        line = text.count("\n", 0, pos) + 1
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"{located(path, exc.lineno)}: not valid JSON ({exc.msg}, column {exc.colno}); fix the spec"
            ) from None
        except _DuplicateKey as exc:
            raise InputError(
                f"{located(path, line)}: the key {exc.key!r} appears twice in one object; keep one"
            ) from None
        except RecursionError:
            raise InputError(_too_deep(path, line)) from None
        if isinstance(value, list):
            for item in value:
                yield line, item
        else:
            yield line, value
        pos = end


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _yaml_documents(path: str, text: str) -> Iterator[tuple[int, Any]]:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        for node in yaml.compose_all(text, Loader=loader):
            if node is None:
                continue
            line = node.start_mark.line + 1
            _check_nodes(path, node)
            yield line, _construct(node, loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise InputError(
            f"{located(path, line)}: not valid YAML ({exc.problem}); fix the spec"
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc}); fix the spec") from None
    except RecursionError:
        raise InputError(_too_deep(path, None)) from None


def _check_nodes(path: str, root: Any) -> None:
    """Before a YAML document is built: its size with every alias expanded is bounded (a
    few hundred bytes of nested aliases would otherwise expand to gigabytes), no alias
    contains itself, and no mapping names a key twice."""
    import yaml

    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            if size[key] > MAX_NODES:
                raise InputError(
                    f"{located(path, node.start_mark.line + 1)}: this document expands to more "
                    f"than {MAX_NODES} values through its aliases (&anchor/*alias); write the "
                    "spec out without nesting aliases"
                )
            continue
        if key in size:
            continue
        if key in on_path:
            raise InputError(
                f"{located(path, node.start_mark.line + 1)}: an alias refers to a value that "
                "contains it; a spec cannot be infinite"
            )
        if isinstance(node, yaml.MappingNode):
            _check_keys(path, node)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in size)


def _children(node: Any) -> list[Any]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _check_keys(path: str, node: Any) -> None:
    import yaml

    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
            continue
        if (key.tag, key.value) in seen:
            raise InputError(
                f"{located(path, key.start_mark.line + 1)}: the key {key.value!r} appears twice "
                "in one mapping; keep one"
            )
        seen.add((key.tag, key.value))


def _check_shape(path: str, line: int, doc: Any) -> None:
    """A document is JSON data (strings as keys, JSON values), at most MAX_DEPTH deep."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InputError(_too_deep(path, line))
        if not isinstance(value, JSON_TYPES):
            raise InputError(
                f"{located(path, line)}: holds a {type(value).__name__} value, which a pipeline "
                "spec cannot hold; quote it to make it a string"
            )
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InputError(
                        f"{located(path, line)}: the key {key!r} is not a string; quote it"
                    )
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _too_deep(path: str, line: int | None) -> str:
    return (
        f"{located(path, line)}: nested more than {MAX_DEPTH} levels deep, which no pipeline "
        "spec needs; flatten it"
    )


def _construct(node: Any, loader: Any) -> Any:
    constructor = loader("")
    return constructor.construct_document(node)


def parse_file(path: str, data: bytes, default_project: str, *, strict: bool) -> list[Pipeline]:
    """The pipelines of one spec file. `strict`: every document must be a spec
    (the file was named in the configuration); otherwise other documents are passed over.

    Remembered by content, so a long-running watcher parses only the specs that changed;
    the documents are shared and never modified (`rewritten` works on a copy)."""
    return list(_parse_file(path, data, default_project, strict))


@lru_cache(maxsize=4096)
def _parse_file(path: str, data: bytes, default_project: str, strict: bool) -> tuple[Pipeline, ...]:
    if len(data) > MAX_SPEC_BYTES:
        raise InputError(
            f"{path}: {len(data)} bytes, more than a pipeline spec file may hold "
            f"({MAX_SPEC_BYTES}); split it, or leave it out of [pipelines] include"
        )
    text = data.decode("utf-8", errors="replace")
    pipelines = []
    for line, doc in _documents(path, text):
        if not looks_like_spec(doc):
            if strict:
                raise InputError(
                    f"{located(path, line)}: not a pipeline spec (needs pipeline.name and transform); "
                    "fix it or leave it out of [pipelines] include"
                )
            continue
        pipelines.append(_pipeline(located(path, line), path, line, doc, default_project))
    return tuple(pipelines)


def _pipeline(where: str, path: str, line: int | None, doc: Any, default_project: str) -> Pipeline:
    """One spec document as a pipeline, refused here where pachd would refuse it."""
    name = field(doc, "pipeline", "name")
    own = field(doc, "pipeline", "project", "name")
    project = own or default_project
    if not isinstance(project, str):
        raise InputError(f"{where}: pipeline.project.name must be a string, not {project!r}")
    # A default project pachd would refuse is the configuration's one error, said once for
    # it: every spec that inherits it is not told again (nor measured against it).
    judged = bool(own) or project_name_problem(default_project) is None
    problem = pipeline_name_problem(name, project if judged else None)
    if problem:
        raise InputError(f"{where}: pipeline {name!r}: {problem}; rename it")
    problem = project_name_problem(project) if judged else None
    if problem:
        raise InputError(f"{where}: project {project!r}: {problem}; fix pipeline.project.name")
    image = field(doc, "transform", "image")
    if image is not None and not isinstance(image, str):
        raise InputError(f"{where}: transform.image must be a string")
    problem = reference_problem(image) if image else None
    if problem:
        raise InputError(f"{where}: transform.image {image!r} is no image reference: {problem}")
    return Pipeline(
        project=project,
        name=name,
        spec_file=path,
        line=line,
        image=image,
        inputs=tuple(dict.fromkeys(input_repos(field(doc, "input"), project))),
        document=doc,
    )


def parse_documents(
    template: str,
    origin: str,
    made_from: tuple[str, ...],
    documents: list[Any],
    default_project: str,
) -> list[Pipeline]:
    """The pipelines of a template instance's result (its evaluated documents), parsed
    and checked as the documents of a spec file named in the configuration are."""
    pipelines = []
    for number, doc in enumerate(documents, 1):
        which = f"{origin}, spec {number} of {len(documents)}" if len(documents) > 1 else origin
        if not looks_like_spec(doc):
            raise InputError(
                f"{which}: the template returned something that is not a pipeline spec "
                "(needs pipeline.name and transform); fix the template or its args"
            )
        found = _pipeline(which, template, None, doc, default_project)
        pipelines.append(found._replace(origin=origin, made_from=made_from))
    return pipelines


# pachd's rules for names (pps/server/api_server.go, ancestry.ValidateName): letters,
# digits, '_' and '-', starting with a letter or digit; a pipeline's Kubernetes name
# (project-pipeline-v<version>) must fit in a DNS label.
NAME_CHARACTERS = re.compile(r"[a-zA-Z0-9_-]+")
MAX_PIPELINE_NAME = 51
MAX_PROJECT_NAME = 51
DNS_LABEL = 63


def pipeline_name_problem(name: str, project: str | None) -> str | None:
    """What pachd would refuse in a pipeline's name; None when nothing. The Kubernetes
    name's length is checked only with a `project`."""
    if not name:
        return "a pipeline needs a name"
    if not NAME_CHARACTERS.fullmatch(name):
        return "only letters, digits, '_' and '-' are allowed (no '/', '.' or blanks)"
    if not name[0].isalnum():
        return "it must start with a letter or a digit"
    if len(name) > MAX_PIPELINE_NAME:
        return f"{len(name)} characters, more than pachd's {MAX_PIPELINE_NAME}"
    if project is None:
        return None
    kubernetes = f"{project.replace('_', '-')}-{name.replace('_', '-')}-v99".lower()
    if len(kubernetes) > DNS_LABEL:
        return (
            f"with project {project!r} its Kubernetes name {kubernetes!r} is longer than "
            f"{DNS_LABEL} characters"
        )
    return None


def project_name_problem(project: str) -> str | None:
    """What pachd would refuse in a project's name; None when nothing."""
    if project == "default":
        return None
    if not project or not NAME_CHARACTERS.fullmatch(project):
        return "only letters, digits, '_' and '-' are allowed (no '/', '.' or blanks)"
    if not project[0].isalnum():
        return "it must start with a letter or a digit"
    if len(project) > MAX_PROJECT_NAME:
        return f"{len(project)} characters, more than pachd's {MAX_PROJECT_NAME}"
    return None


def is_spec_candidate(path: str, config: Config) -> bool:
    return spec_candidate(path, config.pipelines.include, config.pipelines.exclude)


def spec_candidate(path: str, include: tuple[str, ...] | None, exclude: tuple[str, ...]) -> bool:
    """Whether `path` may hold pipeline specs: named by `include` (else any JSON or YAML
    file), and not by `exclude`."""
    if include is None:
        candidate = path.endswith(SPEC_SUFFIXES)
    else:
        candidate = path in include or globs.matches(path, include)
    return candidate and not globs.matches(path, exclude)


def maybe_spec(data: bytes) -> bool:
    """A cheap first look before parsing a discovered file."""
    return b"transform" in data and b"pipeline" in data


def rewritten(pipeline: Pipeline, image: str | None, annotations: dict[str, str]) -> dict[str, Any]:
    """The spec with transform.image set (when given) and annotations added, in the
    spec's own spelling."""
    import copy

    doc = copy.deepcopy(pipeline.document)
    if image is not None:
        _set(_child(doc, "transform"), "image", image)
    metadata = _child(doc, "metadata")
    existing = _child(metadata, "annotations")
    existing.update(annotations)
    return doc


def _child(doc: dict[str, Any], name: str) -> dict[str, Any]:
    for key, value in doc.items():
        if snake(key) == name and isinstance(value, dict):
            return value
    doc[name] = {}
    return doc[name]


def _set(doc: dict[str, Any], name: str, value: Any) -> None:
    for key in list(doc):
        if snake(key) == name:
            doc[key] = value
            return
    doc[name] = value


# (id of a parsed document, image) -> (that document, its applied digest). Parsed
# documents are shared and never changed (`parse_file`), and the entry holds its document,
# so the id cannot be reused while the entry lives.
_APPLIED: dict[tuple[int, str | None], tuple[dict[str, Any], str]] = {}
APPLIED_KEPT = 8192


def applied_digest(pipeline: Pipeline, image: str | None) -> str:
    """`spec_digest(rewritten(pipeline, image, {}))`, without copying the whole document:
    only the objects on the way to what is set are new. The planner asks this of every
    pipeline it may apply, again once state is read: the answer is remembered."""
    key = (id(pipeline.document), image)
    known = _APPLIED.get(key)
    if known is not None and known[0] is pipeline.document:
        return known[1]
    digest = _applied_digest(pipeline, image)
    if len(_APPLIED) >= APPLIED_KEPT:
        _APPLIED.clear()
    _APPLIED[key] = (pipeline.document, digest)
    return digest


def _applied_digest(pipeline: Pipeline, image: str | None) -> str:
    doc = dict(pipeline.document)
    if image is not None:
        transform = dict(_child(doc, "transform"))
        _set(transform, "image", image)
        _replace(doc, "transform", transform)
    metadata = dict(_child(doc, "metadata"))
    _replace(metadata, "annotations", dict(_child(metadata, "annotations")))
    _replace(doc, "metadata", metadata)
    return spec_digest(doc)


def _replace(doc: dict[str, Any], name: str, value: dict[str, Any]) -> None:
    """Put `value` where `_child(doc, name)` found (or made) its object."""
    for key, old in doc.items():
        if snake(key) == name and isinstance(old, dict):
            doc[key] = value
            return
    doc[name] = value


def spec_digest(doc: dict[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(
        json.dumps(_snake_keys(doc), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
