"""Pachyderm: what the cluster runs, and applying pipelines in one transaction.

python_pachyderm (and grpc with it) costs half a second to import, so it is imported
only when a run actually talks to the cluster; resolving the connection
(`pachhook.connection`) does not need it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

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
from pachhook.repo.settings import Settings

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


class Deadlines(NamedTuple):
    """Seconds each kind of wait may take: a connection (a host that drops packets would
    otherwise take gRPC's 20 s per attempt), a call, and a transaction's finish (which
    applies every pipeline of the run)."""

    connect: float = 10.0
    rpc: float = 30.0
    transaction: float = 300.0

    @classmethod
    def of(cls, settings: Settings) -> Deadlines:
        return cls(settings.connect_timeout, settings.rpc_timeout, settings.transaction_timeout)


class TransactionLog(Protocol):
    """Where a run writes down its transaction before sending anything into it, so that a
    run killed inside it (its transaction left open on the cluster) is cleaned up next time."""

    def opened(self, txn_id: str) -> None: ...

    def closed(self, txn_id: str, how: str) -> None: ...

    def abandoned(self) -> list[str]:
        """Transactions opened by runs that ended without closing them."""


class PachydermCluster:
    """The `Cluster` of the executor, over python-pachyderm."""

    def __init__(
        self,
        connection: Connection,
        deadlines: Deadlines | None = None,
        log: TransactionLog | None = None,
    ) -> None:
        self.connection = connection
        self.deadlines = deadlines or Deadlines()
        self.log = log
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
    def connect(
        cls,
        config: Config,
        env: Mapping[str, str],
        settings: Settings | None = None,
        log: TransactionLog | None = None,
    ) -> PachydermCluster:
        """No network traffic yet: pachd is first contacted by the first real call."""
        settings = settings if settings is not None else Settings.from_env(env)
        return cls(resolve_connection(config, env, settings), Deadlines.of(settings), log)

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
        _bound(client, self.deadlines)
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
                timeout=self.deadlines.rpc,
                connect_timeout=self.deadlines.connect,
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
        cannot read stops the run with nothing sent. The transaction's id is written down
        before anything is sent into it; one left open by a run that was killed is deleted
        first."""
        requests = [(pipeline, to_request(pipeline, spec, reprocess)) for pipeline, spec in specs]
        self._delete_abandoned()
        try:
            transaction = self._client.start_transaction()
        except client_errors() as exc:
            raise self._failure(exc, "starting a transaction") from None
        txn_id: str = transaction.id
        if self.log is not None:
            self.log.opened(txn_id)
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
        if self.log is not None:
            self.log.closed(txn_id, "finished")
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
        if self.log is not None:
            self.log.closed(txn_id, "deleted")
        return True

    def _delete_abandoned(self) -> None:
        """Delete the transactions that killed runs left open (pachd keeps them forever).
        Best effort: one that cannot be deleted now is tried again next time."""
        if self.log is None:
            return
        for txn_id in self.log.abandoned():
            try:
                self._client.delete_transaction(txn_id)
            except client_errors() as exc:
                if _status(exc)[0] == "NOT_FOUND":
                    self.log.closed(txn_id, "gone")  # finished (applied) or deleted already
                continue
            self.log.closed(txn_id, "deleted: left open by a run that ended inside it")

    # ---- errors

    def _failure(
        self, exc: BaseException, action: str, *, applied: bool | None = None
    ) -> PachhookError:
        """One line for any error from the client: what, where, what to do; never the token."""
        code, details = _status(exc)
        where = f"pachd at {self.connection.endpoint.url} (from {self.connection.source})"
        tail = "; nothing was applied" if applied is False else ""
        if code == "UNAVAILABLE" and _connect_timed_out(details):
            message = (
                f"{where} accepted no connection within {self.deadlines.connect:g}s while "
                f"{action}; check the address and that the cluster is up (the wait is "
                f"PACHHOOK_CONNECT_TIMEOUT){tail}"
            )
        elif code == "UNAVAILABLE":
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
                why = f" ({self.connection.withheld})" if self.connection.withheld else ""
                message = (
                    f"{where} needs a token while {action} and none was sent{why}: set "
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
            finishing = action.startswith("finishing transaction")
            seconds = self.deadlines.transaction if finishing else self.deadlines.rpc
            setting = "PACHHOOK_TRANSACTION_TIMEOUT" if finishing else "PACHHOOK_RPC_TIMEOUT"
            message = (
                f"{where} did not answer within {seconds:g}s while {action}; check that the "
                f"cluster is healthy and run again (the wait is {setting}){tail}"
            )
        else:
            message = f"{where} failed {action}: {details}{tail}"
        return PachhookError(self._scrub(message))

    def _scrub(self, text: str) -> str:
        token = self.connection.token
        if token:
            text = text.replace(token, "***")
        return " ".join(text.split())


_CONNECT_TIMEOUTS = (
    "connect() timed out",
    "before receiving settings frame",
    "handshaker shutdown",
    "timeout occurred",
)


def _connect_timed_out(details: str) -> bool:
    lowered = details.lower()
    return any(text.lower() in lowered for text in _CONNECT_TIMEOUTS)


def _bound(client: Any, deadlines: Deadlines) -> None:
    """Give every call of `client` a deadline, and its connection attempts one too.

    python-pachyderm 7.6 passes no timeout and makes its stubs from `client._channel` (its
    own token and transaction setters replace that channel the same way): a pachd that
    accepts a call and never answers would otherwise hold a run, and its lock, forever."""
    import grpc
    import python_pachyderm.client as pp_client
    from python_pachyderm.service import GRPC_CHANNEL_OPTIONS

    options = [
        *GRPC_CHANNEL_OPTIONS,
        # gRPC waits max(this, the backoff) for one connection attempt: 20 s by default.
        ("grpc.min_reconnect_backoff_ms", max(1, int(deadlines.connect * 1000))),
    ]
    if client.root_certs:
        credentials = grpc.ssl_channel_credentials(root_certificates=client.root_certs)
        channel = grpc.secure_channel(client.address, credentials, options=options)
    else:
        channel = grpc.insecure_channel(client.address, options=options)
    timed = grpc.intercept_channel(channel, _deadline_interceptor(deadlines))
    client._channel = pp_client._apply_metadata_interceptor(timed, client._metadata)
    super(pp_client.Client, client).__init__()  # the mixins make their stubs again


def _deadline_interceptor(deadlines: Deadlines) -> Any:
    import grpc

    class CallDetails(NamedTuple):
        method: str
        timeout: float | None
        metadata: Any
        credentials: Any
        wait_for_ready: Any
        compression: Any

    class Deadline(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def _with_deadline(self, details: Any) -> Any:
            if details.timeout is not None:
                return details
            method = details.method
            text = method.decode() if isinstance(method, bytes) else str(method)
            long = text.endswith("/FinishTransaction")
            return CallDetails(
                method,
                deadlines.transaction if long else deadlines.rpc,
                details.metadata,
                details.credentials,
                getattr(details, "wait_for_ready", None),
                getattr(details, "compression", None),
            )

        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(self._with_deadline(details), request)

        def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(self._with_deadline(details), request)

    return Deadline()


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
