"""The Docker engine and the registry: build a context, push the tag, verify it.

`DockerImages` implements the executor's `Images`: `exists` asks the registry
(its HTTP API, not the engine) whether the tag is there and holds our content;
`build` streams the build context to the engine, pushes, and checks that the
registry serves the manifest that was pushed. Only then is an image "built".

The build context comes from the source the plan was made from: for a commit,
the files of its tree (through GitPython's object streams, with git's modes),
never the working tree; for the working tree, the files on disk. Either way the
context's ignore file filters it, as Docker's CLI would.

The registry is asked over its HTTP API with urllib, not through the engine
(`inspect_distribution`): the engine's answer holds no image config, so it cannot
tell our content from someone else's under the same tag, and it folds "no such
tag" and "not allowed" into one error. A tag found to hold our content is
remembered (manifest digest -> input digest) under the state dir, so later runs
check it with one HEAD request.

docker-py is imported here and only here, and only when an engine or Docker's
credential store is needed: runs whose images are all in the registry never load it.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import http.client
import io
import ipaddress
import json
import os
import posixpath
import re
import ssl
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pachhook import ledger
from pachhook.config import Config, ImageConfig, normalize_repository
from pachhook.dockerignore import IGNORE_FILE, IgnoreMatcher, compile_ignore
from pachhook.errors import PachhookError
from pachhook.git import Repo
from pachhook.plan import ImagePlan
from pachhook.progress import TAIL_LINES, BuildProgress
from pachhook.run import ImageResult
from pachhook.source import CommitSource, Source
from pachhook.workspace import ImageState

if TYPE_CHECKING:
    import docker

LABEL_DIGEST = "io.pachhook.input-digest"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_SOURCE = "org.opencontainers.image.source"

FLOATING_TAGS = frozenset({"latest"})
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)
INDEX_TYPES = frozenset(MANIFEST_TYPES[1::2])

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
ENGINE_TIMEOUT = 300  # seconds without a byte from the engine before a call gives up
REGISTRY_TIMEOUT = 30
VERIFIED_TAGS = "verified-tags.json"  # under the state dir: tags whose content was checked
VERIFIED_TAGS_KEPT = 2000  # the most recent; an older tag is simply checked in full again

ENGINE_HINT = "is dockerd running? check DOCKER_HOST"
DISK_FULL = "no space left on device"
DISK_HINT = "free space on the engine's disk (docker system prune) and run again"
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


# -- credentials ------------------------------------------------------------------------


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
            f"Docker's credential store failed for {registry} ({_one_line(str(exc), 160)}); "
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


# -- the registry's HTTP API ----------------------------------------------------------------


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

    def __init__(self, host: str, credentials: Callable[[], Credentials | None]) -> None:
        self.host = host
        self.api_host = DOCKER_HUB_API if host == DOCKER_HUB else host
        self._credentials = credentials
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
            with self._opener.open(req, timeout=REGISTRY_TIMEOUT) as resp:
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
            detail = _one_line(response.body.decode(errors="replace"), 160) or "no detail"
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
        f"registry {host} {what} to {action} images (unauthorized or denied); "
        f"run docker login {host}, or set DOCKERHUB_USERNAME and DOCKERHUB_TOKEN"
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
    return _one_line(text, 120)


def _without_query(url: str) -> str:
    return url.split("?", 1)[0]


# -- the build context -----------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """A build context as a tar file, and the Dockerfile's name inside it."""

    file: IO[bytes]
    dockerfile: str
    files: int


def _inside(path: str, folder: str) -> str | None:
    """`path` relative to `folder` (both repository-relative), or None when outside."""
    if folder == ".":
        return path
    return path[len(folder) + 1 :] if path.startswith(folder + "/") else None


