"""A strict, in-process stand-in for pachd 2.7 that speaks real gRPC.

No Pachyderm cluster can run in the test environment, so the deploy tests talk to
this server instead.  It is built on the service classes generated into
python-pachyderm 7.6, listens on loopback only, and is meant to be talked to by
the real ``python_pachyderm.Client``.  It models only the part of pachd that a
deploy tool relies on (projects, repos, pipelines, transactions, auth tokens,
the community-edition limits), but within that part it follows pachd 2.7's own
rules and error messages (see pachyderm/pachyderm v2.7.8:
src/server/pps/server/api_server.go, src/server/transaction/server/driver.go,
src/server/pfs/server/driver.go, src/internal/middleware/auth/interceptor.go).

Every RPC it does not model is refused with UNIMPLEMENTED naming the method, so a
test can never pass because the double silently accepted something.

Run by hand::

    python tests/pachd_double.py --port 0 --token secret --repo default/images
"""

from __future__ import annotations

import argparse
import copy
import os
import posixpath
import re
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Literal

# Stopping a server while python-pachyderm clients still hold channels makes
# gRPC core log a GOAWAY line at INFO level for every test; keep test output
# readable unless the caller asked for verbosity.  Must precede `import grpc`.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc
from google.protobuf import empty_pb2, timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from python_pachyderm.proto.v2.admin import admin_pb2, admin_pb2_grpc
from python_pachyderm.proto.v2.auth import auth_pb2, auth_pb2_grpc
from python_pachyderm.proto.v2.enterprise import enterprise_pb2, enterprise_pb2_grpc
from python_pachyderm.proto.v2.pfs import pfs_pb2, pfs_pb2_grpc
from python_pachyderm.proto.v2.pps import pps_pb2, pps_pb2_grpc
from python_pachyderm.proto.v2.transaction import transaction_pb2, transaction_pb2_grpc
from python_pachyderm.proto.v2.version.versionpb import version_pb2, version_pb2_grpc

__all__ = [
    "AUTH_TOKEN_HEADER",
    "PARALLELISM_LIMIT",
    "PIPELINE_LIMIT",
    "TEST_TOKEN",
    "TRANSACTION_HEADER",
    "AppliedTransaction",
    "DeletedPipeline",
    "Hang",
    "PachdDouble",
    "PachdError",
    "PipelineRecord",
    "RepoRecord",
]

# gRPC metadata keys python-pachyderm sends (python_pachyderm/client.py _build_metadata).
AUTH_TOKEN_HEADER = "authn-token"
TRANSACTION_HEADER = "pach-transaction"

TEST_TOKEN = "test-token"
DEFAULT_PROJECT = "default"
ROOT_USER = "pach:root"

# Community-edition limits (src/server/enterprise/limits/limits.go).
PIPELINE_LIMIT = 16
PARALLELISM_LIMIT = 8

USER_REPO, SPEC_REPO, META_REPO = "user", "spec", "meta"

# Defaults pachd fills into a pipeline spec (pps/server/api_server.go).
DEFAULT_USER_IMAGE = "ubuntu:20.04"
DEFAULT_DATUM_TRIES = 3
REPROCESS_UNTIL_SUCCESS = "until_success"
REPROCESS_EVERY_JOB = "every_job"
MAX_PIPELINE_NAME_LENGTH = 51
DNS_LABEL_LIMIT = 63
PROJECT_NAME_LIMIT = 63 - 8 - len("-v99")

# Errors pachd returns from its auth layer (src/auth/auth.go).
MSG_NO_TOKEN = "no authentication token (try logging in)"
MSG_BAD_TOKEN = "provided auth token is corrupted or has expired (try logging in again)"
MSG_AUTH_NOT_ACTIVATED = "the auth service is not activated"

# The community-edition refusal text (src/server/enterprise/text/text.go).
_OPEN_SOURCE_PRODUCT = "Pachyderm Community Edition"
_ACTIVATE_CTA = "Use the command `pachctl license activate` to enter your key."
_REGISTER_CTA = (
    "Pachyderm offers readily available activation keys for proofs-of-concept, startups, "
    "academic, nonprofit, or open-source projects. Tell us about your project to get one."
    "\n\nLearn about Pachyderm Enterprise here:\n\nhttps://www.pachyderm.com/trial"
)

# RPCs pachd lets through without a token (authHandlers marked `unauthenticated` in
# src/internal/middleware/auth/interceptor.go).  WhoAmI is listed there because it
# checks the token itself, which the double does too.
_UNAUTHENTICATED_METHODS = frozenset(
    {
        "/admin_v2.API/InspectCluster",
        "/auth_v2.API/Activate",
        "/auth_v2.API/Authenticate",
        "/auth_v2.API/Authorize",
        "/auth_v2.API/WhoAmI",
        "/auth_v2.API/GetOIDCLogin",
        "/enterprise_v2.API/GetState",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/versionpb_v2.API/GetVersion",
    }
)

_VALID_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
FailAt = Literal["queue", "finish"]


