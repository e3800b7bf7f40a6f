"""Pachyderm: where the cluster is, what it runs, and applying pipelines in one transaction.

python_pachyderm (and grpc with it) costs half a second to import, so it is imported
only when a run actually talks to the cluster; resolving the connection does not need it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pachhook.config import Config
from pachhook.errors import InputError, PachhookError
from pachhook.plan import PipelinePlan
from pachhook.run import ANNOTATION_DIGEST

DEFAULT_PORT = 30650  # pachctl's default for every scheme (grpcutil.DefaultPachdNodePort)
DEFAULT_PROJECT = "default"
SCHEMES = ("grpc", "grpcs", "http", "https")
SECURE_SCHEMES = ("grpcs", "https")
PACHCTL_IN_CLUSTER_CONFIG = Path("/pachctl/config.json")
PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"

# pachd's auth errors (src/auth/auth.go); some arrive with other codes than UNAUTHENTICATED.
AUTH_MESSAGES = ("(try logging in", "token expiration is in the past")

SETUP_HINT = (
    "set [pachyderm] address in pachhook.toml or PACHYDERM_CLUSTER_URL, "
    "or point pachctl at the cluster (pachctl config set active-context ...)"
)


# -- where the cluster is ---------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool

    @property
    def dial_host(self) -> str:
        """The host as gRPC dials it: IPv6 literals in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    @property
    def url(self) -> str:
        return f"{'grpcs' if self.tls else 'grpc'}://{self.dial_host}:{self.port}"


def parse_address(value: str, where: str) -> Endpoint:
    """A pachd address as pachctl reads it (grpcutil.ParsePachdAddress): grpc://, grpcs://,
    http://, https:// or bare host[:port]; the port defaults to 30650 whatever the scheme."""
    text = value.strip()
    if not text:
        raise InputError(f"{where}: the Pachyderm address is empty; {SETUP_HINT}")
    if "://" not in text:
        text = "grpc://" + text
    # A trailing slash is harmless and common in URLs copied from a browser.
    parts = urlsplit(text[:-1] if text.endswith("/") and text.count("/") == 3 else text)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        raise InputError(
            f"{where}: {value!r}: python-pachyderm cannot use a unix socket; "
            "give a grpc:// or grpcs:// address"
        )
    if scheme not in SCHEMES:
        raise InputError(
            f"{where}: {value!r}: unknown scheme {parts.scheme!r}; use one of "
            "grpc://, grpcs://, http://, https:// (or host:port)"
        )
    problem = (
        "a path"
        if parts.path
        else "login credentials"
        if parts.username is not None or parts.password is not None
        else "a query string"
        if parts.query
        else "a fragment"
        if parts.fragment
        else None
    )
    if problem:
        raise InputError(
            f"{where}: {value!r} should not include {problem}; give scheme://host:port"
        )
    try:
        port = parts.port
    except ValueError:
        raise InputError(f"{where}: {value!r}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise InputError(f"{where}: {value!r} names no host; give scheme://host:port")
    return Endpoint(parts.hostname, port or DEFAULT_PORT, scheme in SECURE_SCHEMES)


@dataclass(frozen=True)
class PachctlContext:
    name: str
    path: Path
    endpoint: Endpoint | None
    session_token: str | None = field(repr=False)
    server_cas: bytes | None = field(repr=False)  # PEM


def pachctl_config_path(env: Mapping[str, str]) -> Path:
    """Where pachctl reads its config (config.configPath)."""
    if env.get("PACH_CONFIG"):
        return Path(env["PACH_CONFIG"])
    if PACHCTL_IN_CLUSTER_CONFIG.is_file():
        return PACHCTL_IN_CLUSTER_CONFIG
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".pachyderm" / "config.json"


def _get(doc: Any, *names: str) -> Any:
    """pachctl writes its config with protojson: a key may be snake_case or camelCase."""
    if not isinstance(doc, dict):
        return None
    for name in names:
        if name in doc:
            return doc[name]
        camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
        if camel in doc:
            return doc[camel]
    return None


def pachctl_contexts(env: Mapping[str, str]) -> tuple[Path, str | None, dict[str, dict[str, Any]]]:
    """(config path, the active context's name, every context as written) from pachctl's
    config; a missing file has none. The active one is PACH_CONTEXT, else
    v2.active_context. Contexts are parsed only when used, so a broken one that pachhook
    does not need stays harmless."""
    path = pachctl_config_path(env)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return path, None, {}
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read pachctl's config ({exc.strerror}); fix or remove it"
        ) from None
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}:{exc.lineno}: pachctl's config is not valid JSON ({exc.msg}); fix it"
        ) from None
    v2 = _get(doc, "v2")
    contexts = _get(v2, "contexts")
    if not isinstance(contexts, dict):
        contexts = {}
    active = env.get("PACH_CONTEXT") or _get(v2, "active_context") or None
    usable = {str(k): v for k, v in contexts.items() if isinstance(v, dict)}
    return path, (str(active) if active else None), usable


