"""The Docker side of a run, as the executor sees it (its `Images`): is an image's tag already
in the registry (cache.py), and build, push and verify the ones that are not (engine.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pachhook.config import Config
from pachhook.docker.cache import TagCache
from pachhook.docker.digest import ImageState
from pachhook.docker.engine import BuildEvents, Engine, ImageResult, without_userinfo
from pachhook.docker.registry import Registries, split_name
from pachhook.repo.git import Repo
from pachhook.repo.settings import Settings
from pachhook.repo.source import Source


class DockerImages:
    def __init__(self, cache: TagCache, engine: Engine) -> None:
        self.cache = cache
        self.engine = engine

    @classmethod
    def from_environment(
        cls,
        repo: Repo,
        config: Config,
        env: Mapping[str, str],
        events: BuildEvents,
        logs_dir: Path,
        *,
        cache_sources: Callable[[ImageState], Sequence[str]] | None = None,
        settings: Settings | None = None,
    ) -> DockerImages:
        """The engine named by DOCKER_HOST (else Docker's default socket) and the registries
        of the images. Nothing is contacted yet. `cache_sources`: the tags whose layers an
        image's build may reuse (cache_from = "registry")."""
        settings = settings if settings is not None else Settings.from_env(env)
        registries = Registries(
            env, realm_hosts=settings.token_realm_hosts, timeout=settings.registry_timeout
        )
        engine = Engine(
            env,
            registries,
            events,
            logs_dir=logs_dir,
            source_url=source_url(repo),
            image_hosts=[split_name(i.name)[0] for i in config.images],
            cache_sources=cache_sources,
        )
        return cls(TagCache(registries, repo.state_dir, config.tag_policy), engine)

    def exists(self, state: ImageState) -> bool:
        return self.cache.exists(state)

    def build(self, state: ImageState, source: Source, *, push: bool) -> ImageResult:
        result = self.engine.build(state, source, push=push)
        if result.manifest:
            self.cache.remember(result.reference, result.manifest, state.digest)
        return result


def source_url(repo: Repo) -> str:
    """The repository the image came from: origin's URL without credentials, else the path."""
    url = repo.git("config", "--get", "remote.origin.url", check=False).strip()
    return without_userinfo(url) if url else str(repo.root)
