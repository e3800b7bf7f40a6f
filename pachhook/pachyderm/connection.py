"""Where the Pachyderm cluster is and how to reach it: the address, pachctl's contexts,
the token and the TLS roots.

Nothing here talks to pachd, so resolving a connection imports neither python_pachyderm
nor grpc (half a second between them).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pachhook.config import Config
from pachhook.errors import InputError, PachhookError
from pachhook.repo.settings import Settings

DEFAULT_PORT = 30650  # pachctl's default for every scheme (grpcutil.DefaultPachdNodePort)
SCHEMES = ("grpc", "grpcs", "http", "https")
SECURE_SCHEMES = ("grpcs", "https")
PACHCTL_IN_CLUSTER_CONFIG = Path("/pachctl/config.json")
PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"

SETUP_HINT = (
    "set PACHYDERM_CLUSTER_URL, or point pachctl at the cluster "
    "(pachctl config set active-context ...)"
)


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
    withheld: str | None = None  # why a token the operator gave was not sent, for messages


@dataclass(frozen=True)
class _Operator:
    """The operator's cluster: PACHYDERM_CLUSTER_URL, else pachctl's active context."""

    endpoint: Endpoint
    source: str
    context: PachctlContext | None


def _operator(env: Mapping[str, str], contexts: _Contexts) -> _Operator | None:
    url = env.get("PACHYDERM_CLUSTER_URL", "")
    if url.strip():
        return _Operator(parse_address(url, "PACHYDERM_CLUSTER_URL"), "PACHYDERM_CLUSTER_URL", None)
    path, active, found = contexts.get()
    if not active:
        return None
    if active not in found:
        raise InputError(
            f"{path}: pachctl's active context {active!r} does not exist; {SETUP_HINT}"
        )
    context = _context(active, found[active], path)
    if context.endpoint is None:
        raise InputError(
            f"{path}: pachctl context {active!r} has no pachd_address "
            f"(pachctl would port-forward, which pachhook does not do); {SETUP_HINT}"
        )
    return _Operator(context.endpoint, f"pachctl context {active!r} in {path}", context)


class _Contexts:
    """pachctl's contexts, read once and only when needed."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self._found: tuple[Path, str | None, dict[str, dict[str, Any]]] | None = None

    def get(self) -> tuple[Path, str | None, dict[str, dict[str, Any]]]:
        if self._found is None:
            self._found = pachctl_contexts(self.env)
        return self._found

    def for_endpoint(self, endpoint: Endpoint) -> PachctlContext | None:
        """The context for `endpoint` (the active one first); a context lends its token and
        certificates only to its own address. A broken pachctl config lends nothing."""
        try:
            path, active, found = self.get()
        except InputError:
            return None
        for name in sorted(found, key=lambda n: (n != active, n)):
            try:
                candidate = _context(name, found[name], path)
            except InputError:
                continue
            if candidate.endpoint == endpoint:
                return candidate
        return None


def resolve_connection(
    config: Config, env: Mapping[str, str], settings: Settings | None = None
) -> Connection:
    """The operator's cluster (PACHYDERM_CLUSTER_URL, else pachctl's active context), and
    the token for it: PACHYDERM_TOKEN, else the session token of pachctl's context for it.

    The repository does not choose where the token goes: a `[pachyderm] address` in the
    configuration must name the operator's cluster, unless the operator allows it to
    choose (PACHHOOK_ALLOW_CONFIG_ADDRESS); even then PACHYDERM_TOKEN stays with the
    operator's cluster, and only a pachctl context made for that address lends its own.
    A token is never sent in plain text beyond loopback unless the operator allows it."""
    settings = settings if settings is not None else Settings.from_env(env)
    contexts = _Contexts(env)
    configured = config.pachyderm.address
    env_token = env.get("PACHYDERM_TOKEN") or None
    if configured is None:
        operator = _operator(env, contexts)
        if operator is None:
            raise InputError(f"no Pachyderm cluster is configured: {SETUP_HINT}")
        endpoint, source = operator.endpoint, operator.source
    else:
        source = f"{config.path or 'the configuration'}: [pachyderm] address"
        endpoint = parse_address(configured, source)
        if env.get("PACHYDERM_CLUSTER_URL", "").strip():
            operator = _operator(env, contexts)
        else:
            try:
                operator = _operator(env, contexts)
            except InputError:
                operator = None  # a broken pachctl config names no cluster of the operator's
        if operator is not None and operator.endpoint == endpoint:
            source = operator.source
        elif not settings.allow_config_address:
            raise InputError(_foreign_address(source, endpoint, operator, settings))
    mine = operator is not None and operator.endpoint == endpoint
    context = (operator.context if mine and operator else None) or contexts.for_endpoint(endpoint)
    token, token_source, withheld = None, None, None
    if env_token and mine:
        token, token_source = env_token, "PACHYDERM_TOKEN"
    elif context is not None and context.session_token:
        token, token_source = context.session_token, f"pachctl context {context.name!r}"
    if env_token and not mine:
        withheld = (
            "PACHYDERM_TOKEN was not sent: it goes only to the operator's cluster "
            "(PACHYDERM_CLUSTER_URL, else pachctl's active context)"
        )
    plain = token is not None and not endpoint.tls and not is_loopback(endpoint.host)
    if plain and not settings.allow_plaintext_token:
        raise InputError(
            f"{source}: {endpoint.url} is plain grpc:// beyond this machine, and the token "
            f"from {token_source} would cross the network unencrypted; use grpcs://, or "
            f"allow it with {settings.how_to_set('allow_plaintext_token', 'true')}"
        )
    return Connection(
        endpoint=endpoint,
        source=source,
        token=token,
        token_source=token_source,
        root_certs=context.server_cas if context is not None else None,
        withheld=withheld,
    )


def _foreign_address(
    source: str, endpoint: Endpoint, operator: _Operator | None, settings: Settings
) -> str:
    theirs = (
        f"the operator's cluster is {operator.endpoint.url} (from {operator.source})"
        if operator is not None
        else "the operator names no cluster (no PACHYDERM_CLUSTER_URL, no active pachctl context)"
    )
    return (
        f"{source}: {endpoint.url} is chosen by the repository, and {theirs}; pachhook deploys "
        "only where the operator points it: set PACHYDERM_CLUSTER_URL to this address, or let "
        f"the repository choose with {settings.how_to_set('allow_config_address', 'true')}"
    )


def is_loopback(host: str) -> bool:
    """A host name or address that never leaves this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