def hidden_dockerfile_name(image: ImageConfig) -> str:
    """Where a Dockerfile from outside its context goes in the tar (as Docker's CLI does,
    a dot name that the ignore file then hides from COPY)."""
    return ".pachhook-dockerfile-" + hashlib.sha256(image.dockerfile_path.encode()).hexdigest()[:12]


class _TarWriter:
    """Writes files with git's modes, parents first, owned by root."""

    def __init__(self, out: IO[bytes], mtime: float) -> None:
        self.tar = tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.mtime = int(mtime)
        self.dirs: set[str] = set()
        self.files = 0

    def _info(self, name: str) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mtime = self.mtime
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def _parents(self, path: str) -> None:
        parent = posixpath.dirname(path)
        if not parent or parent in self.dirs:
            return
        self._parents(parent)
        info = self._info(parent)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        self.tar.addfile(info)
        self.dirs.add(parent)

    def add(self, path: str, git_mode: int, size: int, data: IO[bytes]) -> None:
        self._parents(path)
        info = self._info(path)
        if git_mode == 0o120000:
            info.type = tarfile.SYMTYPE
            info.linkname = os.fsdecode(data.read(size))
            info.mode = 0o777
            self.tar.addfile(info)
        else:
            info.mode = 0o755 if git_mode & 0o111 else 0o644
            info.size = size
            self.tar.addfile(info, data)
        self.files += 1

    def add_bytes(self, path: str, content: bytes) -> None:
        self.add(path, 0o100644, len(content), io.BytesIO(content))

    def close(self) -> None:
        self.tar.close()


class _ContextFiles:
    """The files a source holds for one image: listing, reading, and the ignore file."""

    image: ImageConfig
    mtime: float

    def files(self) -> Iterator[str]:
        """Repository-relative paths of the files inside the context, sorted."""
        raise NotImplementedError

    def open(self, path: str) -> tuple[int, int, IO[bytes]]:
        """(git mode, size, stream) of a repository-relative file."""
        raise NotImplementedError

    def read(self, path: str) -> bytes | None:
        try:
            mode, size, stream = self.open(path)
        except (KeyError, FileNotFoundError, NotADirectoryError):
            return None
        return stream.read(size)

    def close(self) -> None:
        """Release helper processes."""


class _CommitFiles(_ContextFiles):
    """A commit's tree through GitPython: a repository object (and its cat-file processes)
    per build, so concurrent builds never share a stream."""

    def __init__(self, root: Path, commit: str, image: ImageConfig) -> None:
        import git as gitpython

        self.image = image
        try:
            self._repo = gitpython.Repo(root)
            commit_object = self._repo.commit(commit)
        except (gitpython.GitError, ValueError) as exc:
            raise PachhookError(
                f"git: cannot read commit {commit[:12]} in {root} ({_one_line(str(exc), 120)}); "
                "fetch it or check the repository"
            ) from None
        self.commit = commit
        self.tree = commit_object.tree
        self.mtime = float(commit_object.committed_date)

    def files(self) -> Iterator[str]:
        context = self.image.context
        try:
            top = self.tree if context == "." else self.tree / context
        except KeyError:
            return iter(())
        if top.type != "tree":
            return iter(())
        found = (getattr(item, "path", "") for item in top.traverse() if _is_blob(item))
        return iter(sorted(str(path) for path in found))

    def open(self, path: str) -> tuple[int, int, IO[bytes]]:
        import git as gitpython
        import gitdb.exc

        blob = self.tree / path
        if blob.type != "blob":
            raise KeyError(path)
        try:
            stream = blob.data_stream
        except (gitpython.GitError, gitdb.exc.ODBError, ValueError) as exc:
            # A partial or shallow clone can lack the blob itself.
            raise PachhookError(
                f"git: cannot read {path} of commit {self.commit[:12]} "
                f"({_one_line(str(exc), 120)}); fetch the missing objects and run again"
            ) from None
        return int(blob.mode), int(stream.size), stream