class PachdError(Exception):
    """An error the double returns to the client as a gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def wrap(self, prefix: str) -> PachdError:
        # pachd wraps errors with context but the gRPC code of the cause survives
        # (grpc-go's status.FromError unwraps), so keep the code.
        return PachdError(self.code, f"{prefix}: {self.message}")


def _unknown(message: str) -> PachdError:
    # Plain errors.Errorf values in pachd carry no status and arrive as UNKNOWN.
    return PachdError(grpc.StatusCode.UNKNOWN, message)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class RepoRecord:
    """What the double knows about one repo (as `pachctl inspect repo` would show)."""

    project: str
    name: str
    type: str
    description: str
    branches: tuple[str, ...]


@dataclass(frozen=True)
class PipelineRecord:
    """The current version of one pipeline, flattened for assertions."""

    project: str
    name: str
    version: int
    image: str
    annotations: dict[str, str]
    labels: dict[str, str]
    reprocess: bool
    update: bool
    parallelism: int
    salt: str
    order: int
    """1-based position of this version in the order pipeline writes were applied."""
    transaction_id: str | None
    """Id of the transaction that applied this version, None for a direct call."""
    request: pps_pb2.CreatePipelineRequest
    """The request as pachd received it (after defaulting the project)."""
    info: pps_pb2.PipelineInfo
    """The stored PipelineInfo, with details."""


@dataclass(frozen=True)
class AppliedTransaction:
    """A transaction that was committed by FinishTransaction or BatchTransaction."""

    id: str
    requests: tuple[transaction_pb2.TransactionRequest, ...]
    via: Literal["finish", "batch"]


@dataclass(frozen=True)
class DeletedPipeline:
    """A DeletePipeline that pachd carried out."""

    project: str
    name: str
    keep_repo: bool
    force: bool
    transaction_header: str | None
    """The `pach-transaction` header it came with: pachd 2.7 ignores it (the delete is
    not transactional and is applied at once), and so does the double."""


# --------------------------------------------------------------------------- state


@dataclass
class _Project:
    description: str
    created: timestamp_pb2.Timestamp


@dataclass
class _Repo:
    project: str
    name: str
    type: str
    description: str
    created: timestamp_pb2.Timestamp
    seq: int
    branches: list[str] = field(default_factory=list)


@dataclass
class _PipelineVersion:
    info: pps_pb2.PipelineInfo
    request: pps_pb2.CreatePipelineRequest
    seq: int
    order: int
    transaction_id: str | None


@dataclass
class _ClusterState:
    """Everything a transaction can change; copied wholesale so that a failed
    request or transaction leaves no trace (pachd runs them in one SQL transaction)."""

    projects: dict[str, _Project] = field(default_factory=dict)
    repos: dict[tuple[str, str, str], _Repo] = field(default_factory=dict)
    pipelines: dict[tuple[str, str], list[_PipelineVersion]] = field(default_factory=dict)
    applied: list[tuple[str, str, int]] = field(default_factory=list)
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass
class _Failure:
    message: str
    at: FailAt
    code: grpc.StatusCode
    remaining: int | None


@dataclass
class _Transaction:
    info: transaction_pb2.TransactionInfo
    # The committed state with every queued request already dry-run on it, and what it
    # was made from: appending then dry-runs only the new request, which is what
    # dry-running them all gives while the committed state is the same (pachd reruns
    # them all; a 500-request transaction would otherwise take minutes here).
    scratch: _ClusterState | None = None
    scratch_of: tuple[int, int, int, int] | None = None


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def _new_id() -> str:
    return uuid.uuid4().hex


def _repo_str(project: str, name: str, repo_type: str = USER_REPO) -> str:
    # pfs.Repo.String() in src/pfs/pfs.go
    base = f"{project}/{name}" if project else name
    return base if repo_type == USER_REPO else f"{base}.{repo_type}"


def _validate_name(name: str) -> None:
    # ancestry.ValidateName
    if not _VALID_NAME.match(name):
        raise _unknown(
            f"name ({name}) invalid: only alphanumeric characters, underscores, "
            "and dashes are allowed"
        )


# --------------------------------------------------------------------------- inputs


def _children(inp: pps_pb2.Input) -> Sequence[pps_pb2.Input]:
    # Same precedence as pps.visitInput: cross, join, group, union.
    for kind in ("cross", "join", "group", "union"):
        kids = getattr(inp, kind)
        if len(kids) > 0:
            return kids
    return ()


def _visit(inp: pps_pb2.Input | None, fn: Callable[[pps_pb2.Input], None]) -> None:
    """Post-order walk (children before parent), like pps.VisitInput."""
    if inp is None:
        return
    for child in _children(inp):
        _visit(child, fn)
    fn(inp)


def _pfs_repos(info: pps_pb2.PipelineInfo, project: str) -> set[tuple[str, str]]:
    """(project, repo) of every pfs input of a stored pipeline."""
    found: set[tuple[str, str]] = set()

    def add(node: pps_pb2.Input) -> None:
        if node.HasField("pfs"):
            found.add((node.pfs.project or project, node.pfs.repo))

    _visit(info.details.input if info.details.HasField("input") else None, add)
    return found


def _input_name(inp: pps_pb2.Input) -> str:
    # pps.InputName: cron inputs have no name for sorting purposes.
    if inp.HasField("pfs"):
        return inp.pfs.name
    kids = _children(inp)
    return _input_name(kids[0]) if kids else ""


def _sort_input(inp: pps_pb2.Input | None) -> None:
    # pachd stores inputs sorted by name, so a caller that compares the stored spec
    # with its own must cope with that; the double does the same.
    def sort_node(node: pps_pb2.Input) -> None:
        for kind in ("cross", "join", "group", "union"):
            kids = getattr(node, kind)
            if len(kids) > 0:
                ordered = sorted((copy.deepcopy(k) for k in kids), key=_input_name)
                del kids[:]
                kids.extend(ordered)
                return

    _visit(inp, sort_node)


def _clean_glob(glob: str) -> str:
    # pfsfile.CleanPath
    cleaned = posixpath.normpath(glob) if glob else "."
    if cleaned == ".":
        return "/"
    return "/" + cleaned.strip("/")


_CRON_DESCRIPTORS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight"}
_CRON_DESCRIPTORS |= {"@hourly", "@never"}
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-]+$")
_GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


def _check_cron_spec(spec: str) -> None:
    """Approximates robfig/cron ParseStandard, which pachd uses for cron inputs."""
    text = spec.strip()
    if text in _CRON_DESCRIPTORS:
        return
    if text.startswith("@every "):
        if _GO_DURATION.match(text[len("@every ") :].strip()):
            return
        raise _unknown(f"error parsing cron-spec: Failed to parse duration {text}")
    if text.startswith("@"):
        raise _unknown(f"error parsing cron-spec: Unrecognized descriptor: {text}")
    fields = text.split()
    if len(fields) != 5:
        raise _unknown(
            f"error parsing cron-spec: Expected exactly 5 fields, found {len(fields)}: {text}"
        )
    for part in fields:
        if not _CRON_FIELD.match(part):
            raise _unknown(f"error parsing cron-spec: Failed to parse field {part!r}: {text}")


def _validate_names(names: set[str], inp: pps_pb2.Input | None) -> None:
    # pps/server/api_server.go validateNames: input names must be unique, except
    # across the arms of a union.
    if inp is None:
        return
    if inp.HasField("pfs") or inp.HasField("cron"):
        name = inp.pfs.name if inp.HasField("pfs") else inp.cron.name
        if name == "":
            raise _unknown("input must specify a name")
        if name in ("out", ".env"):
            raise _unknown(f"input cannot be named {name}")
        if name in names:
            raise _unknown(f'name "{name}" was used more than once')
        names.add(name)
    elif len(inp.union) > 0:
        merged: set[str] = set()
        for arm in inp.union:
            arm_names = set(names)
            _validate_names(arm_names, arm)
            merged |= arm_names
        names |= merged
    else:
        for child in _children(inp):
            _validate_names(names, child)


def _validate_input(project: str, inp: pps_pb2.Input | None) -> None:
    """pps/server/api_server.go validateInput (minus the S3 rules a deploy tool
    does not exercise beyond the basic ones)."""
    _validate_names(set(), inp)

    def check(node: pps_pb2.Input) -> None:
        kinds = [
            node.HasField("pfs"),
            len(node.cross) > 0,
            len(node.join) > 0,
            len(node.group) > 0,
            len(node.union) > 0,
            node.HasField("cron"),
        ]
        if sum(kinds) > 1:
            raise _unknown("multiple input types set")
        if not any(kinds):
            raise _unknown("no input set")
        if node.HasField("pfs"):
            pfs = node.pfs
            if pfs.project == "":
                pfs.project = project
            if pfs.repo == "":
                raise _unknown("input must specify a repo")
            if pfs.branch == "":
                raise _unknown("input must specify a branch")
            if not pfs.s3 and pfs.glob == "":
                raise _unknown("input must specify a glob")
            if pfs.s3 and pfs.glob != "/":
                raise _unknown(
                    "inputs that set 's3' to 'true' must also set 'glob', to \"/\", as the "
                    "S3 gateway is only able to expose data at the commit level"
                )
            if pfs.commit != "":
                raise _unknown(
                    "input cannot come from a commit; use a branch with head pointing to the commit"
                )
        if node.HasField("cron"):
            if node.cron.project == "":
                node.cron.project = project
            _check_cron_spec(node.cron.spec)

    _visit(inp, check)


def _set_input_defaults(pipeline_name: str, inp: pps_pb2.Input | None) -> None:
    """pps/server/api_server.go setInputDefaults: sort first, then fill names."""
    _sort_input(inp)
    triggers: Counter[str] = Counter()

    def fill(node: pps_pb2.Input) -> None:
        if node.HasField("pfs"):
            pfs = node.pfs
            if pfs.branch == "":
                if pfs.HasField("trigger"):
                    triggers[pfs.repo] += 1
                    pfs.branch = f"{pipeline_name}-trigger-{triggers[pfs.repo]}"
                    if pfs.trigger.branch == "":
                        pfs.trigger.branch = "master"
                else:
                    pfs.branch = "master"
            if pfs.name == "":
                pfs.name = pfs.repo
            if pfs.repo_type == "":
                pfs.repo_type = USER_REPO
            if pfs.glob != "":
                pfs.glob = _clean_glob(pfs.glob)
        if node.HasField("cron"):
            if not node.cron.HasField("start"):
                node.cron.start.CopyFrom(_now())
            if node.cron.repo == "":
                node.cron.repo = f"{pipeline_name}_{node.cron.name}"

    _visit(inp, fill)


# Fields copied verbatim from CreatePipelineRequest into PipelineInfo.Details
# (initializePipelineInfo).
_DETAIL_FIELDS = (
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
    "salt",
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


def _copy_fields(src: Any, dst: Any, names: Iterable[str]) -> None:
    for name in names:
        descriptor = src.DESCRIPTOR.fields_by_name[name]
        if descriptor.label == descriptor.LABEL_REPEATED:
            getattr(dst, name).extend(getattr(src, name))
        elif descriptor.message_type is not None:
            if src.HasField(name):
                getattr(dst, name).CopyFrom(getattr(src, name))
        else:
            setattr(dst, name, getattr(src, name))


# --------------------------------------------------------------------------- core


class _Cluster:
    """The pachd logic, independent of gRPC plumbing.  All public methods run
    under one lock: pachd serialises writers through Postgres, and the double
    serialises everything, which is stricter and keeps the model simple."""

    def __init__(self, *, enterprise: bool) -> None:
        self.lock = threading.RLock()
        self.enterprise = enterprise
        self.state = _ClusterState()
        self.state.projects[DEFAULT_PROJECT] = _Project(description="", created=_now())
        self.transactions: dict[str, _Transaction] = {}
        self.applied_transactions: list[AppliedTransaction] = []
        self.deleted_pipelines: list[DeletedPipeline] = []
        self.failure_changes = 0  # bumped when a failure is injected or cleared
        self.failures: dict[tuple[str, str], _Failure] = {}

    # ---- projects

    def create_project(self, state: _ClusterState, req: pfs_pb2.CreateProjectRequest) -> None:
        name = req.project.name
        if name != DEFAULT_PROJECT:
            if len(name) > PROJECT_NAME_LIMIT:
                raise _unknown(
                    f'invalid project name: project name "{name}" is '
                    f"{len(name) - PROJECT_NAME_LIMIT} characters longer than the "
                    f"{PROJECT_NAME_LIMIT} max"
                )
            try:
                _validate_name(name)
            except PachdError as err:
                raise err.wrap("invalid project name") from None
            if not name[0].isalnum():
                raise _unknown(
                    "invalid project name: project names must start with an alphanumeric character"
                )
        existing = state.projects.get(name)
        if req.update:
            if existing is None:
                state.projects[name] = _Project(description=req.description, created=_now())
            else:
                existing.description = req.description
            return
        if existing is not None:
            raise PachdError(grpc.StatusCode.ALREADY_EXISTS, f"project {name} already exists")
        state.projects[name] = _Project(description=req.description, created=_now())

    def project_info(self, name: str) -> pfs_pb2.ProjectInfo:
        project = self.state.projects.get(name)
        if project is None:
            raise PachdError(
                grpc.StatusCode.NOT_FOUND,
                f'error getting project "{name}": project "{name}" not found',
            )
        return pfs_pb2.ProjectInfo(
            project=pfs_pb2.Project(name=name),
            description=project.description,
            created_at=project.created,
        )

    # ---- repos

    def create_repo(self, state: _ClusterState, req: pfs_pb2.CreateRepoRequest) -> None:
        """pfs/server/driver.go createRepo."""
        project = req.repo.project.name or DEFAULT_PROJECT
        name = req.repo.name
        repo_type = req.repo.type or USER_REPO
        _validate_name(name)
        if project not in state.projects:
            raise PachdError(
                grpc.StatusCode.NOT_FOUND,
                f'cannot find project "{project}": project "{project}" not found',
            )
        key = (project, name, repo_type)
        existing = state.repos.get(key)
        if existing is None:
            if repo_type != USER_REPO and (project, name, USER_REPO) not in state.repos:
                raise PachdError(
                    grpc.StatusCode.NOT_FOUND,
                    "cannot create a system repo without a corresponding 'user' repo: "
                    f"repos {_repo_str(project, name)} not found",
                )
            state.repos[key] = _Repo(
                project=project,
                name=name,
                type=repo_type,
                description=req.description,
                created=_now(),
                seq=state.next_seq(),
            )
            return
        if not req.update:
            raise PachdError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"repo {_repo_str(project, name, repo_type)} already exists",
            )
        existing.description = req.description

    def _require_repo(self, state: _ClusterState, project: str, name: str, repo_type: str) -> _Repo:
        repo = state.repos.get((project, name, repo_type or USER_REPO))
        if repo is None:
            raise PachdError(
                grpc.StatusCode.NOT_FOUND,
                f"repo {_repo_str(project, name, repo_type or USER_REPO)} not found",
            )
        return repo

    @staticmethod
    def _add_branch(repo: _Repo, branch: str) -> None:
        if branch not in repo.branches:
            repo.branches.append(branch)

    @staticmethod
    def repo_info(repo: _Repo) -> pfs_pb2.RepoInfo:
        pb_repo = pfs_pb2.Repo(
            name=repo.name, type=repo.type, project=pfs_pb2.Project(name=repo.project)
        )
        return pfs_pb2.RepoInfo(
            repo=pb_repo,
            created=repo.created,
            description=repo.description,
            branches=[pfs_pb2.Branch(repo=pb_repo, name=b) for b in repo.branches],
        )

    # ---- pipelines

    def enterprise_checks(self, req: pps_pb2.CreatePipelineRequest) -> None:
        """pps/server/api_server.go validateEnterpriseChecks.

        pachd runs this when the CreatePipeline RPC arrives, against committed
        state only: an existing pipeline may always be updated, and requests that
        are queued in a transaction do not count towards the limit."""
        key = (req.pipeline.project.name, req.pipeline.name)
        if key in self.state.pipelines or self.enterprise:
            return
        # pachd counts distinct pipeline *names* across all projects.
        names = {name for (_, name) in self.state.pipelines}
        if len(names) >= PIPELINE_LIMIT:
            raise _unknown(
                f"{_OPEN_SOURCE_PRODUCT} requires an activation key to create more than "
                f"{PIPELINE_LIMIT} total pipelines (you have {len(names)}). "
                f"{_ACTIVATE_CTA}\n\n{_REGISTER_CTA}"
            )
        if req.HasField("parallelism_spec") and req.parallelism_spec.constant > PARALLELISM_LIMIT:
            raise _unknown(
                f"{_OPEN_SOURCE_PRODUCT} requires an activation key to create pipelines with "
                f"parallelism more than {PARALLELISM_LIMIT}. {_ACTIVATE_CTA}\n\n{_REGISTER_CTA}"
            )

    def _injected_failure(self, project: str, name: str, *, dry_run: bool) -> None:
        failure = self.failures.get((project, name))
        if failure is None or (dry_run and failure.at == "finish"):
            return
        if failure.remaining is not None:
            failure.remaining -= 1
            if failure.remaining <= 0:
                del self.failures[(project, name)]
        raise PachdError(failure.code, failure.message)

    @staticmethod
    def _validate_request(req: pps_pb2.CreatePipelineRequest) -> None:
        """pps/server/api_server.go validatePipelineRequest."""
        name = req.pipeline.name
        if name == "":
            raise _unknown("invalid pipeline spec: request.Pipeline.Name cannot be empty")
        try:
            _validate_name(name)
        except PachdError as err:
            raise err.wrap("invalid pipeline name") from None
        if len(name) > MAX_PIPELINE_NAME_LENGTH:
            raise _unknown(
                f'pipeline name "{name}" is {len(name) - MAX_PIPELINE_NAME_LENGTH} characters '
                f"longer than the {MAX_PIPELINE_NAME_LENGTH} max"
            )
        project = req.pipeline.project.name
        k8s_name = f"{project.replace('_', '-')}-{name.replace('_', '-')}-v99".lower()
        if len(k8s_name) > DNS_LABEL_LIMIT:
            raise _unknown(
                f'Kubernetes name "{k8s_name}" is {len(k8s_name) - DNS_LABEL_LIMIT} characters '
                f"longer than the {DNS_LABEL_LIMIT} max"
            )
        if req.HasField("tf_job"):
            raise _unknown("embedding TFJobs in pipelines is not supported yet")
        if req.s3_out and (req.HasField("service") or req.HasField("spout")):
            raise _unknown("s3 output is not supported in spouts or services")
        if not req.HasField("transform"):
            raise _unknown("pipeline must specify a transform")
        if req.reprocess_spec not in ("", REPROCESS_UNTIL_SUCCESS, REPROCESS_EVERY_JOB):
            raise _unknown(
                "invalid pipeline spec: ReprocessSpec must be one of "
                f"'{REPROCESS_UNTIL_SUCCESS}' or '{REPROCESS_EVERY_JOB}'"
            )
        if req.HasField("spout") and req.autoscaling:
            raise _unknown(
                "autoscaling can't be used with spouts (spouts aren't triggered externally)"
            )

    def _initialize_info(
        self, req: pps_pb2.CreatePipelineRequest, old: pps_pb2.PipelineInfo | None
    ) -> pps_pb2.PipelineInfo:
        """pps/server/api_server.go initializePipelineInfo + setPipelineDefaults +
        validatePipeline."""
        self._validate_request(req)
        if req.salt == "" or req.reprocess:
            req.salt = _new_id()
        info = pps_pb2.PipelineInfo(version=1)
        info.pipeline.CopyFrom(req.pipeline)
        details = info.details
        _copy_fields(req, details, _DETAIL_FIELDS)
        details.created_at.CopyFrom(_now())

        if details.transform.image == "":
            details.transform.image = DEFAULT_USER_IMAGE
        name = info.pipeline.name
        _set_input_defaults(name, details.input if details.HasField("input") else None)
        if details.output_branch == "":
            details.output_branch = "master"
        if details.datum_tries == 0:
            details.datum_tries = DEFAULT_DATUM_TRIES
        if details.HasField("service") and details.service.type == "":
            details.service.type = "NodePort"
        if details.reprocess_spec == "":
            details.reprocess_spec = REPROCESS_UNTIL_SUCCESS

        if not (name[0].isalpha() or name[0].isdigit()):
            raise _unknown("pipeline names must start with an alphanumeric character")
        project = info.pipeline.project.name
        _validate_input(project, details.input if details.HasField("input") else None)
        if details.HasField("service"):
            if details.HasField("parallelism_spec") and details.parallelism_spec.constant != 1:
                raise _unknown("services can only be run with a constant parallelism of 1")
            if details.service.type not in ("ClusterIP", "LoadBalancer", "NodePort"):
                raise _unknown(f"the following service type {details.service.type} is not allowed")
        if (
            details.HasField("spout")
            and not details.spout.HasField("service")
            and details.HasField("input")
        ):
            raise _unknown("spout pipelines (without a service) must not have an input")

        if old is not None:
            # An update bumps the version, keeps the pipeline stopped if it was,
            # and keeps the salt (so datums are not reprocessed) unless asked to.
            info.version = old.version + 1
            info.stopped = old.stopped
            if not req.reprocess:
                details.salt = old.details.salt
        return info

    def create_pipeline(
        self,
        state: _ClusterState,
        original: pps_pb2.CreatePipelineRequest,
        *,
        dry_run: bool,
        transaction_id: str | None,
    ) -> None:
        """pps/server/api_server.go CreatePipelineInTransaction."""
        req = copy.deepcopy(original)
        project, name = req.pipeline.project.name, req.pipeline.name
        self._injected_failure(project, name, dry_run=dry_run)
        versions = state.pipelines.get((project, name))
        old = versions[-1].info if versions else None
        if old is not None and not req.update:
            raise PachdError(
                grpc.StatusCode.ALREADY_EXISTS, f'pipeline "{project}/{name}" already exists'
            )
        info = self._initialize_info(req, old)
        details = info.details
        input_ = details.input if details.HasField("input") else None

        # Every pfs input repo must exist; cron inputs get their tick repo created.
        input_branches: list[tuple[_Repo, str]] = []

        def check_input(node: pps_pb2.Input) -> None:
            if node.HasField("pfs"):
                pfs = node.pfs
                repo = self._require_repo(state, pfs.project or project, pfs.repo, pfs.repo_type)
                input_branches.append((repo, pfs.branch))
            if node.HasField("cron"):
                cron_req = pfs_pb2.CreateRepoRequest(
                    repo=pfs_pb2.Repo(
                        name=node.cron.repo, type=USER_REPO, project=pfs_pb2.Project(name=project)
                    ),
                    description=f"Cron tick repo for pipeline {project}/{name}.",
                )
                try:
                    self.create_repo(state, cron_req)
                except PachdError as err:
                    if err.code != grpc.StatusCode.ALREADY_EXISTS:
                        raise
                input_branches.append((state.repos[(project, node.cron.repo, USER_REPO)], "master"))

        _visit(input_, check_input)

        update = req.update and old is not None
        parallelism_spec = (
            details.parallelism_spec if details.HasField("parallelism_spec") else None
        )
        if parallelism_spec is None or parallelism_spec.constant == 0:
            info.parallelism = 1
        else:
            info.parallelism = parallelism_spec.constant
        # pachd stores STARTING and its controller moves the pipeline on; there is no
        # controller here, so report the state a healthy pipeline settles in.
        info.state = pps_pb2.PipelineState.PIPELINE_RUNNING
        if details.HasField("spout"):
            info.type = pps_pb2.PipelineInfo.PipelineType.PIPELINE_TYPE_SPOUT
        elif details.HasField("service"):
            info.type = pps_pb2.PipelineInfo.PipelineType.PIPELINE_TYPE_SERVICE
        else:
            info.type = pps_pb2.PipelineInfo.PipelineType.PIPELINE_TYPE_TRANSFORM

        if not update:
            output_req = pfs_pb2.CreateRepoRequest(
                repo=pfs_pb2.Repo(name=name, type=USER_REPO, project=pfs_pb2.Project(name=project)),
                description=f"Output repo for pipeline {project}/{name}.",
            )
            try:
                self.create_repo(state, output_req)
            except PachdError as err:
                if err.code == grpc.StatusCode.ALREADY_EXISTS:
                    raise _unknown(
                        f'pipeline "{name}" cannot be created because a repo with the same '
                        "name already exists"
                    ) from None
                raise err.wrap(f"error creating output repo for {name}") from None
            spec_req = pfs_pb2.CreateRepoRequest(
                repo=pfs_pb2.Repo(name=name, type=SPEC_REPO, project=pfs_pb2.Project(name=project)),
                description=f"Spec repo for pipeline {project}/{name}.",
                update=True,
            )
            self.create_repo(state, spec_req)

        spec_repo = self._require_repo(state, project, name, SPEC_REPO)
        if req.HasField("spec_commit"):
            if update:
                raise _unknown(
                    "Cannot update a pipeline and provide a spec commit at the same time"
                )
            info.spec_commit.CopyFrom(req.spec_commit)
        else:
            info.spec_commit.CopyFrom(
                pfs_pb2.Commit(
                    id=_new_id(),
                    branch=pfs_pb2.Branch(
                        repo=pfs_pb2.Repo(
                            name=name, type=SPEC_REPO, project=pfs_pb2.Project(name=project)
                        ),
                        name="master",
                    ),
                )
            )
        self._add_branch(spec_repo, "master")

        # CreateBranch on the output branch creates any missing provenance branch.
        self._add_branch(self._require_repo(state, project, name, USER_REPO), details.output_branch)
        for repo, branch in input_branches:
            self._add_branch(repo, branch)

        if not details.HasField("service") and not details.HasField("spout"):
            meta_req = pfs_pb2.CreateRepoRequest(
                repo=pfs_pb2.Repo(name=name, type=META_REPO, project=pfs_pb2.Project(name=project)),
                description=f"Meta repo for pipeline {project}/{name}",
            )
            try:
                self.create_repo(state, meta_req)
            except PachdError as err:
                if err.code != grpc.StatusCode.ALREADY_EXISTS:
                    raise err.wrap("could not create meta repo") from None
            self._add_branch(state.repos[(project, name, META_REPO)], details.output_branch)

        state.applied.append((project, name, info.version))
        state.pipelines.setdefault((project, name), []).append(
            _PipelineVersion(
                info=info,
                request=copy.deepcopy(original),
                seq=state.next_seq(),
                order=len(state.applied),
                transaction_id=transaction_id,
            )
        )

    def delete_pipeline(
        self, req: pps_pb2.DeletePipelineRequest, transaction_header: str | None
    ) -> None:
        """pps/server/api_server.go deletePipeline: outside any transaction, all of it or
        nothing. A pipeline that does not exist is "nothing to delete", and no error.

        The pipeline's versions, spec and meta repos and cron tick repos go; its output
        repo goes too unless `keep_repo` (it then stays as a plain repo, its branch
        without provenance). Without `keep_repo`, an output repo that another pipeline
        reads is refused unless `force` (pfs driver deleteBranch: subvenance)."""
        project = req.pipeline.project.name or DEFAULT_PROJECT
        name = req.pipeline.name
        state = copy.deepcopy(self.state)
        versions = state.pipelines.get((project, name))
        if versions:
            details = versions[-1].info.details
            doomed = [(project, name, SPEC_REPO), (project, name, META_REPO)]
            if not req.keep_repo:
                readers = sorted(
                    f"{p}/{n}@{v[-1].info.details.output_branch}"
                    for (p, n), v in state.pipelines.items()
                    if (p, n) != (project, name) and (project, name) in _pfs_repos(v[-1].info, p)
                )
                if readers and not req.force:
                    branch = details.output_branch or "master"
                    raise _unknown(
                        f"delete branch {project}/{name}@{branch}: branch {branch} has "
                        f"[{' '.join(readers)}] as subvenance, deleting it would break "
                        "those branches"
                    )
                doomed.append((project, name, USER_REPO))

            def cron_repo(node: pps_pb2.Input) -> None:
                if node.HasField("cron"):
                    doomed.append((project, node.cron.repo, USER_REPO))

            _visit(details.input if details.HasField("input") else None, cron_repo)
            for key in doomed:
                state.repos.pop(key, None)
            del state.pipelines[(project, name)]
        self.state = state
        self.deleted_pipelines.append(
            DeletedPipeline(project, name, req.keep_repo, req.force, transaction_header)
        )

    def pipeline_versions(self, project: str, name: str) -> list[_PipelineVersion]:
        versions = self.state.pipelines.get((project, name))
        if not versions:
            # ppsServer.ErrPipelineNotFound
            raise PachdError(grpc.StatusCode.NOT_FOUND, f'pipeline "{project}/{name}" not found')
        return versions

    # ---- transactions

    def run_requests(
        self,
        state: _ClusterState,
        requests: Sequence[transaction_pb2.TransactionRequest],
        *,
        dry_run: bool,
        transaction_id: str | None,
    ) -> None:
        """transaction/server/driver.go runTransaction."""
        total = len(requests)
        for index, request in enumerate(requests, start=1):
            try:
                self.run_request(state, request, dry_run=dry_run, transaction_id=transaction_id)
            except PachdError as err:
                raise err.wrap(f"error running request {index} of {total}") from None

    def run_request(
        self,
        state: _ClusterState,
        request: transaction_pb2.TransactionRequest,
        *,
        dry_run: bool,
        transaction_id: str | None,
    ) -> None:
        if request.HasField("create_repo"):
            self.create_repo(state, request.create_repo)
        elif request.HasField("create_pipeline"):
            self.create_pipeline(
                state, request.create_pipeline, dry_run=dry_run, transaction_id=transaction_id
            )
        else:
            kinds = [f.name for f, _ in request.ListFields()]
            if not kinds:
                raise _unknown("unrecognized transaction request type")
            raise PachdError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"the pachd double does not model {kinds[0]} requests in transactions",
            )

    def apply_direct(self, request: transaction_pb2.TransactionRequest) -> None:
        """A write outside any transaction: all of it or nothing, and the error is
        returned unwrapped, as pachd's WithWriteContext does."""
        state = copy.deepcopy(self.state)
        self.run_request(state, request, dry_run=False, transaction_id=None)
        self.state = state

    def transaction(self, txn_id: str) -> _Transaction:
        txn = self.transactions.get(txn_id)
        if txn is None:
            # collection.ErrNotFound on the "transactions" table
            raise PachdError(grpc.StatusCode.NOT_FOUND, f"transactions {txn_id} not found")
        return txn

    def append(self, txn_id: str, request: transaction_pb2.TransactionRequest) -> None:
        """transaction/server/driver.go appendTransaction: dry-run the whole
        transaction with the new request against committed state; keep the request
        only if that succeeds."""
        txn = self.transaction(txn_id)
        requests = [*txn.info.requests, request]
        committed = (
            id(self.state),
            self.state.seq,
            len(self.state.projects),
            self.failure_changes,
        )
        # Taken away first: a failed request leaves it half-changed, and the next append
        # then starts afresh.
        scratch, txn.scratch = txn.scratch, None
        if scratch is not None and txn.scratch_of == committed:
            try:
                self.run_request(scratch, request, dry_run=True, transaction_id=txn_id)
            except PachdError as err:
                total = len(requests)
                raise err.wrap(f"error running request {total} of {total}") from None
        else:
            scratch = copy.deepcopy(self.state)
            self.run_requests(scratch, requests, dry_run=True, transaction_id=txn_id)
        txn.scratch, txn.scratch_of = scratch, committed
        txn.info.requests.append(request)
        txn.info.responses.append(transaction_pb2.TransactionResponse())
        txn.info.version += 1

    def finish(
        self, txn_id: str, *, via: Literal["finish", "batch"]
    ) -> transaction_pb2.TransactionInfo:
        """transaction/server/driver.go finishTransaction: run every request in one
        database transaction.  On failure nothing is applied and the transaction is
        left in place (its delete is rolled back with everything else)."""
        txn = self.transaction(txn_id)
        state = copy.deepcopy(self.state)
        self.run_requests(state, txn.info.requests, dry_run=False, transaction_id=txn_id)
        self.state = state
        del self.transactions[txn_id]
        result = copy.deepcopy(txn.info)
        while len(result.responses) < len(result.requests):
            result.responses.append(transaction_pb2.TransactionResponse())
        self.applied_transactions.append(
            AppliedTransaction(id=txn_id, requests=tuple(txn.info.requests), via=via)
        )
        return result

    def start_transaction(self) -> transaction_pb2.TransactionInfo:
        info = transaction_pb2.TransactionInfo(
            transaction=transaction_pb2.Transaction(id=_new_id()), started=_now()
        )
        self.transactions[info.transaction.id] = _Transaction(info=info)
        return info


