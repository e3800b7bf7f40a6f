"""What the cluster holds for a pipeline, and how it compares with other versions of it.

pachd stores a spec with its defaults filled in and its inputs normalised, so a stored
spec is never compared with a spec file. Two stored versions of one pipeline, though,
went through the same normalisation: pachhook compares the version it wrote (found by
its `pachhook.io/version` annotation) with the version the cluster runs now, and what
differs was changed outside pachhook.

No python_pachyderm here: the stored details are read as a dict with protobuf's own
JSON mapping, imported when a spec is first compared.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from pachhook.pachyderm.specs import (
    ANNOTATION_DIGEST,
    ANNOTATION_PREFIX,
    ANNOTATION_REPOSITORY,
    ANNOTATION_SPEC_FILE,
    ANNOTATION_VERSION,
    input_repos,
)

# Fields of the stored details that a spec sets (the fields CreatePipelineRequest and
# PipelineInfo.Details share), without `salt`: pachd makes one up when the spec has none.
SPEC_FIELDS = (
    "transform",
    "tf_job",
    "parallelism_spec",
    "input",
    "output_branch",
    "egress",
    "resource_requests",
    "resource_limits",
    "sidecar_resource_limits",
    "sidecar_resource_requests",
    "description",
    "service",
    "spout",
    "datum_set_spec",
    "datum_timeout",
    "job_timeout",
    "datum_tries",
    "scheduling_spec",
    "pod_spec",
    "pod_patch",
    "s3_out",
    "metadata",
    "reprocess_spec",
    "autoscaling",
    "tolerations",
    "determined",
)


class Stored(NamedTuple):
    """One version of a pipeline as the cluster stores it."""

    project: str
    name: str
    version: int
    annotations: Mapping[str, str]
    details: Any  # the stored PipelineInfo.Details message (`spec_of`); None when not read

    @property
    def key(self) -> tuple[str, str]:
        return (self.project, self.name)

    @property
    def digest(self) -> str | None:
        return self.annotations.get(ANNOTATION_DIGEST)

    @property
    def by_pachhook(self) -> bool:
        """pachhook wrote this version (its version annotation names this version)."""
        return self.annotations.get(ANNOTATION_VERSION) == str(self.version)

    @property
    def annotated(self) -> bool:
        """It carries pachhook's annotations (perhaps copied by a hand edit)."""
        return ANNOTATION_DIGEST in self.annotations


class Deployed(NamedTuple):
    """What the planner knows of a pipeline on the cluster."""

    version: int
    digest: str | None  # pachhook's spec digest annotation; None: not applied by pachhook
    drift: tuple[str, ...] | None = None  # fields changed outside pachhook since it applied it
    since: int | None = None  # the version pachhook applied, when there is drift
    managed_here: bool = False  # pachhook applied it from this repository
    spec_file: str | None = None  # the spec file it was applied from
    inputs: tuple[tuple[str, str], ...] = ()


def deployed(
    stored: Stored,
    repository: str,
    drift: Drift | None = None,
    inputs: tuple[tuple[str, str], ...] = (),
) -> Deployed:
    return Deployed(
        version=stored.version,
        digest=stored.digest,
        drift=drift.fields if drift else None,
        since=drift.since if drift else None,
        managed_here=managed_by(stored, repository),
        spec_file=stored.annotations.get(ANNOTATION_SPEC_FILE),
        inputs=inputs,
    )


def managed_by(stored: Stored, repository: str) -> bool:
    """pachhook applied it from `repository`."""
    return same_repository(stored.annotations.get(ANNOTATION_REPOSITORY), repository)


class Drift(NamedTuple):
    since: int  # the version pachhook wrote
    fields: tuple[str, ...]  # what differs between it and the version the cluster runs


