"""Pachyderm: what the cluster runs, and applying pipelines in one transaction.

python_pachyderm (and grpc with it) costs half a second to import, so it is imported
only when a run actually talks to the cluster; resolving the connection
(`pachhook.connection`) does not need it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pachhook.config import Config
from pachhook.errors import InputError, PachhookError
from pachhook.pachyderm.connection import (
    DEFAULT_PORT,
    PEM_CERTIFICATE,
    Connection,
    resolve_connection,
    system_root_certs,
)
from pachhook.pachyderm.specs import Pipeline
from pachhook.pachyderm.stored import Stored

DEFAULT_PROJECT = "default"

# pachd's auth errors (src/auth/auth.go); some arrive with other codes than UNAUTHENTICATED.
AUTH_MESSAGES = ("(try logging in", "token expiration is in the past")


# -- the cluster --------------------------------------------------------------------------


def _pem(data: bytes) -> bytes:
    # python-pachyderm insists that root certificates start with a PEM header;
    # bundles such as certifi's start with comments.
    start = data.find(PEM_CERTIFICATE)
    if start < 0:
        raise InputError("server_cas in pachctl's context holds no PEM certificate; fix it")
    return data[start:]


def client_errors() -> tuple[type[BaseException], ...]:
    """What python-pachyderm raises for a failed call: the gRPC error itself, or (for
    unary calls that could not connect) a ConnectionError caused by it. Anything else is
    a bug and keeps its traceback. (grpc is imported here: it is loaded by then anyway.)"""
    import grpc

    return (grpc.RpcError, ConnectionError)


class PachydermCluster:
    """The `Cluster` of the executor, over python-pachyderm."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._root_certs: bytes | None = None
        if connection.endpoint.tls:
            self._root_certs = _pem(connection.root_certs or system_root_certs())
        self._made_client: Any = None

    @property
    def _client(self) -> Any:
        """python-pachyderm's client, made (and imported) when first needed: a plan reads
        the pipelines without it (listing.py)."""
        if self._made_client is None:
            self._made_client = self._new_client()
        return self._made_client

    @classmethod
    def connect(cls, config: Config, env: Mapping[str, str]) -> PachydermCluster:
        """No network traffic yet: pachd is first contacted by the first real call."""
        return cls(resolve_connection(config, env))

    def _new_client(self, transaction_id: str | None = None) -> Any:
        import python_pachyderm

        endpoint = self.connection.endpoint
        client = python_pachyderm.Client(
            host=endpoint.dial_host,
            port=endpoint.port,
            auth_token=self.connection.token,
            root_certs=self._root_certs,
            tls=endpoint.tls,
            transaction_id=transaction_id,
            use_default_host=False,
        )
        if self.connection.token is None and client.auth_token is not None:
            # The client falls back to $PACH_PYTHON_AUTH_TOKEN; only our sources count.
            client.auth_token = None
        return client

    # ---- reading

    def pipeline_digests(self) -> Mapping[tuple[str, str], str | None]:
        """Every pipeline's spec digest annotation (None when it has none)."""
        return {key: stored.digest for key, stored in self.pipelines().items()}

    def pipelines(self) -> dict[tuple[str, str], Stored]:
        """The version every pipeline runs, and its annotations: one ListPipeline, of which
        only those are decoded (listing.py); `details` stays None."""
        from pachhook.pachyderm.listing import list_pipelines

        endpoint = self.connection.endpoint
        try:
            found = list_pipelines(
                f"{endpoint.dial_host}:{endpoint.port}",
                token=self.connection.token,
                root_certs=self._root_certs,
            )
        except client_errors() as exc:
            raise self._failure(exc, "listing pipelines") from None
        return {stored.key: stored for stored in found}

    def pipelines_in_full(self) -> dict[tuple[str, str], Stored]:
        """As `pipelines`, with every stored spec (python-pachyderm's ListPipeline, which
        returns details in pachd 2.7)."""
        try:
            infos = list(self._client.list_pipeline(details=True))
        except client_errors() as exc:
            raise self._failure(exc, "listing pipelines") from None
        return {stored.key: stored for stored in map(_stored, infos)}

    def history(self, key: tuple[str, str]) -> list[Stored]:
        """Every stored version of one pipeline (ListPipeline for it, history -1)."""
        project, name = key
        try:
            infos = list(
                self._client.inspect_pipeline(name, history=-1, details=True, project_name=project)
            )
        except client_errors() as exc:
            raise self._failure(exc, f"reading the versions of pipeline {project}/{name}") from None
        return [_stored(info) for info in infos]

    def pipeline_images(self) -> Mapping[tuple[str, str], str]:
        """The image (transform.image) each pipeline runs now, from one ListPipeline."""
        try:
            infos = list(self._client.list_pipeline(details=True))
        except client_errors() as exc:
            raise self._failure(exc, "listing pipelines") from None
        return {
            (info.pipeline.project.name or DEFAULT_PROJECT, info.pipeline.name): image
            for info in infos
            if (image := info.details.transform.image)
        }

    def missing_repos(self, repos: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """One ListRepo for all of them."""
        if not repos:
            return []
        try:
            infos = list(self._client.list_repo(type="user"))
        except client_errors() as exc:
            raise self._failure(exc, "listing repos") from None
        present = {(i.repo.project.name or DEFAULT_PROJECT, i.repo.name) for i in infos}
        return [repo for repo in repos if repo not in present]

    # ---- writing

    def apply(self, specs: Sequence[tuple[Pipeline, dict[str, Any]]], reprocess: bool) -> str:
        """Create or update every spec in one transaction, in the given order; its id.

        Every spec is converted before the transaction starts, so a spec python-pachyderm
        cannot read stops the run with nothing sent."""
        requests = [(pipeline, to_request(pipeline, spec, reprocess)) for pipeline, spec in specs]
        try:
            transaction = self._client.start_transaction()
        except client_errors() as exc:
            raise self._failure(exc, "starting a transaction") from None
        txn_id: str = transaction.id
        queue = self._new_client(transaction_id=txn_id)
        for pipeline, request in requests:
            try:
                queue.create_pipeline_from_request(request)
            except client_errors() as exc:
                self._abandon(txn_id)
                raise self._failure(
                    exc, f"sending pipeline {_name(pipeline)} ({pipeline.where})", applied=False
                ) from None
        try:
            self._client.finish_transaction(transaction)
        except client_errors() as exc:
            culprit = _culprit(exc, [pipeline for pipeline, _ in requests])
            what = f"finishing transaction {txn_id}"
            if culprit is not None:
                what += f" at pipeline {_name(culprit)} ({culprit.where})"
            if self._abandon(txn_id):
                raise self._failure(exc, what, applied=False) from None
            raise self._failure(
                exc, f"{what} (whether it was applied is unknown: check pachctl list pipeline)"
            ) from None
        return txn_id

    def delete(self, key: tuple[str, str]) -> None:
        """Delete one pipeline, keeping its output repo (it stays as a plain repo).

        pachd has no transactional delete: TransactionRequest has no delete_pipeline in 2.7
        to 2.12, and a DeletePipeline sent inside a transaction is carried out at once."""
        project, name = key
        try:
            self._client.delete_pipeline(name, keep_repo=True, project_name=project)
        except client_errors() as exc:
            raise self._failure(exc, f"deleting pipeline {project}/{name}") from None

    def _abandon(self, txn_id: str) -> bool:
        """Delete an unfinished transaction; True when it was still there (so nothing of
        it was applied: pachd deletes a transaction in the same commit that applies it)."""
        try:
            self._client.delete_transaction(txn_id)
        except client_errors():
            return False
        return True

    # ---- errors

    def _failure(
        self, exc: BaseException, action: str, *, applied: bool | None = None
    ) -> PachhookError:
        """One line for any error from the client: what, where, what to do; never the token."""
        code, details = _status(exc)
        where = f"pachd at {self.connection.endpoint.url} (from {self.connection.source})"
        tail = "; nothing was applied" if applied is False else ""
        if code == "UNAVAILABLE":
            hint = "check the address and that the cluster is up"
            lowered = details.lower()
            if self.connection.endpoint.tls and any(
                w in lowered for w in ("ssl", "tls", "handshake", "certificate")
            ):
                hint = "TLS failed: check the server's certificate (server_cas) or use grpc:// if it has no TLS"
            elif not self.connection.endpoint.tls and any(
                w in lowered for w in ("socket closed", "connection reset", "end of tcp stream")
            ):
                hint += "; if the server uses TLS, use grpcs://"
            message = f"{where} is unreachable while {action}: {details}; {hint}{tail}"
        elif code == "UNAUTHENTICATED" or any(m in details for m in AUTH_MESSAGES):
            if self.connection.token is None:
                message = (
                    f"{where} needs a token while {action} and none was found: set "
                    f"PACHYDERM_TOKEN or log in with pachctl auth login{tail}"
                )
            else:
                message = (
                    f"{where} refused the token from {self.connection.token_source} while "
                    f"{action}: {details}; set a valid PACHYDERM_TOKEN or log in again with "
                    f"pachctl auth login{tail}"
                )
        elif code == "PERMISSION_DENIED":
            message = (
                f"{where} denied {action}: {details}; ask a cluster admin for access"
                f"{' for the token from ' + self.connection.token_source if self.connection.token_source else ''}{tail}"
            )
        elif "Received http2 header with status" in details or "unknown service" in details:
            message = (
                f"the server at {self.connection.endpoint.url} (from {self.connection.source}) "
                f"does not answer as pachd ({details}) while {action}; check the address and "
                f"port (pachd's gRPC port, {DEFAULT_PORT} unless changed){tail}"
            )
        elif code == "DEADLINE_EXCEEDED":
            message = f"{where} timed out while {action}: {details}; retry{tail}"
        else:
            message = f"{where} failed {action}: {details}{tail}"
        return PachhookError(self._scrub(message))

    def _scrub(self, text: str) -> str:
        token = self.connection.token
        if token:
            text = text.replace(token, "***")
        return " ".join(text.split())


def _status(exc: BaseException) -> tuple[str, str]:
    """(gRPC status code name, details) of an error from python-pachyderm, which wraps
    connection failures of unary calls in a ConnectionError."""
    import grpc

    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, grpc.RpcError):
        cause = cause.__cause__
    if cause is not None and isinstance(cause, grpc.Call):
        code = cause.code()
        return (code.name if code is not None else "UNKNOWN"), (cause.details() or "no details")
    return "UNKNOWN", f"{type(exc).__name__}: {exc}"


