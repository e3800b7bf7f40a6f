"""The Docker engine: build a context, push the tag, verify that the registry serves it.

`Engine.build` builds the image with the builder the plan chose for it, pushes, and
checks that the registry serves the manifest that was pushed. Only then is an image
"built". The classic builder is driven through docker-py (the context, context.py, is
streamed as a tar); BuildKit through the Docker CLI (buildkit.py), from a folder. What
happens is told to a `BuildEvents` receiver as it happens (stages, steps, output, the
result), the same way for both builders, and kept in a log file per build.

With `cache_from = "registry"`, a build reuses the layers of the image's tag that runs
now (`cache_sources` finds it): BuildKit reads them with `--cache-from` (its pushed images
carry their cache, BUILDKIT_INLINE_CACHE); the classic builder pulls the tag first.

docker-py is imported here, and in credentials.py for Docker's credential store, and only
when an engine or that store is needed: runs whose images are all in the registry never
load it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from pachhook.docker import buildkit
from pachhook.docker.cache import LABEL_DIGEST
from pachhook.docker.context import write_context, write_context_dir
from pachhook.docker.credentials import environment_hosts, login_hint
from pachhook.docker.digest import ImageState, checked_tag
from pachhook.docker.registry import DOCKER_HUB, Registries, split_name
from pachhook.errors import PachhookError, one_line
from pachhook.repo.source import FolderFiles, Source

if TYPE_CHECKING:
    import docker

_Context = TypeVar("_Context")  # a context written as a tar or as a folder

LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_SOURCE = "org.opencontainers.image.source"

DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
ENGINE_TIMEOUT = 300  # seconds without a byte from the engine before a call gives up
TAIL_LINES = 20  # lines of a failed build's log shown on failure

ENGINE_HINT = "is dockerd running? check DOCKER_HOST"
DISK_FULL = "no space left on device"
DISK_HINT = "free space on the engine's disk (docker system prune) and run again"
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


@dataclass(frozen=True)
class ImageResult:
    name: str
    reference: str
    status: str  # built | exists | failed | planned
    seconds: float = 0.0
    error: str | None = None
    log_path: str | None = None
    manifest: str | None = None  # the manifest digest the registry serves, once verified
    builder: str | None = None  # "buildkit" or "classic", for an image this run built
    cache_from: tuple[str, ...] = ()  # the tags whose layers its build could reuse

    @property
    def ok(self) -> bool:
        return self.status in ("built", "exists", "planned")


class BuildEvents(Protocol):
    """Who is told how builds go; called from any build's thread."""

    def stage(self, reference: str, stage: str) -> None: ...

    def step(
        self, reference: str, number: int, total: int, instruction: str, stage: str | None = None
    ) -> None:
        """A Dockerfile step began; BuildKit counts steps per `stage` (when there are several)."""

    def output(self, reference: str, line: str) -> None: ...

    def finished(self, result: ImageResult, tail: Sequence[str] = ()) -> None: ...


# -- the engine ------------------------------------------------------------------------------


class _BuildLog:
    """The full log of one image's build and push, and its last lines for the report.
    A log that cannot be written (a full disk) must not fail the build: the tail is kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self._partial = ""
        self._file: IO[str] | None
        try:
            self._file = open(path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        except OSError:
            self._file = None

    def write(self, text: str) -> None:
        """Engine output as it comes: chunks need not end at a line's end."""
        if self._file is not None:
            try:
                self._file.write(text)
                self._file.flush()
            except OSError:
                self._file = None
        *lines, self._partial = (self._partial + text).split("\n")
        self.tail.extend(line.rstrip("\r") for line in lines if line.strip())

    def line(self, text: str) -> None:
        self.write(("\n" if self._partial else "") + text + "\n")

    def raw(self, text: str) -> None:
        """A line for the file only (BuildKit's progress: its parser keeps the tail)."""
        if self._file is not None:
            try:
                self._file.write(text + "\n")
                self._file.flush()
            except OSError:
                self._file = None

    def keep(self, lines: Sequence[str]) -> None:
        """What a person reads of the end of the build, in place of the raw lines."""
        self.tail.clear()
        self.tail.extend(lines)

    def last_lines(self) -> list[str]:
        return [*self.tail, *([self._partial] if self._partial.strip() else [])][-TAIL_LINES:]

    def close(self, keep: bool) -> str | None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            if keep:
                return str(self.path)
        with contextlib.suppress(OSError):
            self.path.unlink()
        return None