def _is_blob(item: object) -> bool:
    # Submodules (commits in the tree) have no content to send.
    return getattr(item, "type", "") == "blob"

    def close(self) -> None:
        self._repo.close()


class _WorkingTreeFiles(_ContextFiles):
    """The working tree: the files git lists (tracked and untracked, not git-ignored),
    which are also the files the input digest was computed from."""

    def __init__(self, source: Source, root: Path, image: ImageConfig) -> None:
        self.image = image
        self.source = source
        self.root = root
        self.mtime = time.time()

    def files(self) -> Iterator[str]:
        context = self.image.context
        return (p for p in self.source.paths if _inside(p, context) is not None)

    def open(self, path: str) -> tuple[int, int, IO[bytes]]:
        full = self.root / path
        info = full.lstat()
        if os.path.islink(full):
            target = os.fsencode(os.readlink(full))
            return 0o120000, len(target), io.BytesIO(target)
        mode = 0o100755 if info.st_mode & 0o100 else 0o100644
        return mode, info.st_size, open(full, "rb")  # noqa: SIM115 - closed by the tar loop


def write_context(files: _ContextFiles, out: IO[bytes]) -> Context:
    """Write the image's context as a tar to `out`: the files the ignore file lets through,
    plus, always, the Dockerfile and the ignore file."""
    image = files.image
    context = image.context
    ignore_path = IGNORE_FILE if context == "." else f"{context}/{IGNORE_FILE}"
    ignore_text = files.read(ignore_path)
    matcher: IgnoreMatcher | None = (
        compile_ignore(ignore_text.decode("utf-8", errors="replace"), ignore_path)
        if ignore_text is not None
        else None
    )
    inner_dockerfile = _inside(image.dockerfile_path, context)
    hidden = None if inner_dockerfile is not None else hidden_dockerfile_name(image)
    writer = _TarWriter(out, files.mtime)
    for path in files.files():
        relative = _inside(path, context)
        if relative is None or relative == IGNORE_FILE:
            continue
        if matcher and relative != inner_dockerfile and matcher.excluded(relative):
            continue
        mode, size, stream = files.open(path)
        try:
            writer.add(relative, mode, size, stream)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
    if hidden is not None:
        data = files.read(image.dockerfile_path)
        if data is None:
            raise PachhookError(
                f"{image.dockerfile_path}: the Dockerfile of {image.name} is missing from the "
                "source; commit it or fix image.dockerfile"
            )
        writer.add_bytes(hidden, data)
    if hidden is not None:
        # After reading the Dockerfile the engine removes the Dockerfile and the ignore file
        # from the context when the ignore file names them: naming the hidden Dockerfile keeps
        # it out of COPY . (as Docker's CLI does); an ignore file made up here goes too.
        made_up = b"" if ignore_text is not None else f"{IGNORE_FILE}\n".encode()
        writer.add_bytes(IGNORE_FILE, (ignore_text or made_up) + f"\n{hidden}\n".encode())
    elif ignore_text is not None:
        writer.add_bytes(IGNORE_FILE, ignore_text)
    writer.close()
    out.seek(0)
    return Context(out, inner_dockerfile or hidden or "Dockerfile", writer.files)


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