# --------------------------------------------------------------------------- servicers


def _metadata(context: grpc.ServicerContext, key: str) -> list[str]:
    return [value for k, value in context.invocation_metadata() if k == key]


def _guard(method: Callable[..., Any]) -> Callable[..., Any]:
    """Run a handler under the cluster lock and turn PachdError into a status."""

    def wrapper(self: _ServicerBase, request: Any, context: grpc.ServicerContext) -> Any:
        with self.cluster.lock:
            try:
                return method(self, request, context)
            except PachdError as err:
                context.abort(err.code, err.message)

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class _ServicerBase:
    cluster: _Cluster

    def _transactional(
        self, context: grpc.ServicerContext, request: transaction_pb2.TransactionRequest
    ) -> None:
        # txnenv.WithTransaction: with a transaction id in the metadata the request
        # is appended to that transaction instead of being run.
        txn_ids = _metadata(context, TRANSACTION_HEADER)
        if txn_ids and txn_ids[0]:
            self.cluster.append(txn_ids[0], request)
        else:
            self.cluster.apply_direct(request)


class _PfsServicer(_ServicerBase, pfs_pb2_grpc.APIServicer):
    def __init__(self, cluster: _Cluster) -> None:
        self.cluster = cluster

    @_guard
    def CreateRepo(self, request: pfs_pb2.CreateRepoRequest, context: Any) -> empty_pb2.Empty:
        req = copy.deepcopy(request)
        if req.repo.project.name == "":
            req.repo.project.name = DEFAULT_PROJECT
        self._transactional(context, transaction_pb2.TransactionRequest(create_repo=req))
        return empty_pb2.Empty()

    @_guard
    def InspectRepo(self, request: pfs_pb2.InspectRepoRequest, context: Any) -> pfs_pb2.RepoInfo:
        repo = self.cluster._require_repo(
            self.cluster.state,
            request.repo.project.name or DEFAULT_PROJECT,
            request.repo.name,
            request.repo.type,
        )
        info = self.cluster.repo_info(repo)
        info.details.size_bytes = 0
        return info

    @_guard
    def ListRepo(
        self, request: pfs_pb2.ListRepoRequest, context: Any
    ) -> Iterator[pfs_pb2.RepoInfo]:
        projects = {p.name for p in request.projects}
        repos = [
            r
            for r in self.cluster.state.repos.values()
            if (request.type == "" or r.type == request.type)
            and (not projects or r.project in projects)
        ]
        # pachd lists in descending creation order.
        repos.sort(key=lambda r: r.seq, reverse=True)
        return iter([self.cluster.repo_info(r) for r in repos])

    @_guard
    def CreateProject(self, request: pfs_pb2.CreateProjectRequest, context: Any) -> empty_pb2.Empty:
        # Not transactional in pachd 2.7: applied at once even inside a transaction.
        self.cluster.create_project(self.cluster.state, request)
        return empty_pb2.Empty()

    @_guard
    def InspectProject(
        self, request: pfs_pb2.InspectProjectRequest, context: Any
    ) -> pfs_pb2.ProjectInfo:
        return self.cluster.project_info(request.project.name)

    @_guard
    def ListProject(
        self, request: pfs_pb2.ListProjectRequest, context: Any
    ) -> Iterator[pfs_pb2.ProjectInfo]:
        return iter([self.cluster.project_info(name) for name in self.cluster.state.projects])


