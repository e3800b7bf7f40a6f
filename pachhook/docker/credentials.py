"""Registry credentials: Docker's own config and credential helpers, as `docker login` left
them, else the seed's DOCKERHUB_USERNAME and DOCKERHUB_TOKEN.

docker-py is imported only to read Docker's config, and only when credentials are needed
(a push, or a registry that refuses to be read anonymously).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pachhook.errors import PachhookError, one_line


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


def docker_config_credentials(registry: str, env: Mapping[str, str]) -> Credentials | None:
    """Docker's own config (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`) and its
    credential helpers, as `docker login` left them."""
    import docker.auth
    import docker.errors

    folder = env.get("DOCKER_CONFIG")
    path = os.path.join(folder, "config.json") if folder else None
    try:
        found = docker.auth.load_config(path).resolve_authconfig(registry)
    except docker.errors.DockerException as exc:
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


def environment_credentials(env: Mapping[str, str]) -> Credentials | None:
    """The seed's variables, for any registry that Docker's config has no entry for."""
    username = env.get("DOCKERHUB_USERNAME", "").strip()
    token = env.get("DOCKERHUB_TOKEN", "")
    return Credentials(username, token) if username and token else None
