from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

try:  # pytest puts tests/ on sys.path (no tests/__init__.py)
    import e2e
    import helpers
    import services
except ImportError:  # tests/ is a package
    from tests import e2e, helpers, services  # type: ignore[no-redef]

if TYPE_CHECKING:
    from test_deploy import Target

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