class _PpsServicer(_ServicerBase, pps_pb2_grpc.APIServicer):
    def __init__(self, cluster: _Cluster) -> None:
        self.cluster = cluster

    @_guard
    def CreatePipeline(
        self, request: pps_pb2.CreatePipelineRequest, context: Any
    ) -> empty_pb2.Empty:
        if not request.HasField("pipeline"):
            raise _unknown("request.Pipeline cannot be nil")
        req = copy.deepcopy(request)
        if req.pipeline.project.name == "":
            req.pipeline.project.name = DEFAULT_PROJECT
        self.cluster.enterprise_checks(req)
        self._transactional(context, transaction_pb2.TransactionRequest(create_pipeline=req))
        return empty_pb2.Empty()

    @_guard
    def InspectPipeline(
        self, request: pps_pb2.InspectPipelineRequest, context: Any
    ) -> pps_pb2.PipelineInfo:
        project = request.pipeline.project.name or DEFAULT_PROJECT
        name, ancestors = _parse_ancestry(request.pipeline.name)
        versions = self.cluster.pipeline_versions(project, name)
        if ancestors >= len(versions):
            latest = versions[-1].info.version
            raise _unknown(
                f'pipeline "{project}/{name}" has only {latest} versions, not enough to find '
                f"ancestor {ancestors}"
            )
        info = copy.deepcopy(versions[-1 - ancestors].info)
        info.auth_token = ""
        if not request.details:
            info.ClearField("details")  # pachd: "preserve old behavior"
        return info

    @_guard
    def ListPipeline(
        self, request: pps_pb2.ListPipelineRequest, context: Any
    ) -> Iterator[pps_pb2.PipelineInfo]:
        if request.jqFilter:
            raise PachdError(
                grpc.StatusCode.UNIMPLEMENTED, "the pachd double does not evaluate jqFilter"
            )
        if request.HasField("commit_set") and request.commit_set.id:
            raise PachdError(
                grpc.StatusCode.UNIMPLEMENTED, "the pachd double does not model commit sets"
            )
        state = self.cluster.state
        if request.HasField("pipeline") and request.pipeline.name:
            project = request.pipeline.project.name or DEFAULT_PROJECT
            try:
                selected = {
                    (project, request.pipeline.name): self.cluster.pipeline_versions(
                        project, request.pipeline.name
                    )
                }
            except PachdError as err:
                raise err.wrap("could not list pipeline info") from None
        else:
            selected = state.pipelines
        projects = {p.name for p in request.projects}
        rows: list[_PipelineVersion] = []
        for (project, _), versions in selected.items():
            if projects and project not in projects:
                continue
            # history 0: latest only; n: latest n+1 versions; negative: all.
            keep = len(versions) if request.history < 0 else request.history + 1
            rows.extend(versions[-keep:])
        rows.sort(key=lambda v: v.seq, reverse=True)
        infos = []
        for row in rows:
            # ListPipeline in pachd 2.7 ignores `details` and always returns them. Stored
            # infos are never changed in place, so one without a token is sent as it is.
            info = row.info
            if info.auth_token:
                info = copy.deepcopy(info)
                info.auth_token = ""
            infos.append(info)
        return iter(infos)

    @_guard
    def DeletePipeline(
        self, request: pps_pb2.DeletePipelineRequest, context: Any
    ) -> empty_pb2.Empty:
        if request.all:
            raise PachdError(
                grpc.StatusCode.UNIMPLEMENTED,
                "the pachd double does not model deleting all pipelines",
            )
        if not request.HasField("pipeline") or not request.pipeline.name:
            raise _unknown("request.Pipeline cannot be nil")
        # TransactionRequest has no delete_pipeline (2.7 to 2.12): pachd deletes with a
        # write context of its own, whatever the pach-transaction header says.
        header = _metadata(context, TRANSACTION_HEADER)
        self.cluster.delete_pipeline(request, header[0] if header else None)
        return empty_pb2.Empty()


