"""The registry's HTTP API: is a tag there, which manifest does it serve, and which labels
does its image hold.

The registry is asked over its HTTP API with urllib, not through the engine
(`inspect_distribution`): the engine's answer holds no image config, so it cannot tell our
content from someone else's under the same tag, and it folds "no such tag" and "not
allowed" into one error.

No docker-py here: a run whose images are all in the registry needs only these requests
(and Docker's config, through credentials.py, when a registry refuses to be read anonymously).
`Registries` holds one `Registry` and one set of credentials per host, for the lookup
(cache.py) and the engine's push alike.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pachhook.config import normalize_repository
from pachhook.docker.credentials import (
    DOCKER_HUB,
    Credentials,
    docker_config_credentials,
    environment_credentials,
    host_bound_credentials,
    login_hint,
)
from pachhook.errors import PachhookError, one_line

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
INDEX_TYPES = frozenset(MANIFEST_TYPES[1::2])

DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_REALMS = ("auth.docker.io",)  # Docker Hub's token service is on its own host
REGISTRY_TIMEOUT = 30.0


def split_name(name: str) -> tuple[str, str]:
    """(registry host, repository path) of an image name, with Docker's defaults."""
    host, _, path = normalize_repository(name).partition("/")
    return host, path


def is_loopback(host: str) -> bool:
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    bare = bare.strip("[]")
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class RegistryError(PachhookError):
    """The registry could not be asked, or refused us."""