class DockerImages:
    """The Docker engine and the registry, behind the executor's `Images` protocol.

    Safe to use from several threads: each thread gets its own docker-py client and
    GitPython repository; shared caches are guarded by one lock.
    """

    def __init__(
        self,
        repo: Repo,
        config: Config,
        env: Mapping[str, str],
        progress: BuildProgress,
        source_url: str,
    ) -> None:
        self.repo = repo
        self.config = config
        self.env = dict(env)
        self.progress = progress
        self.source_url = source_url
        self._lock = threading.RLock()
        self._local = threading.local()
        self._api_version: str | None = None
        self._engine_error: PachhookError | None = None
        self._registries: dict[str, Registry] = {}
        self._credentials: dict[str, Credentials | None] = {}
        self._verified: dict[str, dict[str, str]] | None = None

    @classmethod
    def from_environment(
        cls,
        repo: Repo,
        config: Config,
        env: Mapping[str, str],
        progress: BuildProgress | Callable[[str], None] | None = None,
    ) -> DockerImages:
        """The engine named by DOCKER_HOST (else Docker's context or default socket) and the
        registries of the images. Nothing is contacted yet: the engine is reached on the
        first build, so a run whose images all exist needs no engine."""
        if progress is None:
            progress = BuildProgress(lambda line: None)
        elif not isinstance(progress, BuildProgress):
            progress = BuildProgress(progress)
        return cls(repo, config, env, progress, _source_url(repo))

    # -- the protocol --

    def exists(self, image: ImagePlan) -> bool:
        """The registry serves the tag, and its content is ours (same input digest label).
        A tag that holds other content is refused: tags are never reused."""
        state, tag = _checked_tag(image)
        host, path = split_name(image.name)
        registry = self._registry(host)
        reference = f"{image.name}:{tag}"
        known = self._verified_tags().get(reference)
        manifest = registry.manifest_digest(path, tag)
        if manifest is None:
            return False
        if known and manifest and known.get("manifest") == manifest:
            found = known.get("input_digest")
        else:
            labels = registry.labels(path, tag, state.config.platform) or {}
            found = labels.get(LABEL_DIGEST)
            if found and manifest:
                self._remember(reference, manifest, found)
        if found == state.digest:
            return True
        raise floating_tag(host, tag, found, state.digest, self.config.tag_policy)

    def build(self, image: ImagePlan, source: Source, *, push: bool) -> ImageResult:
        """Build `image` from `source`; with `push`, push it and verify it in the registry."""
        started = time.monotonic()
        reference = image.reference or image.name
        log = _BuildLog(_log_path(self.repo, reference))
        status, error = "built", None
        try:
            state, tag = _checked_tag(image)
            self.progress.stage(reference, "sending context")
            client = self._client()
            self._build(client, image, state, source, log)
            if push:
                pushed = self._push(client, image, tag, log)
                self._verify(image, state, tag, pushed, log)
        except PachhookError as exc:
            status, error = "failed", exc.message
        seconds = time.monotonic() - started
        tail = log.last_lines()
        if error:
            log.line(f"error: {error}")
        # A log is kept for a build that failed after the engine started on it.
        log_path = log.close(keep=status == "failed" and bool(tail))
        result = ImageResult(image.name, reference, status, seconds, error, log_path)
        self.progress.finished(result, tail if status == "failed" else ())
        return result

    # -- building --

    def _build(
        self,
        client: docker.DockerClient,
        image: ImagePlan,
        state: ImageState,
        source: Source,
        log: _BuildLog,
    ) -> None:
        import docker.errors
        import requests.exceptions

        reference = image.reference or image.name
        cfg = state.config
        files: _ContextFiles
        if isinstance(source, CommitSource):
            files = _CommitFiles(self.repo.root, source.commit, cfg)
        else:
            files = _WorkingTreeFiles(source, self.repo.root, cfg)
        revision = source.commit if isinstance(source, CommitSource) else _worktree_revision(source)
        labels = {
            LABEL_REVISION: revision,
            LABEL_SOURCE: self.source_url,
            LABEL_DIGEST: state.digest,
        }
        step: tuple[str, str] | None = None
        try:
            with tempfile.TemporaryFile(prefix="pachhook-context-") as out:
                try:
                    context = write_context(files, out)
                except OSError as exc:
                    raise PachhookError(_os_error("writing the build context", exc)) from None
                finally:
                    files.close()
                log.line(f"context: {context.files} files, dockerfile {context.dockerfile}")
                self.progress.stage(reference, "building")
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
                                self.progress.step(
                                    reference, int(match[1]), int(match[2]), match[3]
                                )
                            else:
                                self.progress.output(reference, line)
                    elif "status" in chunk:
                        log.line(_status_line(chunk))
                    aux = chunk.get("aux")
                    if isinstance(aux, dict) and aux.get("ID"):
                        built = True
                if not built:
                    raise PachhookError(build_failure(step, "the engine gave no image"))
        except docker.errors.APIError as exc:
            raise PachhookError(build_failure(step, _api_error(exc))) from None
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise self._engine_lost(exc) from None

    def _push(self, client: docker.DockerClient, image: ImagePlan, tag: str, log: _BuildLog) -> str:
        """Push the tag; every chunk is checked, since the engine reports registry errors
        inside a stream whose own status is a success. Returns the pushed manifest digest."""
        import docker.errors
        import requests.exceptions

        reference = f"{image.name}:{tag}"
        host, _ = split_name(image.name)
        creds = self._credentials_for(host)
        # docker-py reads Docker's config itself when given None; only the seed's variables
        # have to be handed over.
        auth = None if creds is None or creds.from_docker_config else creds.auth_config()
        self.progress.stage(reference, "pushing")
        digest = ""
        try:
            stream = client.api.push(
                image.name, tag=tag, stream=True, decode=True, auth_config=auth
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
        except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
            raise self._engine_lost(exc) from None
        return digest

    def _verify(
        self, image: ImagePlan, state: ImageState, tag: str, pushed: str, log: _BuildLog
    ) -> None:
        reference = f"{image.name}:{tag}"
        self.progress.stage(reference, "verifying")
        host, path = split_name(image.name)
        served = self._registry(host).manifest_digest(path, tag)
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
        if served or pushed:
            self._remember(reference, served or pushed, state.digest)

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
        host = _without_userinfo(self.env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST)
        what = "unreachable" if connecting else "stopped answering"
        return PachhookError(
            f"Docker engine at {host} {what} ({_engine_reason(text)}); {ENGINE_HINT}"
        )

    def _inject_environment_credentials(self, client: docker.DockerClient) -> None:
        """Base images on a private registry need credentials too: hand the seed's variables
        to the builder for the registries Docker's config knows nothing about."""
        creds = environment_credentials(self.env)
        if creds is None:
            return
        store = client.api._auth_configs  # noqa: SLF001 - docker-py has no public setter
        for host in {split_name(i.name)[0] for i in self.config.images} | {DOCKER_HUB}:
            found = self._credentials_for(host)
            if found is not None and not found.from_docker_config:
                key = "https://index.docker.io/v1/" if host == DOCKER_HUB else host
                store.add_auth(key, {"username": found.username, "password": found.password})

    def _credentials_for(self, host: str) -> Credentials | None:
        with self._lock:
            if host not in self._credentials:
                self._credentials[host] = docker_config_credentials(
                    host, self.env
                ) or environment_credentials(self.env)
            return self._credentials[host]

    def _registry(self, host: str) -> Registry:
        with self._lock:
            registry = self._registries.get(host)
            if registry is None:
                registry = Registry(host, lambda: self._credentials_for(host))
                self._registries[host] = registry
            return registry

    def _verified_tags(self) -> dict[str, dict[str, str]]:
        """Tags already checked to hold our content (manifest digest -> input digest), so that
        later runs ask the registry with one HEAD, which Docker Hub does not count as a pull."""
        with self._lock:
            if self._verified is None:
                try:
                    data = json.loads((self.repo.state_dir / VERIFIED_TAGS).read_text())
                except (OSError, ValueError):
                    data = {}
                self._verified = data if isinstance(data, dict) else {}
            return self._verified

    def _remember(self, reference: str, manifest: str, input_digest: str) -> None:
        with self._lock:
            tags = self._verified_tags()
            tags.pop(reference, None)
            tags[reference] = {"manifest": manifest, "input_digest": input_digest}
            for stale in list(tags)[:-VERIFIED_TAGS_KEPT]:
                del tags[stale]
            path = self.repo.state_dir / VERIFIED_TAGS
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                temp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                temp.write_text(json.dumps(tags))
                temp.replace(path)
            except OSError:
                pass  # only a cache: the next run asks the registry in full


# -- errors, one line each ---------------------------------------------------------------------


def _checked_tag(image: ImagePlan) -> tuple[ImageState, str]:
    state = image.state
    tag = image.tag
    if state is None or not tag:
        raise PachhookError(
            f"{image.name}: no tag was computed for this image; run pachhook plan to see why"
        )
    if tag.lower() in FLOATING_TAGS:
        raise PachhookError(
            f"refusing the floating tag {tag!r} (Pachyderm workers would keep running the old "
            'image); use tag_policy = "digest" or "git-sha"'
        )
    return state, tag


def floating_tag(host: str, tag: str, found: str | None, wanted: str, policy: str) -> PachhookError:
    held = f"input digest {found[:12]}" if found else "no pachhook input digest label"
    hint = (
        'switch to tag_policy = "digest", or delete the tag from the registry'
        if policy == "git-sha"
        else "delete the tag from the registry if it is stale"
    )
    return PachhookError(
        f"registry {host} already has tag {tag} for other content ({held}; this build has "
        f"{wanted[:12]}); a tag is never reused: {hint}"
    )


def build_failure(step: tuple[str, str] | None, error: str, output: Sequence[str] = ()) -> str:
    """The image is not named: the message is shown beside it. `output`: the build's last
    lines, where a RUN step that filled the disk says so (its own error only gives a code)."""
    where = f" at step {step[0]} ({_one_line(step[1], 60)})" if step else ""
    if any(DISK_FULL in text.lower() for text in (error, *output)):
        return f"build ran out of disk space{where} (no space left on device); {DISK_HINT}"
    return f"build failed{where}: {_one_line(error, 240)}; fix the Dockerfile or its inputs"


def push_failure(host: str, error: str, had_credentials: bool) -> PachhookError:
    """The image is not named: the message is shown beside it."""
    lower = error.lower()
    detail = _one_line(error, 200)
    if DISK_FULL in lower:
        return PachhookError(
            f"push failed: out of disk space ({detail}); free space on the registry {host} "
            "or the engine and run again"
        )
    if any(w in lower for w in ("unauthorized", "denied", "authentication required", "forbidden")):
        what = "refused the credentials" if had_credentials else "asks for credentials"
        return PachhookError(
            f"push refused: registry {host} {what} ({detail}); run docker login {host}, "
            "or set DOCKERHUB_USERNAME and DOCKERHUB_TOKEN to an account that may push"
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
    return _one_line(text, 120)


def _os_error(doing: str, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no space left on device while {doing}; free space in {tempfile.gettempdir()}"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{doing} failed: {exc.strerror or exc}{where}; check that file and run again"


def _status_line(chunk: Mapping[str, Any]) -> str:
    parts = [str(chunk[k]) for k in ("id", "status") if chunk.get(k)]
    return ": ".join(parts)


def _one_line(text: str, limit: int) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def _without_userinfo(url: str) -> str:
    return re.sub(r"//[^/@]*@", "//", url)


# -- labels and logs -----------------------------------------------------------------------------


def _source_url(repo: Repo) -> str:
    """The repository the image came from: origin's URL without credentials, else the path."""
    url = repo.git("config", "--get", "remote.origin.url", check=False).strip()
    return _without_userinfo(url) if url else str(repo.root)


def _worktree_revision(source: Source) -> str:
    return f"{source.commit}+working-tree" if source.commit else "working-tree"


def _log_path(repo: Repo, reference: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", reference).strip("_")[-80:]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return ledger.logs_dir(repo.state_dir) / f"{stamp}-{slug}-{os.getpid()}.log"