def _parse_ancestry(name: str) -> tuple[str, int]:
    """Enough of ancestry.Parse for `name^`, `name^^`, `name~N`."""
    if "~" in name:
        base, _, count = name.partition("~")
        return base, int(count) if count.isdigit() else 1
    stripped = name.rstrip("^")
    return stripped, len(name) - len(stripped)


class _TransactionServicer(transaction_pb2_grpc.APIServicer):
    def __init__(self, cluster: _Cluster) -> None:
        self.cluster = cluster

    @_guard
    def StartTransaction(
        self, request: transaction_pb2.StartTransactionRequest, context: Any
    ) -> transaction_pb2.Transaction:
        return copy.deepcopy(self.cluster.start_transaction().transaction)

    @_guard
    def InspectTransaction(
        self, request: transaction_pb2.InspectTransactionRequest, context: Any
    ) -> transaction_pb2.TransactionInfo:
        return copy.deepcopy(self.cluster.transaction(request.transaction.id).info)

    @_guard
    def ListTransaction(
        self, request: transaction_pb2.ListTransactionRequest, context: Any
    ) -> transaction_pb2.TransactionInfos:
        infos = [copy.deepcopy(t.info) for t in self.cluster.transactions.values()]
        return transaction_pb2.TransactionInfos(transaction_info=infos)

    @_guard
    def DeleteTransaction(
        self, request: transaction_pb2.DeleteTransactionRequest, context: Any
    ) -> empty_pb2.Empty:
        self.cluster.transaction(request.transaction.id)
        del self.cluster.transactions[request.transaction.id]
        return empty_pb2.Empty()

    @_guard
    def FinishTransaction(
        self, request: transaction_pb2.FinishTransactionRequest, context: Any
    ) -> transaction_pb2.TransactionInfo:
        return self.cluster.finish(request.transaction.id, via="finish")

    @_guard
    def BatchTransaction(
        self, request: transaction_pb2.BatchTransactionRequest, context: Any
    ) -> transaction_pb2.TransactionInfo:
        info = self.cluster.start_transaction()
        txn_id = info.transaction.id
        info.requests.extend(request.requests)
        try:
            return self.cluster.finish(txn_id, via="batch")
        finally:
            # A batch is never visible as an open transaction, even when it fails.
            self.cluster.transactions.pop(txn_id, None)

    @_guard
    def DeleteAll(self, request: transaction_pb2.DeleteAllRequest, context: Any) -> empty_pb2.Empty:
        self.cluster.transactions.clear()
        return empty_pb2.Empty()