class Registry:
    """One registry's HTTP API (distribution v2) over urllib, with Docker's auth dance:
    anonymous first, then what `WWW-Authenticate` asks for (a bearer token from the
    realm it names, or basic auth). Thread-safe: tokens are cached under a lock."""

    def __init__(
        self,
        host: str,
        credentials: Callable[[], Credentials | None],
        *,
        realm_hosts: tuple[str, ...] = (),
        timeout: float = REGISTRY_TIMEOUT,
    ) -> None:
        self.host = host
        self.api_host = DOCKER_HUB_API if host == DOCKER_HUB else host
        self._credentials = credentials
        self.realm_hosts = realm_hosts  # other hosts the operator lets issue tokens
        self.timeout = timeout
        self._lock = threading.Lock()
        self._tokens: dict[str, str] = {}  # scope -> Authorization header value
        self._scheme: str | None = None
        proxies: dict[str, str] | None = {} if is_loopback(host) else None
        # Loopback registries are never reached through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler(proxies))

    # - requests -

    def request(self, method: str, path: str, *, scope: str, accept: str | None = None) -> Response:
        with self._lock:
            auth = self._tokens.get(scope)
        response = self._send(method, path, accept, auth)
        if response.status != 401:
            return response
        challenge = response.headers.get("Www-Authenticate") or response.headers.get(
            "WWW-Authenticate", ""
        )
        auth = self._authorize(challenge, scope)
        if auth is None:
            return response
        with self._lock:
            self._tokens[scope] = auth
        return self._send(method, path, accept, auth)

    def _send(self, method: str, path: str, accept: str | None, auth: str | None) -> Response:
        schemes = [self._scheme] if self._scheme else ["https", "http"]
        for scheme in schemes:
            try:
                response = self._open(method, f"{scheme}://{self.api_host}{path}", accept, auth)
            except _TLSRefused:
                # Docker talks plain HTTP to loopback registries after TLS fails, and so do we.
                if scheme == "https" and len(schemes) > 1 and is_loopback(self.host):
                    continue
                raise RegistryError(
                    f"registry {self.host}: the TLS handshake failed; serve it over TLS (only "
                    "loopback registries are spoken to over plain HTTP, as Docker does)"
                ) from None
            self._scheme = scheme
            return response
        raise AssertionError("unreachable")

    def _open(
        self,
        method: str,
        url: str,
        accept: str | None,
        auth: str | None,
        data: bytes | None = None,
    ) -> Response:
        req = urllib.request.Request(url, method=method, data=data)
        req.add_header("User-Agent", "pachhook")
        if accept:
            req.add_header("Accept", accept)
        if auth:
            # Unredirected: a blob redirect to object storage must not carry the token.
            req.add_unredirected_header("Authorization", auth)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return Response(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return Response(exc.code, dict(exc.headers.items()), exc.read(4096))
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLError):
                raise _TLSRefused from None
            raise self._unreachable(_reason(exc.reason)) from None
        except (ssl.SSLError, ConnectionResetError, http.client.BadStatusLine):
            raise _TLSRefused from None
        except (OSError, http.client.HTTPException) as exc:
            raise self._unreachable(_reason(exc)) from None

    def _unreachable(self, why: str) -> RegistryError:
        return RegistryError(
            f"registry {self.host} unreachable ({why}); check that it is running and "
            "reachable, and the image name in the configuration"
        )

    def _authorize(self, challenge: str, scope: str) -> str | None:
        kind, _, rest = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        creds = self._credentials()
        if kind.lower() == "basic":
            return creds.basic() if creds else None
        if kind.lower() != "bearer" or "realm" not in params:
            return None
        query = {"service": params.get("service", ""), "scope": scope}
        realm = params["realm"]
        if creds is not None:
            self._check_realm(realm)
        data = None
        auth = None
        if creds and creds.identity_token:
            form = {**query, "grant_type": "refresh_token", "client_id": "pachhook"}
            form["refresh_token"] = creds.identity_token
            data = urllib.parse.urlencode(form).encode()
        else:
            realm += ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
            auth = creds.basic() if creds else None
        try:
            response = self._open("POST" if data else "GET", realm, None, auth, data)
        except _TLSRefused:
            raise RegistryError(
                f"registry {self.host}: its token service {_without_query(realm)} does not "
                "speak TLS; fix the registry's auth realm"
            ) from None
        if response.status in (401, 403):
            raise unauthorized(self.host, "read", creds is not None)
        if response.status != 200:
            return None
        try:
            answer = json.loads(response.body)
        except ValueError:
            return None
        token = answer.get("token") or answer.get("access_token")
        return f"Bearer {token}" if token else None

    def _check_realm(self, realm: str) -> None:
        """A credential for this registry goes only to a token service over TLS (plain HTTP
        on loopback alone) on the registry's own host or one the operator lists."""
        parts = urllib.parse.urlsplit(realm)
        where = parts.hostname or ""
        if parts.scheme not in ("https", "http") or not where:
            raise RegistryError(
                f"registry {self.host}: its token service {_without_query(realm)!r} is not an "
                "http(s) URL; no credentials were sent"
            )
        if parts.scheme == "http" and not is_loopback(where):
            raise RegistryError(
                f"registry {self.host}: its token service {_without_query(realm)} is plain "
                "http://; credentials go to a token service only over https: no credentials "
                "were sent"
            )
        own = {_hostname(self.host), _hostname(self.api_host)}
        if self.host == DOCKER_HUB:
            own.update(DOCKER_HUB_REALMS)
        same_machine = is_loopback(where) and is_loopback(self.host)
        if where.lower() not in own | set(self.realm_hosts) and not same_machine:
            raise RegistryError(
                f"registry {self.host}: its token service is on another host, {where}, and the "
                f"credentials for {self.host} go only to {self.host}: no credentials were sent; "
                f"if {where} is its token service, allow it with PACHHOOK_TOKEN_REALM_HOSTS={where} "
                f"(or git config pachhook.tokenRealmHosts {where})"
            )

    # - what pachhook asks -

    def manifest_digest(self, path: str, tag: str) -> str | None:
        """The digest of the manifest the registry serves for `path:tag`; None when there is
        none; "" when the registry does not say."""
        response = self._checked(
            "HEAD", f"/v2/{path}/manifests/{tag}", path, accept=", ".join(MANIFEST_TYPES)
        )
        if response is None:
            return None
        return response.headers.get("Docker-Content-Digest", "")

    def labels(self, path: str, tag: str, platform: str | None) -> dict[str, str] | None:
        """The labels of the image config behind `path:tag`; None when there is no such tag."""
        accept = ", ".join(MANIFEST_TYPES)
        response = self._checked("GET", f"/v2/{path}/manifests/{tag}", path, accept=accept)
        if response is None:
            return None
        manifest = _json(response.body)
        media = manifest.get("mediaType") or response.headers.get("Content-Type", "")
        if media in INDEX_TYPES or "manifests" in manifest:
            chosen = _pick_platform(manifest.get("manifests") or [], platform)
            if chosen is None:
                return {}
            inner = self._checked("GET", f"/v2/{path}/manifests/{chosen}", path, accept=accept)
            manifest = _json(inner.body) if inner else {}
        config = (manifest.get("config") or {}).get("digest")
        if not config:
            return {}
        blob = self._checked("GET", f"/v2/{path}/blobs/{config}", path)
        image = _json(blob.body) if blob else {}
        return dict((image.get("config") or {}).get("Labels") or {})

    def _checked(
        self, method: str, url_path: str, path: str, accept: str | None = None
    ) -> Response | None:
        response = self.request(method, url_path, scope=f"repository:{path}:pull", accept=accept)
        if response.status == 404:
            return None
        if response.status in (401, 403):
            raise unauthorized(self.host, "read", self._credentials() is not None)
        if response.status >= 300:
            detail = one_line(response.body.decode(errors="replace"), 160) or "no detail"
            raise RegistryError(
                f"registry {self.host} answered {response.status} for {path} ({detail}); "
                "check the registry and try again"
            )
        return response