def drift(current: Stored, history: Sequence[Stored]) -> Drift | None:
    """How `current` differs from the last version pachhook wrote; None when pachhook
    wrote none or nothing differs. `history`: the pipeline's versions, with details."""
    ours = max((s for s in history if s.by_pachhook), key=lambda s: s.version, default=None)
    if ours is None or ours.version == current.version:
        return None
    now = next((s for s in history if s.version == current.version), None)
    if ours.version > current.version or now is None:
        # Deleted and created again by hand: pachhook's version is gone.
        return Drift(ours.version, ("(the pipeline was created again outside pachhook)",))
    fields = changed_fields(spec_of(ours.details), spec_of(now.details))
    return Drift(ours.version, tuple(fields)) if fields else None


def needs_history(stored: Stored) -> bool:
    """Only the versions before this one can say whether it drifted: it was written by
    someone else after pachhook (stale annotations), or carries none at all but is not
    the first version."""
    if stored.annotated:
        return ANNOTATION_VERSION in stored.annotations and not stored.by_pachhook
    return stored.version > 1


# -- the stored spec as a dict ------------------------------------------------------------


def spec_of(details: Any) -> dict[str, Any]:
    """The spec fields of stored details, with protobuf's JSON mapping under proto field
    names, without what pachd makes up (`salt`, a cron input's `start`, a service's
    `ip`) and without pachhook's own annotations."""
    from google.protobuf.json_format import MessageToDict

    doc = MessageToDict(details, preserving_proto_field_name=True)
    return comparable(doc)


def comparable(doc: Mapping[str, Any]) -> dict[str, Any]:
    """`doc` (a spec under proto field names) cut to what `spec_of` compares."""
    out = {k: v for k, v in doc.items() if k in SPEC_FIELDS}
    metadata = dict(out.get("metadata") or {})
    annotations = {
        k: v
        for k, v in (metadata.get("annotations") or {}).items()
        if not k.startswith(ANNOTATION_PREFIX)
    }
    metadata.pop("annotations", None)
    if annotations:
        metadata["annotations"] = annotations
    if metadata:
        out["metadata"] = metadata
    else:
        out.pop("metadata", None)
    if isinstance(out.get("service"), dict):
        out["service"] = {k: v for k, v in out["service"].items() if k != "ip"}
    if "input" in out:
        out["input"] = _without_cron_start(out["input"])
    return out


def _without_cron_start(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_cron_start(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _without_cron_start(v) for k, v in node.items()}
    if isinstance(out.get("cron"), dict):
        out["cron"] = {k: v for k, v in out["cron"].items() if k != "start"}
    return out


def flatten(doc: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) for every leaf: objects by key, lists of objects by index; a list
    of plain values is one leaf."""
    if isinstance(doc, dict):
        if not doc and prefix:
            yield prefix, {}
        for key in sorted(doc):
            yield from flatten(doc[key], f"{prefix}.{key}" if prefix else key)
    elif isinstance(doc, list) and any(isinstance(v, dict | list) for v in doc):
        for n, value in enumerate(doc):
            yield from flatten(value, f"{prefix}[{n}]")
    else:
        yield prefix, doc


def changed_fields(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The leaf paths whose values differ (or exist on one side only), in order."""
    a, b = dict(flatten(before)), dict(flatten(after))
    return sorted(path for path in a.keys() | b.keys() if a.get(path, _GONE) != b.get(path, _GONE))


_GONE = object()


def stored_inputs(stored: Stored) -> tuple[tuple[str, str], ...]:
    """(project, repo) of the stored spec's input repos."""
    doc = spec_of(stored.details)
    return tuple(dict.fromkeys(input_repos(doc.get("input"), stored.project)))


# -- which repository ---------------------------------------------------------------------

_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.+)$")


def repository_key(url: str) -> str:
    """`url` reduced to what names a repository whichever way it is cloned: host and path,
    without scheme, credentials, port-less differences in case, or a `.git` suffix
    (`git@github.com:acme/x.git` and `https://github.com/acme/x` are one repository)."""
    text = url.strip()
    scp = _SCP_LIKE.match(text) if "://" not in text else None
    if scp:
        host, path = scp.group(1), scp.group(2)
    elif "://" in text:
        parts = urlsplit(text)
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        path = parts.path
    else:
        host, path = "", text  # a local path
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")]
    return f"{host.lower()}/{path.strip('/')}" if host else path