class _AuthServicer(auth_pb2_grpc.APIServicer):
    def __init__(self, cluster: _Cluster, token: str | None) -> None:
        self.cluster = cluster
        self.token = token

    def WhoAmI(self, request: auth_pb2.WhoAmIRequest, context: Any) -> auth_pb2.WhoAmIResponse:
        if self.token is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, MSG_AUTH_NOT_ACTIVATED)
        failure = _token_failure(self.token, _metadata(context, AUTH_TOKEN_HEADER))
        if failure is not None:
            context.abort(*failure)
        return auth_pb2.WhoAmIResponse(username=ROOT_USER)


class _VersionServicer(version_pb2_grpc.APIServicer):
    def __init__(self, version: tuple[int, int, int]) -> None:
        self.version = version

    def GetVersion(self, request: empty_pb2.Empty, context: Any) -> version_pb2.Version:
        major, minor, micro = self.version
        return version_pb2.Version(major=major, minor=minor, micro=micro)


class _AdminServicer(admin_pb2_grpc.APIServicer):
    def __init__(self) -> None:
        self.cluster_id = _new_id()

    def InspectCluster(self, request: Any, context: Any) -> admin_pb2.ClusterInfo:
        return admin_pb2.ClusterInfo(
            id=self.cluster_id, deployment_id=self.cluster_id, version_warnings_ok=True
        )


class _EnterpriseServicer(enterprise_pb2_grpc.APIServicer):
    def __init__(self, cluster: _Cluster) -> None:
        self.cluster = cluster

    def GetState(
        self, request: enterprise_pb2.GetStateRequest, context: Any
    ) -> enterprise_pb2.GetStateResponse:
        state = (
            enterprise_pb2.State.ACTIVE if self.cluster.enterprise else enterprise_pb2.State.NONE
        )
        return enterprise_pb2.GetStateResponse(state=state)


def _token_failure(expected: str, sent: list[str]) -> tuple[grpc.StatusCode, str] | None:
    """auth.GetAuthToken + the token lookup in getAuthenticatedUser."""
    if len(sent) > 1:
        return grpc.StatusCode.UNKNOWN, "multiple authentication token keys found in context"
    if not sent:
        return grpc.StatusCode.UNAUTHENTICATED, MSG_NO_TOKEN
    if sent[0] != expected:
        return grpc.StatusCode.UNAUTHENTICATED, MSG_BAD_TOKEN
    return None