def _context(name: str, ctx: dict[str, Any], path: Path) -> PachctlContext:
    where = f"{path}: context {name!r}"
    address = _get(ctx, "pachd_address") or ""
    endpoint = None
    if address:
        endpoint = parse_address(str(address), f"{where}: pachd_address")
    else:
        forwarded = _get(_get(ctx, "port_forwarders"), "pachd")
        if isinstance(forwarded, int) and forwarded > 0:
            endpoint = Endpoint("localhost", forwarded, False)
    cas = _get(ctx, "server_cas") or None
    pem = None
    if cas:
        try:
            pem = base64.b64decode(str(cas), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(
                f"{where}: server_cas is not base64-encoded PEM; fix it with pachctl config"
            ) from None
        if endpoint is not None and not endpoint.tls:
            raise InputError(
                f"{where}: server_cas is set but pachd_address is not grpcs://; "
                "make it grpcs://... (as pachctl requires)"
            )
    token = _get(ctx, "session_token") or None
    return PachctlContext(name, path, endpoint, str(token) if token else None, pem)


@dataclass(frozen=True)
class Connection:
    """How to reach pachd and who to be there. The token never appears in its repr."""

    endpoint: Endpoint
    source: str  # where the address came from, for messages
    token: str | None = field(repr=False)
    token_source: str | None
    root_certs: bytes | None = field(default=None, repr=False)  # PEM; None: the system's


def resolve_connection(config: Config, env: Mapping[str, str]) -> Connection:
    """The address from the configuration, else PACHYDERM_CLUSTER_URL, else pachctl's
    active context; the token from PACHYDERM_TOKEN, else that context's session token.

    A pachctl context lends its token and certificates only to its own address:
    pachhook never sends a session token to a server it was not issued for."""
    address = config.pachyderm.address
    env_token = env.get("PACHYDERM_TOKEN") or None
    if address:
        if env.get("PACHYDERM_CLUSTER_URL") == address:
            source = "PACHYDERM_CLUSTER_URL"
        else:
            source = f"{config.path or 'the configuration'}: [pachyderm] address"
        endpoint = parse_address(address, source)
        try:
            path, active, contexts = pachctl_contexts(env)
        except InputError:
            if not env_token:
                raise
            path, active, contexts = Path(), None, {}  # pachctl's config is not needed at all
        context = None
        # The active context first, then any other context for the same cluster.
        for name in sorted(contexts, key=lambda n: (n != active, n)):
            try:
                candidate = _context(name, contexts[name], path)
            except InputError:
                continue
            if candidate.endpoint == endpoint:
                context = candidate
                break
    else:
        path, active, contexts = pachctl_contexts(env)
        if not active:
            raise InputError(f"no Pachyderm cluster is configured: {SETUP_HINT}")
        if active not in contexts:
            raise InputError(
                f"{path}: pachctl's active context {active!r} does not exist; {SETUP_HINT}"
            )
        context = _context(active, contexts[active], path)
        if context.endpoint is None:
            raise InputError(
                f"{path}: pachctl context {active!r} has no pachd_address "
                f"(pachctl would port-forward, which pachhook does not do); {SETUP_HINT}"
            )
        endpoint = context.endpoint
        source = f"pachctl context {active!r} in {path}"
    if env_token:
        token, token_source = env_token, "PACHYDERM_TOKEN"
    elif context is not None and context.session_token:
        token, token_source = context.session_token, f"pachctl context {context.name!r}"
    else:
        token, token_source = None, None
    return Connection(
        endpoint=endpoint,
        source=source,
        token=token,
        token_source=token_source,
        root_certs=context.server_cas if context is not None else None,
    )


def system_root_certs() -> bytes:
    """PEM roots for TLS: the system's bundle (as pachctl uses), else certifi's."""
    paths = ssl.get_default_verify_paths()
    candidates = [paths.cafile, paths.openssl_cafile]
    try:
        import certifi

        candidates.append(certifi.where())
    except ImportError:
        pass
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            pem = Path(candidate).read_bytes()
            if PEM_CERTIFICATE in pem:
                return pem
    raise PachhookError(
        "no root certificates found for TLS (no system CA bundle, no certifi); "
        "install ca-certificates or certifi, or give server_cas in pachctl's context"
    )


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


# -- the cluster --------------------------------------------------------------------------


class PachydermCluster:
    """The `Cluster` of the executor, over python-pachyderm."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._root_certs: bytes | None = None
        if connection.endpoint.tls:
            self._root_certs = _pem(connection.root_certs or system_root_certs())
        self._client = self._new_client()

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
        """One ListPipeline: it returns details (and so annotations) in pachd 2.7."""
        try:
            infos = list(self._client.list_pipeline(details=True))
        except client_errors() as exc:
            raise self._failure(exc, "listing pipelines") from None
        digests: dict[tuple[str, str], str | None] = {}
        for info in infos:
            key = (info.pipeline.project.name or DEFAULT_PROJECT, info.pipeline.name)
            digests[key] = info.details.metadata.annotations.get(ANNOTATION_DIGEST)
        return digests

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

    def apply(self, specs: Sequence[tuple[PipelinePlan, dict[str, Any]]], reprocess: bool) -> str:
        """Create or update every spec in one transaction, in the given order; its id.

        Every spec is converted before the transaction starts, so a spec python-pachyderm
        cannot read stops the run with nothing sent."""
        requests = [(plan, to_request(plan, spec, reprocess)) for plan, spec in specs]
        try:
            transaction = self._client.start_transaction()
        except client_errors() as exc:
            raise self._failure(exc, "starting a transaction") from None
        txn_id: str = transaction.id
        queue = self._new_client(transaction_id=txn_id)
        for plan, request in requests:
            try:
                queue.create_pipeline_from_request(request)
            except client_errors() as exc:
                self._abandon(txn_id)
                raise self._failure(
                    exc, f"sending pipeline {_name(plan)} ({plan.pipeline.where})", applied=False
                ) from None
        try:
            self._client.finish_transaction(transaction)
        except client_errors() as exc:
            culprit = _culprit(exc, [plan for plan, _ in requests])
            what = f"finishing transaction {txn_id}"
            if culprit is not None:
                what += f" at pipeline {_name(culprit)} ({culprit.pipeline.where})"
            if self._abandon(txn_id):
                raise self._failure(exc, what, applied=False) from None
            raise self._failure(
                exc, f"{what} (whether it was applied is unknown: check pachctl list pipeline)"
            ) from None
        return txn_id

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


def _culprit(exc: BaseException, plans: Sequence[PipelinePlan]) -> PipelinePlan | None:
    """The pipeline a transaction failed on: pachd says "error running request i of n"."""
    match = _REQUEST_INDEX.search(_status(exc)[1])
    if match and int(match.group(2)) == len(plans) and 1 <= int(match.group(1)) <= len(plans):
        return plans[int(match.group(1)) - 1]
    return None


def _name(plan: PipelinePlan) -> str:
    return f"{plan.pipeline.project}/{plan.pipeline.name}"


# -- specs -> requests ----------------------------------------------------------------------


def to_request(plan: PipelinePlan, spec: dict[str, Any], reprocess: bool) -> Any:
    """The CreatePipelineRequest for one rewritten spec: update (pachd creates a missing
    pipeline), reprocess as asked, and the project pachhook keyed the pipeline by."""
    import python_pachyderm
    from google.protobuf import json_format

    try:
        request = python_pachyderm.parse_dict_pipeline_spec(spec)
    except (json_format.Error, TypeError, ValueError, AttributeError) as exc:
        raise InputError(
            f"{plan.pipeline.where}: pipeline {plan.pipeline.name}: {_parse_problem(str(exc))}"
        ) from None
    request.update = True
    request.reprocess = reprocess
    request.pipeline.project.name = plan.pipeline.project
    return request


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