_REQUEST_INDEX = re.compile(r"error running request (\d+) of (\d+)")


def _culprit(exc: BaseException, pipelines: Sequence[Pipeline]) -> Pipeline | None:
    """The pipeline a transaction failed on: pachd says "error running request i of n"."""
    match = _REQUEST_INDEX.search(_status(exc)[1])
    count = len(pipelines)
    if match and int(match.group(2)) == count and 1 <= int(match.group(1)) <= count:
        return pipelines[int(match.group(1)) - 1]
    return None


def _name(pipeline: Pipeline) -> str:
    return f"{pipeline.project}/{pipeline.name}"


def _stored(info: Any) -> Stored:
    return Stored(
        project=info.pipeline.project.name or DEFAULT_PROJECT,
        name=info.pipeline.name,
        version=info.version,
        annotations=dict(info.details.metadata.annotations),
        details=info.details,
    )


# -- specs -> requests ----------------------------------------------------------------------


def to_request(pipeline: Pipeline, spec: dict[str, Any], reprocess: bool) -> Any:
    """The CreatePipelineRequest for one rewritten spec: update (pachd creates a missing
    pipeline), reprocess as asked, and the project pachhook keyed the pipeline by."""
    import python_pachyderm
    from google.protobuf import json_format

    try:
        request = python_pachyderm.parse_dict_pipeline_spec(spec)
    except (json_format.Error, TypeError, ValueError, AttributeError) as exc:
        raise InputError(
            f"{pipeline.where}: pipeline {pipeline.name}: {_parse_problem(str(exc))}"
        ) from None
    request.update = True
    request.reprocess = reprocess
    request.pipeline.project.name = pipeline.project
    return request


