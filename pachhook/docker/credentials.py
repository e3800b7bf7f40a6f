"""Registry credentials, each bound to the host it was given for: a host-bound variable
(`PACHHOOK_REGISTRY_AUTH_<host>`), else Docker's own config and credential helpers as
`docker login` left them, else, for Docker Hub alone, the seed's DOCKERHUB_USERNAME and
DOCKERHUB_TOKEN.

An image name comes from the repository; which credential a host gets never does. The
variable's name spells the host the way Terraform's TF_TOKEN_<host> does, extended to
ports, so that no two hosts share one: `.` is `_`, `-` is `__`, `:` is `___`
(`ghcr.io` -> PACHHOOK_REGISTRY_AUTH_ghcr_io, `my-reg.example:5000` ->
PACHHOOK_REGISTRY_AUTH_my__reg_example___5000); its value is `USERNAME:TOKEN`.

docker-py is imported only to read Docker's config, and only when credentials are needed
(a push, or a registry that refuses to be read anonymously).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pachhook.errors import InputError, PachhookError, one_line

DOCKER_HUB = "docker.io"
HOST_VARIABLE = "PACHHOOK_REGISTRY_AUTH_"


@dataclass(frozen=True)
class Credentials:
    """Registry credentials. Secrets are kept out of repr: an exception or a log line that
    shows this object shows no secret."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)
    from_docker_config: bool = False

    def auth_config(self) -> dict[str, str]:
        """docker-py's `auth_config` form."""
        if self.identity_token:
            return {"identitytoken": self.identity_token}
        return {"username": self.username or "", "password": self.password or ""}

    def basic(self) -> str | None:
        if self.username is None or self.identity_token:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def docker_config_path(env: Mapping[str, str]) -> str:
    folder = env.get("DOCKER_CONFIG") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".docker"
    )
    return os.path.join(folder, "config.json")


def docker_config_credentials(registry: str, env: Mapping[str, str]) -> Credentials | None:
    """Docker's own config (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`) and its
    credential helpers, as `docker login` left them."""
    import docker.auth
    import docker.credentials
    import docker.errors

    folder = env.get("DOCKER_CONFIG")
    path = os.path.join(folder, "config.json") if folder else None
    try:
        with warnings.catch_warnings():
            # docker-py warns on standard error about a helper it cannot find; the
            # error below says it in pachhook's one line.
            warnings.simplefilter("ignore")
            found = docker.auth.load_config(path).resolve_authconfig(registry)
    except (docker.errors.DockerException, docker.credentials.StoreError) as exc:
        missing = missing_helper(env, [registry])
        if missing:
            raise InputError(missing) from None
        # The store's own error text names the helper; it carries no secret.
        raise PachhookError(
            f"Docker's credential store failed for {registry} ({one_line(str(exc), 160)}); "
            f"run docker login {registry} again or fix credsStore in Docker's config.json"
        ) from None
    if not found:
        return None
    values = {str(k).lower(): v for k, v in found.items()}
    if values.get("identitytoken"):
        return Credentials(identity_token=values["identitytoken"], from_docker_config=True)
    if values.get("username"):
        return Credentials(values["username"], values.get("password"), from_docker_config=True)
    return None


def host_variable(host: str) -> str:
    """The variable that holds credentials for `host` (see the module's notes)."""
    spelled = re.sub(r"-+", lambda m: "__" * len(m.group()), host.lower())
    return HOST_VARIABLE + spelled.replace(":", "___").replace(".", "_")