def same_repository(annotation: str | None, repository: str) -> bool:
    return bool(annotation) and repository_key(annotation or "") == repository_key(repository)


# -- a request as pachd 2.7 stores it ----------------------------------------------------

DEFAULT_USER_IMAGE = "ubuntu:20.04"  # pachd 2.7's DefaultUserImage
DEFAULT_DATUM_TRIES = "3"  # int64 fields read as JSON strings


def as_stored(requested: Mapping[str, Any], project: str, name: str) -> dict[str, Any]:
    """The spec fields of a request (as `cluster.requested_spec` reads it) with what pachd
    2.7 adds when it stores one (api_server.go setPipelineDefaults, setInputDefaults,
    validateInput): the repository's side of `pachhook diff`. pachd 2.8 and later also
    merge cluster and project defaults, which then show as the cluster's own."""
    import copy

    doc: dict[str, Any] = copy.deepcopy({k: v for k, v in requested.items() if k in SPEC_FIELDS})
    transform = doc.setdefault("transform", {})
    transform.setdefault("image", DEFAULT_USER_IMAGE)
    doc.setdefault("output_branch", "master")
    if not doc.get("datum_tries"):
        doc["datum_tries"] = DEFAULT_DATUM_TRIES
    for service in (doc.get("service"), (doc.get("spout") or {}).get("service")):
        if isinstance(service, dict):
            service.setdefault("type", "NodePort")
    doc.setdefault("reprocess_spec", "until_success")
    if isinstance(doc.get("input"), dict):
        _input_defaults(doc["input"], project, name, {})
    return comparable(doc)


_COMBINERS = ("cross", "join", "group", "union")


def _input_defaults(
    node: dict[str, Any], project: str, pipeline: str, triggers: dict[str, int]
) -> None:
    """pps.SortInput (each level by name as given, before names are filled in), then the
    defaults, children first (pps.VisitInput)."""
    _sort_inputs(node)
    _fill_inputs(node, project, pipeline, triggers)


def _children(node: dict[str, Any]) -> list[Any]:
    for kind in _COMBINERS:
        children = node.get(kind)
        if isinstance(children, list) and children:
            return children
    return []


def _sort_inputs(node: dict[str, Any]) -> None:
    children = _children(node)
    for child in children:
        if isinstance(child, dict):
            _sort_inputs(child)
    children.sort(key=_input_name)


def _fill_inputs(
    node: dict[str, Any], project: str, pipeline: str, triggers: dict[str, int]
) -> None:
    for child in _children(node):
        if isinstance(child, dict):
            _fill_inputs(child, project, pipeline, triggers)
    pfs = node.get("pfs")
    if isinstance(pfs, dict):
        repo = str(pfs.get("repo", ""))
        pfs.setdefault("project", project)
        if not pfs.get("branch"):
            if isinstance(pfs.get("trigger"), dict):
                triggers[repo] = triggers.get(repo, 0) + 1
                pfs["branch"] = f"{pipeline}-trigger-{triggers[repo]}"
                pfs["trigger"].setdefault("branch", "master")
            else:
                pfs["branch"] = "master"
        pfs.setdefault("name", repo)
        pfs.setdefault("repo_type", "user")
        if pfs.get("glob"):
            pfs["glob"] = _clean_glob(pfs["glob"])
    cron = node.get("cron")
    if isinstance(cron, dict):
        cron.setdefault("project", project)
        cron.setdefault("repo", f"{pipeline}_{cron.get('name', '')}")


def _input_name(node: Any) -> str:
    """pps.InputName: a pfs input's name as given, else its first child's."""
    if not isinstance(node, dict):
        return ""
    if isinstance(node.get("pfs"), dict):
        return str(node["pfs"].get("name", ""))
    children = _children(node)
    return _input_name(children[0]) if children else ""


def _clean_glob(glob: str) -> str:
    """pfsfile.CleanPath."""
    import posixpath

    cleaned = posixpath.normpath(glob)
    return "/" if cleaned == "." else "/" + cleaned.strip("/")
