"""The real services used by the test suite: engine, registry, base image."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import docker
import pytest

from tests import helpers, services


def _unavailable(exc: BaseException) -> NoReturn:
    helpers.unavailable(f"service could not be started: {exc}")


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _push(
    client: docker.DockerClient,
    repository: str,
    tag: str,
    auth_config: dict[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Push and return the streamed chunks and the errors among them.

    The engine reports registry errors inside a stream whose HTTP status is 200,
    so the chunks have to be read.
    """
    chunks = list(
        client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config)
    )
    errors = [
        str(c.get("error") or c.get("errorDetail"))
        for c in chunks
        if "error" in c or "errorDetail" in c
    ]
    return chunks, errors


@pytest.mark.docker
def test_build_from_base_image_and_push_to_registry(
    docker_engine: services.DockerEngine,
    registry: services.Registry,
    base_image: str,
    tmp_path: Path,
) -> None:
    (tmp_path / "greeting.txt").write_text("hello\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base_image}\n"
        "COPY greeting.txt /greeting.txt\n"
        "RUN cat /greeting.txt > /built.txt && echo built-by-run >> /built.txt\n"
    )
    repo = _unique("services-test/app")
    image_ref = f"{registry.address}/{repo}"
    client = docker_engine.client()
    try:
        image, _ = client.images.build(path=str(tmp_path), tag=f"{image_ref}:1", rm=True)

        base = client.images.get(base_image)
        assert image.attrs["RootFS"]["Layers"][0] == base.attrs["RootFS"]["Layers"][0]
        out = client.containers.run(
            image.id, ["cat", "/built.txt"], remove=True, network_mode="none"
        )
        assert out == b"hello\nbuilt-by-run\n"

        assert registry.tags(repo) == []
        chunks, errors = _push(client, image_ref, "1")
        assert errors == []
        pushed = [c["aux"]["Digest"] for c in chunks if "Digest" in c.get("aux", {})]
        assert len(pushed) == 1

        assert registry.tags(repo) == ["1"]
        assert registry.has_manifest(repo, "1")
        assert not registry.has_manifest(repo, "2")
        assert registry.manifest_digest(repo, "1") == pushed[0]
        assert registry.tags(_unique("never/pushed")) == []
    finally:
        client.close()


@pytest.mark.docker
def test_auth_registry_refuses_wrong_credentials_and_accepts_right_ones(
    docker_engine: services.DockerEngine,
    base_image: str,
    auth_registry: Callable[[str, str], services.Registry],
) -> None:
    reg = auth_registry("pachhook", "right-password")
    assert reg.auth_config == {"username": "pachhook", "password": "right-password"}
    repo = _unique("services-test/auth")
    image_ref = f"{reg.address}/{repo}"

    with pytest.raises(services.RegistryHTTPError) as anonymous:
        reg.client(anonymous=True).tags(repo)
    assert anonymous.value.status == 401
    with pytest.raises(services.RegistryHTTPError) as wrong_http:
        reg.client("pachhook", "wrong-password").has_manifest(repo, "1")
    assert wrong_http.value.status == 401

    client = docker_engine.client()
    try:
        assert client.images.get(base_image).tag(image_ref, "1")

        with pytest.raises(docker.errors.APIError):
            client.login("pachhook", "wrong-password", registry=reg.address, reauth=True)

        _, errors = _push(
            client, image_ref, "1", {"username": "pachhook", "password": "wrong-password"}
        )
        assert errors, "a push with a wrong password was not refused"
        _, errors = _push(client, image_ref, "1")
        assert errors, "a push without credentials was not refused"
        assert reg.tags(repo) == []

        login = client.login("pachhook", "right-password", registry=reg.address, reauth=True)
        assert "Login Succeeded" in str(login)
        _, errors = _push(client, image_ref, "1", reg.auth_config)
        assert errors == []
        assert reg.tags(repo) == ["1"]
        assert reg.has_manifest(repo, "1")
    finally:
        client.close()


@pytest.mark.docker
def test_stopping_services_ends_their_processes() -> None:
    if services.docker_engine_from_env() is not None:
        pytest.skip(f"{services.DOCKER_HOST_ENV} is set: this run uses an existing engine")
    root = services.short_tempdir()
    engine: services.DockerEngine | None = None
    reg: services.Registry | None = None
    try:
        try:
            engine = services.start_docker_engine(root / "engine")
            reg = services.start_registry(root / "registry")
        except services.ServiceError as exc:
            _unavailable(exc)
        assert engine.process is not None and engine.pid is not None
        assert reg is not None
        started_by_engine = engine.process.related()
        assert started_by_engine, "dockerd runs containerd as its child"
        engine_pids = [engine.pid, *(pid for pid, _ in started_by_engine)]
        assert all(services.pid_alive(pid) for pid in engine_pids)
        assert services.pid_alive(reg.pid)

        # A second engine on the same state directory is refused before it starts;
        # an engine that exits at once is reported with the end of its log.
        with pytest.raises(services.ServiceError, match="already runs"):
            services.start_docker_engine(root / "engine", timeout=20)
        with pytest.raises(services.ServiceError, match="(?s)dockerd exited.*no-such-driver"):
            services.start_docker_engine(
                root / "broken", timeout=20, extra_args=["--storage-driver=no-such-driver"]
            )
        check = engine.client()
        try:
            assert check.ping()
        finally:
            check.close()

        engine.stop()
        reg.stop()
        for pid in [*engine_pids, reg.pid]:
            assert not services.pid_alive(pid), f"process {pid} is still running"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", reg.port), timeout=2).close()
    finally:
        for service in (engine, reg):
            if service is not None:
                service.stop()
        services.remove_tree(root)


@pytest.mark.docker
def test_registry_on_a_taken_port_reports_its_log(tmp_path: Path) -> None:
    try:
        services.require_binary("docker-registry")
    except services.MissingBinaryError as exc:
        _unavailable(exc)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))  # bound, not listening: probes are refused at once
        port = taken.getsockname()[1]
        with pytest.raises(services.ServiceError, match="address already in use"):
            services.start_registry(tmp_path / "registry", port=port, timeout=20)


def test_missing_binary_names_its_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(services.DEBIAN_PACKAGES, "pachhook-no-such-binary", "some-package")
    with pytest.raises(services.MissingBinaryError, match="apt-get install some-package"):
        services.require_binary("pachhook-no-such-binary")