class Engine:
    """The Docker engine named by DOCKER_HOST (else Docker's default socket).

    Nothing is contacted until the first build, so a run whose images all exist needs no
    engine. Safe to use from several threads: each thread gets its own docker-py client.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        registries: Registries,
        events: BuildEvents,
        *,
        logs_dir: Path,
        source_url: str,
        image_hosts: Sequence[str] = (),
        cache_sources: Callable[[ImageState], Sequence[str]] | None = None,
    ) -> None:
        self.env = dict(env)
        self.cache_sources = cache_sources
        self.registries = registries
        self.events = events
        self.logs_dir = logs_dir
        self.source_url = source_url
        self.image_hosts = tuple(image_hosts)
        self._lock = threading.RLock()
        self._local = threading.local()
        self._api_version: str | None = None
        self._engine_error: PachhookError | None = None
        self._network: str | None | bool = False  # False: not asked yet

    def build(self, state: ImageState, source: Source, *, push: bool) -> ImageResult:
        """Build `state` from `source`; with `push`, push it and verify it in the registry."""
        started = time.monotonic()
        reference = f"{state.name}:{state.tag}" if state.tag else state.name
        log = _BuildLog(self._log_path(reference))
        status, error, manifest = "built", None, None
        cached: list[str] = []  # the tags the build could reuse layers of
        try:
            tag = checked_tag(state)
            self.events.stage(reference, "sending context")
            client = self._client()
            if state.builder == buildkit.BUILDKIT:
                self._build_buildkit(client, state, source, log, push, cached)
            else:
                self._build(client, state, source, log, cached)
            if push:
                pushed = self._push(client, state, tag, log)
                manifest = self._verify(state, tag, pushed, log)
        except PachhookError as exc:
            status, error = "failed", exc.message
        seconds = time.monotonic() - started
        tail = log.last_lines()
        if error:
            log.line(f"error: {error}")
        # A log is kept for a build that failed after the engine started on it.
        log_path = log.close(keep=status == "failed" and bool(tail))
        result = ImageResult(
            state.name,
            reference,
            status,
            seconds,
            error,
            log_path,
            manifest,
            state.builder,
            tuple(cached),
        )
        self.events.finished(result, tail if status == "failed" else ())
        return result

    # -- building --

    def _labels(self, state: ImageState, source: Source) -> dict[str, str]:
        """What every image pachhook builds says of where it came from."""
        return {
            LABEL_REVISION: source.revision,
            LABEL_SOURCE: self.source_url,
            LABEL_DIGEST: state.digest,
        }

    def _build(
        self,
        client: docker.DockerClient,
        state: ImageState,
        source: Source,
        log: _BuildLog,
        cached: list[str],
    ) -> None:
        import docker.errors

        reference = f"{state.name}:{state.tag}"
        cfg = state.config
        files = source.folder(cfg.context, state.outside_git)
        labels = self._labels(state, source)
        step: tuple[str, str] | None = None
        cache_from = self._pull_cache(client, state, log)
        cached.extend(cache_from)
        try:
            with tempfile.TemporaryFile(prefix="pachhook-context-") as out:
                context = _written(lambda: write_context(files, cfg, out), files, state)
                log.line(f"context: {context.files} files, dockerfile {context.dockerfile}")
                self.events.stage(reference, "building")
                stream = client.api.build(
                    fileobj=context.file,
                    custom_context=True,
                    encoding=None,  # an uncompressed tar: the engine is usually local
                    dockerfile=context.dockerfile,
                    tag=reference,
                    target=cfg.target,
                    buildargs=dict(cfg.build_args),
                    platform=cfg.platform,
                    labels=labels,
                    cache_from=cache_from or None,
                    rm=True,
                    forcerm=True,
                    decode=True,
                    timeout=None,  # a quiet RUN step may take longer than any timeout
                )
                built = False
                for chunk in stream:
                    if "error" in chunk or "errorDetail" in chunk:
                        log.line(_chunk_error(chunk))
                        raise PachhookError(
                            build_failure(step, _chunk_error(chunk), log.last_lines())
                        )
                    text = chunk.get("stream")
                    if isinstance(text, str):
                        log.write(text)
                        for line in text.splitlines():
                            match = _STEP.match(line.strip())
                            if match:
                                step = (f"{match[1]}/{match[2]}", match[3])
                                self.events.step(reference, int(match[1]), int(match[2]), match[3])
                            else:
                                self.events.output(reference, line)
                    elif "status" in chunk:
                        log.line(_status_line(chunk))
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and aux.get("ID"):
                        built = True
                if not built:
                    raise PachhookError(build_failure(step, "the engine gave no image"))
        except docker.errors.APIError as exc:
            raise PachhookError(build_failure(step, _api_error(exc))) from None
        except _engine_errors() as exc:
            raise self._engine_lost(exc) from None

    def _build_buildkit(
        self,
        client: docker.DockerClient,
        state: ImageState,
        source: Source,
        log: _BuildLog,
        push: bool,
        cached: list[str],
    ) -> None:
        """The Docker CLI builds from a folder; the image lands in the engine's store."""
        reference = f"{state.name}:{state.tag}"
        cfg = state.config
        cli, rejected = buildkit.find_cli(self.env)
        if cli is None:
            tried = "; ".join(f"{r.path}: {r.reason}" for r in rejected) or "no docker found"
            raise PachhookError(
                f"{cfg.name} is built with BuildKit, but no Docker CLI here builds with it "
                f"({one_line(tried, 160)}); install Debian's docker.io or Docker's buildx "
                'plugin, name a CLI in PACHHOOK_DOCKER_CLI, or set builder = "classic"'
            )
        for secret in cfg.secrets:
            if not self.env.get(secret.env):
                raise PachhookError(
                    f"build secret {secret.id!r}: the environment variable {secret.env} is not "
                    "set; set it where pachhook runs (its value stays out of the image, the "
                    "logs and every command line)"
                )
        cache_from = self._cache_from(state, log)
        cached.extend(cache_from)
        network = self._engine_network(client)
        labels = self._labels(state, source)
        files = source.folder(cfg.context, state.outside_git)
        with tempfile.TemporaryDirectory(prefix="pachhook-context-") as tmp:
            context = _written(lambda: write_context_dir(files, cfg, Path(tmp)), files, state)
            log.line(
                f"context: {context.files} files; builder: BuildKit through {cli.path}"
                + (f"; network {network}" if network else "")
            )
            self.events.stage(reference, "building")
            request = buildkit.BuildRequest(
                dockerfile=str(context.dockerfile),
                context_dir=str(context.context),
                reference=reference,
                target=cfg.target,
                build_args=cfg.build_args,
                labels=labels,
                platform=cfg.platform,
                network=network,
                secrets=cfg.secrets,
                cache_from=tuple(cache_from),
                inline_cache=push,
            )
            progress = buildkit.PlainProgress(
                on_step=lambda s: self.events.step(
                    reference, s.number, s.total, s.instruction, stage=s.stage
                ),
                on_output=lambda line: self.events.output(reference, line),
            )
            try:
                buildkit.build(
                    cli,
                    request,
                    self.env,
                    os.path.join(tmp, "iid"),
                    progress=progress,
                    on_line=log.raw,
                )
            except buildkit.BuildFailed as failed:
                log.keep(progress.tail)
                if failed.engine:
                    raise self._engine_lost(Exception(failed.message), connecting=True) from None
                step = (failed.step.label, failed.step.instruction) if failed.step else None
                raise PachhookError(
                    build_failure(step, failed.message, list(progress.tail))
                ) from None

    def _cache_from(self, state: ImageState, log: _BuildLog) -> list[str]:
        """With cache_from = "registry": the image's tags whose layers this build may reuse."""
        if state.config.cache_from != "registry" or self.cache_sources is None:
            return []
        reference = f"{state.name}:{state.tag}"
        refs = [ref for ref in self.cache_sources(state) if ref != reference]
        log.line(f"cache from: {', '.join(refs) if refs else 'none found'}")
        return refs

    def _pull_cache(
        self, client: docker.DockerClient, state: ImageState, log: _BuildLog
    ) -> list[str]:
        """The classic builder reuses only the layers of images it has: pull them first. A
        tag that cannot be pulled is only a cache missed."""
        import docker.errors
        import requests.exceptions

        refs = self._cache_from(state, log)
        if not refs:
            return []
        host, _ = split_name(state.name)
        creds = self.registries.credentials(host)
        auth = None if creds is None or creds.from_docker_config else creds.auth_config()
        self.events.stage(f"{state.name}:{state.tag}", "pulling cache")
        pulled = []
        for ref in refs:
            name, _, tag = ref.rpartition(":")
            try:
                failed = next(
                    (
                        _chunk_error(chunk)
                        for chunk in client.api.pull(
                            name, tag=tag, stream=True, decode=True, auth_config=auth
                        )
                        if "error" in chunk or "errorDetail" in chunk
                    ),
                    None,
                )
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                failed = str(exc)
            if failed:
                log.line(
                    f"cache: could not pull {ref} ({one_line(failed, 160)}); building without it"
                )
            else:
                pulled.append(ref)
        return pulled

    def _engine_network(self, client: docker.DockerClient) -> str | None:
        """An engine without the default bridge network (dockerd --bridge=none) runs the
        classic builder's RUN steps all the same, but fails BuildKit's ("network bridge not
        found"): those get `--network none`, which is what that engine can offer."""
        import docker.errors
        import requests.exceptions

        with self._lock:
            if self._network is False:
                try:
                    names = {n.get("Name") for n in client.api.networks(names=["bridge"])}
                    self._network = None if "bridge" in names else "none"
                except (docker.errors.DockerException, requests.exceptions.RequestException):
                    self._network = None
            return self._network if isinstance(self._network, str) else None

    def _push(
        self, client: docker.DockerClient, state: ImageState, tag: str, log: _BuildLog
    ) -> str:
        """Push the tag; every chunk is checked, since the engine reports registry errors
        inside a stream whose own status is a success. Returns the pushed manifest digest."""
        import docker.errors

        reference = f"{state.name}:{tag}"
        host, _ = split_name(state.name)
        creds = self.registries.credentials(host)
        # docker-py reads Docker's config itself when given None; only the seed's variables
        # have to be handed over.
        auth = None if creds is None or creds.from_docker_config else creds.auth_config()
        self.events.stage(reference, "pushing")
        digest = ""
        try:
            stream = client.api.push(
                state.name, tag=tag, stream=True, decode=True, auth_config=auth
            )
            for chunk in stream:
                if "error" in chunk or "errorDetail" in chunk:
                    log.line(_chunk_error(chunk))
                    raise push_failure(host, _chunk_error(chunk), creds is not None)
                if not chunk.get("progressDetail") and _status_line(chunk):
                    log.line(_status_line(chunk))
                aux = chunk.get("aux")
                if isinstance(aux, dict) and aux.get("Digest"):
                    digest = str(aux["Digest"])
        except docker.errors.APIError as exc:
            raise push_failure(host, _api_error(exc), creds is not None) from None
        except _engine_errors() as exc:
            raise self._engine_lost(exc) from None
        return digest

    def _verify(self, state: ImageState, tag: str, pushed: str, log: _BuildLog) -> str | None:
        """The manifest digest the registry serves for the pushed tag."""
        reference = f"{state.name}:{tag}"
        self.events.stage(reference, "verifying")
        host, path = split_name(state.name)
        served = self.registries.registry(host).manifest_digest(path, tag)
        if served is None:
            raise PachhookError(
                f"pushed, but registry {host} does not serve tag {tag}; "
                "check the registry (storage, replication) and run again"
            )
        if pushed and served and served != pushed:
            raise PachhookError(
                f"registry {host} serves manifest {served[:19]} for tag {tag}, not the pushed "
                f"{pushed[:19]}; something else pushed this tag: find it and stop it"
            )
        log.line(f"verified: {host} serves {reference} ({served or pushed})")
        return served or pushed or None

    # -- shared state --

    def _client(self) -> docker.DockerClient:
        """This thread's client; the first one checks that the engine answers."""
        client = getattr(self._local, "client", None)
        if client is not None:
            return client
        import docker
        import docker.errors
        import requests.exceptions

        with self._lock:
            if self._engine_error is not None:
                raise self._engine_error
            try:
                client = docker.from_env(
                    environment=self.env, version=self._api_version, timeout=ENGINE_TIMEOUT
                )
                if self._api_version is None:
                    client.ping()
                    self._api_version = client.api.api_version
            except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
                self._engine_error = self._engine_lost(exc, connecting=True)
                raise self._engine_error from None
            self._inject_environment_credentials(client)
        self._local.client = client
        return client

    def _engine_lost(self, exc: BaseException, *, connecting: bool = False) -> PachhookError:
        text = str(exc)
        if DISK_FULL in text.lower():
            return PachhookError(
                f"Docker engine out of disk space (no space left on device); {DISK_HINT}"
            )
        host = without_userinfo(self.env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST)
        what = "unreachable" if connecting else "stopped answering"
        return PachhookError(
            f"Docker engine at {host} {what} ({_engine_reason(text)}); {ENGINE_HINT}"
        )

    def _inject_environment_credentials(self, client: docker.DockerClient) -> None:
        """Base images on a private registry need credentials too: hand the environment's
        credentials to the builder, each for its own host only, where Docker's config
        has none for it."""
        store = client.api._auth_configs  # noqa: SLF001 - docker-py has no public setter
        for host in environment_hosts(self.env):
            found = self.registries.credentials(host)
            if found is not None and not found.from_docker_config:
                key = "https://index.docker.io/v1/" if host == DOCKER_HUB else host
                store.add_auth(key, {"username": found.username, "password": found.password})

    def _log_path(self, reference: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", reference).strip("_")[-80:]
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        return self.logs_dir / f"{stamp}-{slug}-{os.getpid()}.log"


# -- errors, one line each ---------------------------------------------------------------------


def _engine_errors() -> tuple[type[BaseException], ...]:
    """What a call to the engine raises when the engine goes away: a stream cut in the
    middle (dockerd restarted) surfaces from urllib3 itself, not through requests."""
    import docker.errors
    import requests.exceptions
    import urllib3.exceptions

    return (
        requests.exceptions.RequestException,
        docker.errors.DockerException,
        urllib3.exceptions.HTTPError,
        ConnectionError,
    )


def build_failure(step: tuple[str, str] | None, error: str, output: Sequence[str] = ()) -> str:
    """The image is not named: the message is shown beside it. `output`: the build's last
    lines, where a RUN step that filled the disk says so (its own error only gives a code)."""
    where = f" at step {step[0]} ({one_line(step[1], 60)})" if step else ""
    if any(DISK_FULL in text.lower() for text in (error, *output)):
        return f"build ran out of disk space{where} (no space left on device); {DISK_HINT}"
    return f"build failed{where}: {one_line(error, 240)}; fix the Dockerfile or its inputs"


def push_failure(host: str, error: str, had_credentials: bool) -> PachhookError:
    """The image is not named: the message is shown beside it."""
    lower = error.lower()
    detail = one_line(error, 200)
    if DISK_FULL in lower:
        return PachhookError(
            f"push failed: out of disk space ({detail}); free space on the registry {host} "
            "or the engine and run again"
        )
    if any(w in lower for w in ("unauthorized", "denied", "authentication required", "forbidden")):
        what = "refused the credentials" if had_credentials else "asks for credentials"
        return PachhookError(
            f"push refused: registry {host} {what} ({detail}); {login_hint(host)} "
            "(for an account that may push)"
        )
    if "server gave http response to https client" in lower:
        return PachhookError(
            f"push failed: registry {host} speaks plain HTTP; add it to the engine's "
            "insecure-registries (daemon.json) or serve it over TLS"
        )
    if any(
        w in lower
        for w in ("connection refused", "no such host", "i/o timeout", "dial tcp", "no route")
    ):
        return PachhookError(
            f"push failed: registry {host} unreachable ({detail}); check that it is running "
            "and reachable, and the image name in the configuration"
        )
    return PachhookError(f"push failed: {detail}; check registry {host} and run again")


def _chunk_error(chunk: Mapping[str, Any]) -> str:
    detail = chunk.get("errorDetail")
    if isinstance(detail, dict) and detail.get("message"):
        return str(detail["message"])
    return str(chunk.get("error") or detail or "unknown error")


def _api_error(exc: Any) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def _engine_reason(text: str) -> str:
    lower = text.lower()
    if "filenotfounderror" in lower or "no such file" in lower:
        return "no socket there"
    if "connectionrefused" in lower or "connection refused" in lower:
        return "connection refused"
    if "permission denied" in lower or "permissionerror" in lower:
        return "permission denied: join the docker group or use sudo"
    if "timed out" in lower or "timeout" in lower:
        return "timed out"
    return one_line(text, 120)


def _written(write: Callable[[], _Context], files: FolderFiles, state: ImageState) -> _Context:
    """The build context `write` makes of `files`, refused when an input changed on disk
    since the plan (the tag would name other content than its digest says)."""
    try:
        context = write()
    except OSError as exc:
        raise PachhookError(_os_error("writing the build context", exc)) from None
    finally:
        files.close()
    changed = files.changed_since_planned(state.inputs)
    if changed:
        raise PachhookError(
            f"{changed[0]} changed after this run was planned; nothing was "
            "built from it, so no tag carries the wrong content: run again"
        )
    return context


def _os_error(doing: str, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on device while {doing}; free space in {tempfile.gettempdir()}"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{doing} failed: {exc.strerror or exc}{where}; check that file and run again"


def _status_line(chunk: Mapping[str, Any]) -> str:
    parts = [str(chunk[k]) for k in ("id", "status") if chunk.get(k)]
    return ": ".join(parts)


def without_userinfo(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)