def _aborting_handler(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str
) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that refuses the call."""

    def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, details)

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


class _Gate(grpc.ServerInterceptor):
    """Counts every call, enforces the auth token, and refuses methods the double
    does not model (the generated base servicer would say only 'Method not
    implemented!', which does not tell a test author what to add)."""

    def __init__(self, double: PachdDouble) -> None:
        self.double = double

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        self.double._record_call(method)
        sent = [
            v for k, v in (handler_call_details.invocation_metadata or ()) if k == AUTH_TOKEN_HEADER
        ]
        self.double._record_tokens(sent)
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # unknown service: grpc answers UNIMPLEMENTED itself
        short = method.rsplit("/", 1)[-1]
        if self.double._take_drop(short):
            return _dropping_handler(handler, self.double)
        token = self.double.token
        if token is not None and method not in _UNAUTHENTICATED_METHODS:
            failure = _token_failure(token, sent)
            if failure is not None:
                return _aborting_handler(handler, *failure)
        if not self.double._implements(method):
            return _aborting_handler(
                handler, grpc.StatusCode.UNIMPLEMENTED, f"method {short} not implemented"
            )
        hang = self.double._hang_for(short)
        if hang is not None:
            return _hanging_handler(handler, hang)
        return handler


class Hang:
    """One method made to hang: `entered` is set when a call is held; `release()` lets
    it (and later calls) go on. `after`: the call is applied first, and only its answer
    is held (the client cannot know whether it was applied)."""

    def __init__(self, method: str, after: bool) -> None:
        self.method = method
        self.after = after
        self.entered = threading.Event()
        self.released = threading.Event()
        self.calls = 0

    def release(self) -> None:
        self.released.set()

    def hold(self, context: grpc.ServicerContext) -> None:
        """Until released, the server stops, or the caller gives up (its deadline)."""
        self.calls += 1
        self.entered.set()
        while not self.released.wait(0.05):
            if not context.is_active():
                context.abort(grpc.StatusCode.CANCELLED, "the caller went away")


def _hanging_handler(handler: grpc.RpcMethodHandler, hang: Hang) -> grpc.RpcMethodHandler:
    """The same call, held before it runs (or, with `after`, after it ran) until released."""
    streaming = handler.response_streaming
    behaviour = handler.unary_stream if streaming else handler.unary_unary

    def held(request: Any, context: grpc.ServicerContext) -> Any:
        if not hang.after:
            hang.hold(context)
        result = behaviour(request, context)
        if streaming:
            result = list(result)
        if hang.after:
            hang.hold(context)
        return iter(result) if streaming else result

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if streaming:
        return grpc.unary_stream_rpc_method_handler(held, **kwargs)
    return grpc.unary_unary_rpc_method_handler(held, **kwargs)


def _dropping_handler(handler: grpc.RpcMethodHandler, double: PachdDouble) -> grpc.RpcMethodHandler:
    """A call that makes pachd go away mid-call: the server stops at once (every
    connection closed, every call cut off) and listens again on the same port, as a
    pachd that restarted."""

    def drop(request: Any, context: grpc.ServicerContext) -> Any:
        threading.Thread(target=double._restart, name="pachd-restart", daemon=True).start()
        while context.is_active():
            time.sleep(0.01)
        context.abort(grpc.StatusCode.UNAVAILABLE, "connection dropped")

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(drop, **kwargs)
    return grpc.unary_unary_rpc_method_handler(drop, **kwargs)


# --------------------------------------------------------------------------- public


class PachdDouble:
    """A loopback gRPC server that behaves like pachd 2.7 for deploy purposes.

    >>> with PachdDouble(token="t") as double:
    ...     double.create_repo("images")
    ...     client = double.client()
    """

    def __init__(
        self,
        *,
        token: str | None = TEST_TOKEN,
        enterprise: bool = False,
        port: int = 0,
        version: tuple[int, int, int] = (2, 7, 8),
        max_workers: int = 8,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        """
        token: the auth token every RPC must carry in `authn-token` metadata;
            None starts the double with auth deactivated.
        enterprise: True behaves as if a licence were active, lifting the
            community-edition limits (16 pipelines, parallelism 8).
        port: 0 picks a free port.
        tls: (private key, certificate chain), both PEM: serve grpcs:// instead.
        """
        self.token = token
        self._requested_port = port
        self._version = version
        self._max_workers = max_workers
        self._tls = tls
        self._cluster = _Cluster(enterprise=enterprise)
        self._calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self._tokens: set[str] = set()
        self._hangs: dict[str, Hang] = {}
        self._drops: Counter[str] = Counter()
        self.restarts = 0
        self._server: grpc.Server | None = None
        self._servicers: dict[str, tuple[object, type]] = {}
        self.port: int = 0
        self.host = "127.0.0.1"

    # ---- lifecycle

    @property
    def address(self) -> str:
        return f"{'grpcs' if self._tls else 'grpc'}://{self.host}:{self.port}"

    @property
    def enterprise(self) -> bool:
        return self._cluster.enterprise

    @enterprise.setter
    def enterprise(self, value: bool) -> None:
        with self._cluster.lock:
            self._cluster.enterprise = value

    def start(self) -> PachdDouble:
        if self._server is not None:
            return self
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="pachd"),
            interceptors=[_Gate(self)],
        )
        cluster = self._cluster
        services: list[tuple[str, object, type, Callable[[Any, grpc.Server], None]]] = [
            (
                "pps_v2.API",
                _PpsServicer(cluster),
                pps_pb2_grpc.APIServicer,
                pps_pb2_grpc.add_APIServicer_to_server,
            ),
            (
                "pfs_v2.API",
                _PfsServicer(cluster),
                pfs_pb2_grpc.APIServicer,
                pfs_pb2_grpc.add_APIServicer_to_server,
            ),
            (
                "transaction_v2.API",
                _TransactionServicer(cluster),
                transaction_pb2_grpc.APIServicer,
                transaction_pb2_grpc.add_APIServicer_to_server,
            ),
            (
                "auth_v2.API",
                _AuthServicer(cluster, self.token),
                auth_pb2_grpc.APIServicer,
                auth_pb2_grpc.add_APIServicer_to_server,
            ),
            (
                "versionpb_v2.API",
                _VersionServicer(self._version),
                version_pb2_grpc.APIServicer,
                version_pb2_grpc.add_APIServicer_to_server,
            ),
            (
                "admin_v2.API",
                _AdminServicer(),
                admin_pb2_grpc.APIServicer,
                admin_pb2_grpc.add_APIServicer_to_server,
            ),
            (
                "enterprise_v2.API",
                _EnterpriseServicer(cluster),
                enterprise_pb2_grpc.APIServicer,
                enterprise_pb2_grpc.add_APIServicer_to_server,
            ),
        ]
        for service_name, servicer, base, register in services:
            register(servicer, server)
            self._servicers[service_name] = (servicer, base)
        health_servicer = health.HealthServicer()
        health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        self._servicers["grpc.health.v1.Health"] = (health_servicer, object)

        bind = f"{self.host}:{self._requested_port}"
        if self._tls:
            port = server.add_secure_port(bind, grpc.ssl_server_credentials([self._tls]))
        else:
            port = server.add_insecure_port(bind)
        if port == 0:
            raise RuntimeError(f"could not bind {self.host}:{self._requested_port}")
        server.start()
        self.port = port
        self._server = server
        return self

    def stop(self, grace: float | None = None) -> None:
        with self._calls_lock:
            for hang in self._hangs.values():
                hang.release()
        if self._server is not None:
            self._server.stop(grace).wait()
            self._server = None

    def _restart(self) -> None:
        """Stop at once and listen again on the same port (the state is kept)."""
        server = self._server
        if server is None:
            return
        server.stop(0).wait()
        self._server = None
        self._requested_port = self.port
        self.restarts += 1
        self.start()

    def wait(self) -> None:
        """Block until the server stops."""
        if self._server is not None:
            self._server.wait_for_termination()

    def __enter__(self) -> PachdDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, token: str | None | Literal["default"] = "default") -> Any:
        """A real python_pachyderm.Client pointed at the double.

        token: "default" uses the double's token; None sends no token at all.
        """
        import python_pachyderm

        auth_token = self.token if token == "default" else token
        client = python_pachyderm.Client(
            host=self.host, port=self.port, auth_token=auth_token, use_default_host=False
        )
        if auth_token is None and client.auth_token is not None:
            # The client falls back to $PACH_PYTHON_AUTH_TOKEN; honour an explicit None.
            client.auth_token = None
        return client

    # ---- setup helpers (what pachctl would do before a deploy)

    def create_project(self, name: str, description: str = "") -> None:
        with self._cluster.lock:
            self._cluster.create_project(
                self._cluster.state,
                pfs_pb2.CreateProjectRequest(
                    project=pfs_pb2.Project(name=name), description=description
                ),
            )

    def create_repo(
        self,
        name: str,
        project: str = DEFAULT_PROJECT,
        *,
        description: str = "",
        branches: Iterable[str] = (),
    ) -> None:
        """`pachctl create repo`: fails like pachd if the repo exists or the
        project does not."""
        with self._cluster.lock:
            state = copy.deepcopy(self._cluster.state)
            self._cluster.create_repo(
                state,
                pfs_pb2.CreateRepoRequest(
                    repo=pfs_pb2.Repo(
                        name=name, type=USER_REPO, project=pfs_pb2.Project(name=project)
                    ),
                    description=description,
                ),
            )
            for branch in branches:
                self._cluster._add_branch(state.repos[(project, name, USER_REPO)], branch)
            self._cluster.state = state

    def fail_pipeline(
        self,
        name: str,
        message: str = "injected failure",
        *,
        project: str = DEFAULT_PROJECT,
        at: FailAt = "finish",
        code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
        times: int | None = None,
    ) -> None:
        """Make creating/updating pipeline `project/name` fail with `message`.

        at="finish": the request is still accepted into a transaction (its
            dry-run succeeds) and fails when the transaction is finished, so a
            test can prove that nothing of the transaction was applied.  A direct
            (non-transactional) call fails immediately.
        at="queue": the call that sends the request fails, in or out of a
            transaction.
        times: fail only this many times, then behave normally (None = always).
        """
        if at not in ("finish", "queue"):
            raise ValueError(f"at must be 'finish' or 'queue', not {at!r}")
        with self._cluster.lock:
            self._cluster.failure_changes += 1
            self._cluster.failures[(project, name)] = _Failure(
                message=message, at=at, code=code, remaining=times
            )

    def clear_failures(self) -> None:
        with self._cluster.lock:
            self._cluster.failure_changes += 1
            self._cluster.failures.clear()

    def hang(self, method: str, *, after: bool = False) -> Hang:
        """Make every call of `method` (e.g. "ListPipeline", "FinishTransaction") hang,
        as a pachd that accepts a call and never answers; see `Hang`."""
        hang = Hang(method, after)
        with self._calls_lock:
            self._hangs[method] = hang
        return hang

    def unhang(self) -> None:
        with self._calls_lock:
            hangs, self._hangs = list(self._hangs.values()), {}
        for hang in hangs:
            hang.release()

    def drop(self, method: str, times: int = 1) -> None:
        """The next `times` calls of `method` drop the connection: pachd goes away in the
        middle of the call and comes back (see `_dropping_handler`)."""
        with self._calls_lock:
            self._drops[method] += times

    def tokens_seen(self) -> set[str]:
        """Every token any call carried (in `authn-token`), refused or not."""
        with self._calls_lock:
            return set(self._tokens)

    def _hang_for(self, method: str) -> Hang | None:
        with self._calls_lock:
            hang = self._hangs.get(method)
        return None if hang is None or hang.released.is_set() else hang

    def _take_drop(self, method: str) -> bool:
        with self._calls_lock:
            if self._drops[method] > 0:
                self._drops[method] -= 1
                return True
            return False

    def _record_tokens(self, sent: list[str]) -> None:
        with self._calls_lock:
            self._tokens.update(sent)

    # ---- inspection helpers

    def pipelines(self) -> dict[tuple[str, str], PipelineRecord]:
        """The current version of every pipeline, keyed by (project, name)."""
        with self._cluster.lock:
            return {
                key: _record(versions[-1])
                for key, versions in self._cluster.state.pipelines.items()
            }

    def pipeline_history(self, name: str, project: str = DEFAULT_PROJECT) -> list[PipelineRecord]:
        """Every stored version of one pipeline, oldest first."""
        with self._cluster.lock:
            return [_record(v) for v in self._cluster.state.pipelines.get((project, name), [])]

    def applied_order(self) -> list[tuple[str, str, int]]:
        """(project, name, version) of every pipeline write, in the order applied."""
        with self._cluster.lock:
            return list(self._cluster.state.applied)

    def repos(self, repo_type: str = USER_REPO) -> dict[tuple[str, str], RepoRecord]:
        """Repos of one type ("user", "spec" or "meta"), keyed by (project, name)."""
        with self._cluster.lock:
            return {
                (r.project, r.name): RepoRecord(
                    project=r.project,
                    name=r.name,
                    type=r.type,
                    description=r.description,
                    branches=tuple(r.branches),
                )
                for r in self._cluster.state.repos.values()
                if r.type == repo_type
            }

    def projects(self) -> set[str]:
        with self._cluster.lock:
            return set(self._cluster.state.projects)

    def deleted_pipelines(self) -> list[DeletedPipeline]:
        """Every DeletePipeline carried out, in order."""
        with self._cluster.lock:
            return list(self._cluster.deleted_pipelines)

    def applied_transactions(self) -> list[AppliedTransaction]:
        with self._cluster.lock:
            return list(self._cluster.applied_transactions)

    def open_transactions(self) -> dict[str, transaction_pb2.TransactionInfo]:
        with self._cluster.lock:
            return {k: copy.deepcopy(t.info) for k, t in self._cluster.transactions.items()}

    def calls(self) -> Counter[str]:
        """Calls received per method, as "service/Method" (e.g.
        "pps_v2.API/CreatePipeline"), including refused ones."""
        with self._calls_lock:
            return Counter(self._calls)

    def call_count(self, method: str | None = None) -> int:
        """Total calls; or calls to one method, given as "CreatePipeline" or as
        "pps_v2.API/CreatePipeline"."""
        calls = self.calls()
        if method is None:
            return sum(calls.values())
        if "/" in method:
            return calls[method.lstrip("/")]
        return sum(n for name, n in calls.items() if name.endswith("/" + method))

    def reset_calls(self) -> None:
        with self._calls_lock:
            self._calls.clear()

    # ---- internals used by the interceptor

    def _record_call(self, method: str) -> None:
        with self._calls_lock:
            self._calls[method.lstrip("/")] += 1

    def _implements(self, method: str) -> bool:
        service, _, name = method.lstrip("/").partition("/")
        entry = self._servicers.get(service)
        if entry is None:
            return False
        servicer, base = entry
        if base is object:
            return True
        return getattr(type(servicer), name, None) is not getattr(base, name, None)