def _host_of(variable: str) -> str | None:
    """The host a variable's name spells; None when it spells none."""
    spelled = variable[len(HOST_VARIABLE) :].lower()
    parts = re.split(r"(_+)", spelled)
    out = []
    for part in parts:
        if not part.startswith("_"):
            out.append(part)
        elif len(part) == 1:
            out.append(".")
        elif len(part) == 3:
            out.append(":")
        elif len(part) % 2 == 0:
            out.append("-" * (len(part) // 2))
        else:
            return None
    host = "".join(out)
    return host if host and host_variable(host).lower() == variable.lower() else None


def host_bound_credentials(host: str, env: Mapping[str, str]) -> Credentials | None:
    """`PACHHOOK_REGISTRY_AUTH_<host>` (its name in any case), as USERNAME:TOKEN."""
    wanted = host_variable(host).lower()
    for name, value in env.items():
        if name.lower() == wanted and value:
            username, sep, token = value.partition(":")
            if not sep or not username:
                raise InputError(
                    f"{name}: expected USERNAME:TOKEN for registry {host}; fix its value"
                )
            return Credentials(username, token)
    return None


def environment_credentials(host: str, env: Mapping[str, str]) -> Credentials | None:
    """The credentials the environment gives for `host`: its host-bound variable, and for
    Docker Hub alone, the seed's DOCKERHUB_USERNAME and DOCKERHUB_TOKEN."""
    found = host_bound_credentials(host, env)
    if found is not None or host != DOCKER_HUB:
        return found
    username = env.get("DOCKERHUB_USERNAME", "").strip()
    token = env.get("DOCKERHUB_TOKEN", "")
    return Credentials(username, token) if username and token else None


def environment_hosts(env: Mapping[str, str]) -> list[str]:
    """Every host the environment holds credentials for."""
    hosts = [
        host
        for name in env
        if name.upper().startswith(HOST_VARIABLE) and (host := _host_of(name)) is not None
    ]
    if env.get("DOCKERHUB_USERNAME", "").strip() and env.get("DOCKERHUB_TOKEN"):
        hosts.append(DOCKER_HUB)
    return sorted(set(hosts))


def check_environment(env: Mapping[str, str]) -> None:
    """Every host-bound variable names a host and holds USERNAME:TOKEN; checked before any
    work, so that a mistyped one is said at once rather than when a build needs it."""
    for name in env:
        if name.upper().startswith(HOST_VARIABLE) and name.upper() != HOST_VARIABLE:
            host = _host_of(name)
            if host is None:
                raise InputError(
                    f"{name}: names no registry host (spell it as `.` -> _, `-` -> __, "
                    "`:` -> ___, e.g. PACHHOOK_REGISTRY_AUTH_127_0_0_1___5000); fix its name"
                )
            host_bound_credentials(host, env)


def login_hint(host: str) -> str:
    """What to do when a registry wants credentials that pachhook does not have."""
    also = "DOCKERHUB_USERNAME and DOCKERHUB_TOKEN, or " if host == DOCKER_HUB else ""
    return f"run docker login {host}, or set {also}{host_variable(host)}=USERNAME:TOKEN"


def missing_helper(env: Mapping[str, str], hosts: Iterable[str] | None = None) -> str | None:
    """The complaint about a credential helper Docker's config names that is not on PATH
    (as from a hook whose PATH is short), for `hosts` (None: every helper, since a build
    hands every credential to the engine); None when all are there."""
    path = docker_config_path(env)
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError, RecursionError):
        return None  # docker-py reads no credentials from it either
    if not isinstance(doc, dict):
        return None
    wanted: list[tuple[str, str]] = []
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        wanted.append(("credsStore", store))
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        chosen = set(hosts) if hosts is not None else None
        for registry, name in helpers.items():
            if isinstance(name, str) and name and (chosen is None or registry in chosen):
                wanted.append((f"credHelpers[{registry!r}]", name))
    search = env.get("PATH", os.defpath)
    for key, name in wanted:
        program = f"docker-credential-{name}"
        if shutil.which(program, path=search) is None:
            return (
                f"{path}: {key} names the credential helper {program}, which is not on PATH "
                f"({search}); install it or add its folder to PATH (hooks run with git's PATH), "
                f"or remove {key} from that file"
            )
    return None