def requested_spec(pipeline: Pipeline, spec: dict[str, Any]) -> dict[str, Any]:
    """The spec fields of the request pachhook would send for `spec`, under proto field
    names (as `stored.spec_of` reads a stored spec)."""
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(to_request(pipeline, spec, False), preserving_proto_field_name=True)


_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)" at "CreatePipelineRequest\.?([^"]*)"')
_FAILED_FIELD = re.compile(r"^Failed to parse (\S+) field: ")


def _parse_problem(text: str) -> str:
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown:
        at = re.sub(r"\[\d+\]", "", unknown.group(2))
        path = f"{at}.{unknown.group(1)}" if at else unknown.group(1)
        return (
            f"field '{path}' is not known to python-pachyderm {_client_version()}; "
            "remove it or fix its spelling"
        )
    path = []
    rest = text.splitlines()[0] if text else text
    while (match := _FAILED_FIELD.match(rest)) is not None:
        path.append(match.group(1))
        rest = rest[match.end() :]
    rest = re.sub(r"\s+at CreatePipelineRequest\S*$", "", rest).rstrip(".")
    if path:
        return f"field '{'.'.join(path)}' has a bad value ({rest}); fix it"
    return f"python-pachyderm {_client_version()} cannot read the spec ({rest}); fix it"


def _client_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("python-pachyderm")
    except PackageNotFoundError:
        return "(unknown version)"