def _record(version: _PipelineVersion) -> PipelineRecord:
    info = version.info
    details = info.details
    return PipelineRecord(
        project=info.pipeline.project.name,
        name=info.pipeline.name,
        version=info.version,
        image=details.transform.image,
        annotations=dict(details.metadata.annotations),
        labels=dict(details.metadata.labels),
        reprocess=version.request.reprocess,
        update=version.request.update,
        parallelism=info.parallelism,
        salt=details.salt,
        order=version.order,
        transaction_id=version.transaction_id,
        request=copy.deepcopy(version.request),
        info=copy.deepcopy(info),
    )


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a pachd 2.7 double on loopback.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="auth token; omit to disable auth")
    parser.add_argument(
        "--enterprise", action="store_true", help="lift the community-edition limits"
    )
    parser.add_argument(
        "--project", action="append", default=[], metavar="NAME", help="create a project"
    )
    parser.add_argument(
        "--repo",
        action="append",
        default=[],
        metavar="[PROJECT/]NAME",
        help="create an input repo (repeatable)",
    )
    args = parser.parse_args(argv)

    double = PachdDouble(token=args.token, enterprise=args.enterprise, port=args.port)
    for project in args.project:
        double.create_project(project)
    for spec in args.repo:
        project, _, name = spec.rpartition("/")
        double.create_repo(name, project or DEFAULT_PROJECT)
    double.start()

    stopped = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(double.address, flush=True)
    # Poll so the signal handler gets a chance to run promptly.
    while not stopped.wait(0.2):
        pass
    double.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