class _TLSRefused(Exception):
    """A TLS handshake failed: the server may speak plain HTTP."""


def unauthorized(host: str, action: str, had_credentials: bool) -> RegistryError:
    what = "refused the credentials" if had_credentials else "asks for credentials"
    return RegistryError(
        f"registry {host} {what} to {action} images (unauthorized or denied); {login_hint(host)}"
    )


def _pick_platform(entries: list[dict[str, Any]], platform: str | None) -> str | None:
    if not entries:
        return None
    if platform:
        wanted = platform.split("/")
        for entry in entries:
            p = entry.get("platform") or {}
            have = [p.get("os", ""), p.get("architecture", ""), p.get("variant", "")]
            if have[: len(wanted)] == wanted:
                return str(entry.get("digest"))
    return str(entries[0].get("digest"))


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _reason(exc: object) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = getattr(exc, "strerror", None) or str(exc)
    return one_line(text, 120)


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


def _hostname(host: str) -> str:
    """A registry host without its port."""
    return (urllib.parse.urlsplit(f"//{host}").hostname or host).lower()


class Registries:
    """Every registry a run talks to, and the credentials for each, found once per host:
    its host-bound variable, Docker's own config and helpers, and for Docker Hub the
    seed's variables (credentials.py). No host ever gets another host's credentials."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        realm_hosts: tuple[str, ...] = (),
        timeout: float = REGISTRY_TIMEOUT,
    ) -> None:
        self.env = dict(env)
        self.realm_hosts = realm_hosts
        self.timeout = timeout
        self._lock = threading.Lock()
        self._registries: dict[str, Registry] = {}
        self._credentials: dict[str, Credentials | None] = {}

    def credentials(self, host: str) -> Credentials | None:
        with self._lock:
            if host not in self._credentials:
                self._credentials[host] = (
                    host_bound_credentials(host, self.env)
                    or docker_config_credentials(host, self.env)
                    or environment_credentials(host, self.env)
                )
            return self._credentials[host]

    def registry(self, host: str) -> Registry:
        with self._lock:
            registry = self._registries.get(host)
            if registry is None:
                registry = Registry(
                    host,
                    lambda: self.credentials(host),
                    realm_hosts=self.realm_hosts,
                    timeout=self.timeout,
                )
                self._registries[host] = registry
            return registry
