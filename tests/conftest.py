from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests import e2e, helpers, services
from tests.cluster import REAL_PACHD, REAL_TOKEN, DoubleTarget, RealTarget, Target
from tests.pachd_double import TEST_TOKEN, PachdDouble

# =========================================================================== #
# Real Docker engine and registry (tests/services.py)
#
# Services start only when a test asks for them, and are stopped by pid at the
# end of their scope (and by an atexit handler if that is ever skipped). Tests
# that use them get the `docker` marker. When a service cannot be started, such
# a test fails if the environment variable CI is set, and is skipped otherwise.
# =========================================================================== #

_SERVICE_FIXTURES = frozenset({"docker_engine", "registry", "base_image", "auth_registry"})


def _unavailable(what: str, exc: BaseException) -> NoReturn:
    helpers.unavailable(f"{what} is not available: {exc}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session")
def services_root() -> Iterator[Path]:
    """A short directory (unix socket paths are limited) for the session's services."""
    root = services.short_tempdir()
    try:
        yield root
    finally:
        services.remove_tree(root)


@pytest.fixture(scope="session")
def docker_engine(services_root: Path) -> Iterator[services.DockerEngine]:
    """The Docker engine: ``.host`` is its DOCKER_HOST url, ``.client()`` a docker-py client.

    PACHHOOK_TEST_DOCKER_HOST names an existing engine to use instead of starting one.
    Nothing global (such as DOCKER_HOST) is set.
    """
    external = services.docker_engine_from_env()
    if external is not None:
        yield external
        return
    try:
        engine = services.start_docker_engine(services_root / "engine")
    except (services.ServiceError, OSError) as exc:
        _unavailable("the Docker engine", exc)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def base_image(docker_engine: services.DockerEngine) -> str:
    """Tag of a tiny image with a shell (static busybox), imported into the engine once."""
    try:
        return services.ensure_base_image(docker_engine)
    except (services.ServiceError, OSError) as exc:
        _unavailable("the busybox base image", exc)


@pytest.fixture(scope="session")
def registry(services_root: Path) -> Iterator[services.Registry]:
    """A registry on loopback without auth: ``.address`` is ``127.0.0.1:PORT``."""
    try:
        reg = services.start_registry(services_root / "registry")
    except (services.ServiceError, OSError) as exc:
        _unavailable("the registry", exc)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def auth_registry(
    services_root: Path,
) -> Iterator[Callable[[str, str], services.Registry]]:
    """Factory: ``auth_registry(user, password)`` starts a registry with basic auth.

    Each registry started by the factory is stopped at the end of the test.
    """
    started: list[services.Registry] = []

    def start(username: str = "pachhook", password: str = "secret") -> services.Registry:
        root = Path(tempfile.mkdtemp(prefix="auth-", dir=services_root))
        try:
            reg = services.start_registry(root, username=username, password=password)
        except (services.ServiceError, OSError) as exc:
            _unavailable("the registry with basic auth", exc)
        started.append(reg)
        return reg

    try:
        yield start
    finally:
        for reg in started:
            reg.stop()
            services.remove_tree(reg.root)


# ======================================================= end of real services #


# =========================================================================== #
# The end-to-end repository (tests/e2e.py)
# =========================================================================== #


@pytest.fixture
def e2e_repo(
    tmp_path: Path,
    pachd: Target,
    project: str,
    docker_engine: services.DockerEngine,
    base_image: str,
) -> Callable[..., e2e.Repo]:
    """Factory: ``e2e_repo(app_registry, tools_registry=None, raw=True)`` makes the
    two-image, four-pipeline repository in ``tmp_path / "repo"``, against the test's pachd
    and project (fixtures of the test's module, see tests/test_deploy.py) and the engine.

    The images are ``{app_registry}/{project}/app`` and ``{tools_registry}/{project}/tools``
    (registry addresses, ``127.0.0.1:PORT``; tools in app's registry when not given).
    The input repo ``raw`` is created first unless ``raw`` is false.
    """

    def make(app_registry: str, tools_registry: str | None = None, *, raw: bool = True) -> e2e.Repo:
        if raw:
            pachd.create_repo("raw", project)
        return e2e.make_repo(
            tmp_path / "repo",
            pachd,
            project,
            f"{app_registry}/{project}/app",
            f"{tools_registry or app_registry}/{project}/tools",
            base_image,
            docker_engine.host,
        )

    return make


# =========================================================================== #
# The cluster (tests/cluster.py): the pachd double, or a real one
# =========================================================================== #


@pytest.fixture
def pachd_double() -> Iterator[PachdDouble]:
    """A fresh pachd double with auth on (token "test-token"), stopped afterwards."""
    with PachdDouble(token=TEST_TOKEN) as double:
        yield double


@pytest.fixture
def pachd() -> Iterator[Target]:
    """The cluster under test: a pachd double (token on), or the cluster named by
    PACHHOOK_TEST_PACHD."""
    if REAL_PACHD:
        yield RealTarget(REAL_PACHD, REAL_TOKEN)
        return
    with PachdDouble(token="test-token-" + uuid.uuid4().hex) as double:
        yield DoubleTarget(double)


@pytest.fixture
def project(pachd: Target) -> Iterator[str]:
    """A project of the test's own, so that a real cluster is left as it was found."""
    name = "ph-" + uuid.uuid4().hex[:8]
    pachd.create_project(name)
    try:
        yield name
    finally:
        pachd.cleanup(name)


@pytest.fixture
def repo(registry: services.Registry, e2e_repo: Callable[..., e2e.Repo]) -> e2e.Repo:
    """The end-to-end repository, its images in the session's registry."""
    return e2e_repo(registry.address)


@pytest.fixture
def spec_repo(tmp_path: Path, pachd: Target, project: str) -> e2e.Repo:
    """Four pipelines on an image pachhook does not build: runs only talk to pachd."""
    pachd.create_repo("raw", project)
    image = "docker.io/library/busybox:1.36"
    repo = e2e.make_repo(tmp_path / "repo", pachd, project, image, image, "scratch", "unix:///none")
    (repo.root / "pachhook.toml").write_text(
        f'[pachyderm]\nproject = "{project}"\n\n'
        '[pipelines]\ninclude = ["pipelines/*.json", "pipelines/*.yaml"]\n'
    )
    shutil.rmtree(repo.root / "app")
    shutil.rmtree(repo.root / "tools")
    helpers.commit(repo.root, "no images")
    return repo
