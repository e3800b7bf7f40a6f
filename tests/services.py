"""Real services for the test suite: a Docker engine, a registry and a base image.

Everything here is plain Python so that it can be used outside pytest too (for
example from a benchmark script). Each service runs as a child process with all
of its state under a directory given by the caller, and is stopped by its process
id. Processes that are still running when the interpreter exits are stopped by an
atexit handler as a last resort.

Binaries come from Debian packages:

- ``dockerd`` from ``docker.io`` (engine 20.10, classic builder);
- ``docker-registry`` from ``docker-registry`` (distribution v2 reference registry);
- ``busybox`` from ``busybox-static`` (the shell of the base image);
- ``htpasswd`` from ``apache2-utils`` (bcrypt password files for basic auth).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import docker

#: Environment variable naming an existing engine (a DOCKER_HOST url) to use
#: instead of starting one.
DOCKER_HOST_ENV = "PACHHOOK_TEST_DOCKER_HOST"

#: Tag of the base image imported from Debian's static busybox.
BASE_IMAGE = "local/busybox:1"

#: Which Debian package provides each binary used here.
DEBIAN_PACKAGES = {
    "dockerd": "docker.io",
    "containerd": "containerd",
    "runc": "runc",
    "docker-registry": "docker-registry",
    "busybox": "busybox-static",
    "htpasswd": "apache2-utils",
}

MANIFEST_MEDIA_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
)

# Unix socket paths are limited to 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


class ServiceError(RuntimeError):
    """A service could not be started or did not answer."""


class MissingBinaryError(ServiceError):
    """A binary needed by a service is not installed."""


class RegistryHTTPError(ServiceError):
    """The registry answered a request with an unexpected HTTP status."""

    def __init__(self, status: int, url: str, body: str) -> None:
        super().__init__(f"registry answered {status} for {url}: {body[:500]}")
        self.status = status
        self.url = url
        self.body = body


# --------------------------------------------------------------------------- helpers


def require_binary(name: str) -> str:
    """Return the path of ``name``, or raise MissingBinaryError naming its package."""
    found = shutil.which(name)
    if found is None:
        # dockerd lives in /usr/sbin, which is not on every PATH.
        path = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN_DIRS, "/usr/bin", "/bin"])
        found = shutil.which(name, path=path)
    if found is None:
        package = DEBIAN_PACKAGES.get(name)
        hint = (
            f"install the Debian package {package} (apt-get install {package})"
            if package
            else "install it"
        )
        raise MissingBinaryError(f"{name} not found on PATH: {hint}")
    return found


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = env.get("PATH", "").split(os.pathsep)
    for extra in (*_SBIN_DIRS, "/usr/bin", "/bin"):
        if extra not in parts:
            parts.append(extra)
    env["PATH"] = os.pathsep.join(p for p in parts if p)
    return env


def short_tempdir(prefix: str = "phd-") -> Path:
    """Make a fresh directory with a short path (unix sockets go inside it)."""
    base = "/tmp" if os.path.isdir("/tmp") else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state follows the command name, which is in parentheses.
    return stat.rpartition(")")[2].split()[0] != "Z"


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _unmount_under(root: Path) -> None:
    """Lazily unmount anything still mounted below ``root`` (left by a killed engine)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return
    prefix = str(root.resolve()).rstrip("/") + "/"
    points = []
    for line in mounts:
        fields = line.split()
        if len(fields) > 1:
            point = fields[1].replace("\\040", " ")
            if point.startswith(prefix):
                points.append(point)
    umount = shutil.which("umount", path=_child_env()["PATH"])
    if umount is None:
        return
    for point in sorted(points, key=len, reverse=True):
        subprocess.run([umount, "-l", point], capture_output=True, check=False)


def remove_tree(root: Path) -> None:
    """Remove a service directory, unmounting leftovers first. Never raises."""
    _unmount_under(root)
    shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- processes

_live: dict[int, ManagedProcess] = {}
_live_lock = threading.Lock()


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM`` so that the service dies with the test process.

    The parent-death signal fires when the thread that started the child ends, so
    it is only used from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    setpriv = shutil.which("setpriv", path=_child_env()["PATH"])
    return [setpriv, "--pdeathsig", "TERM"] if setpriv else []


class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        marker: str | None = None,
    ) -> None:
        self.name = name
        self.marker = marker
        self.argv = argv
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [*_pdeathsig_prefix(), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_child_env() if env is None else env,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        with _live_lock:
            _live[self.pid] = self

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return _log_tail(self.log_path, lines)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def related(self) -> list[_ProcKey]:
        """Processes started by this one: its descendants, and those whose command
        line mentions ``marker`` (containerd and its shims leave dockerd's tree)."""
        table = _process_table()
        keys = set(_descendants(self.pid, table))
        own = table.get(self.pid)
        if self.marker and own is not None:
            for pid, (_, _, start, _) in table.items():
                # Only processes started after this one can have been started by it.
                if pid != self.pid and start >= own[2] and self.marker in _cmdline(pid):
                    keys.add((pid, start))
        return sorted(keys)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the process and wait; SIGKILL it after ``timeout``; then end what it
        started that is still running (by pid, checked against its start time)."""
        try:
            related = self.related() if self.popen.poll() is None else []
            if self.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, signal.SIGKILL)
                    self.popen.wait(10)
            related = sorted(set(related) | set(self.related()))
            _end_processes(related, grace=5.0)
            # The process group's id is the pid of the process started here, and it
            # stays reserved while any member lives: this reaches only its members.
            if self._group_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
        finally:
            with _live_lock:
                _live.pop(self.pid, None)


_ProcKey = tuple[int, int]  # (pid, start time in clock ticks since boot)


def _stat(pid: int) -> tuple[int, int, int, str] | None:
    """(ppid, pgrp, start time, state) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (in parentheses): state ppid pgrp ... (3rd is 1st).
    fields = text.rpartition(")")[2].split()
    return int(fields[1]), int(fields[2]), int(fields[19]), fields[0]


def _process_table() -> dict[int, tuple[int, int, int, str]]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                table[int(entry)] = st
    return table


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _descendants(pid: int, table: dict[int, tuple[int, int, int, str]]) -> list[_ProcKey]:
    children: dict[int, list[int]] = {}
    for child, (ppid, _, _, _) in table.items():
        children.setdefault(ppid, []).append(child)
    found: list[_ProcKey] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append((child, table[child][2]))
        todo.extend(children.get(child, []))
    return found


def _same_alive(key: _ProcKey) -> bool:
    st = _stat(key[0])
    return st is not None and st[2] == key[1] and st[3] != "Z"


def _end_processes(keys: list[_ProcKey], grace: float) -> None:
    """Give processes ``grace`` seconds to exit by themselves, then SIGTERM, then SIGKILL."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        alive = [k for k in keys if _same_alive(k)]
        if not alive:
            return
        if sig is not None:
            for pid, _ in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while any(_same_alive(k) for k in alive) and time.monotonic() < deadline:
            time.sleep(0.05)


@atexit.register
def stop_all() -> None:
    """Stop every process started here that is still running."""
    with _live_lock:
        procs = list(_live.values())
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.stop(timeout=15)


# --------------------------------------------------------------------------- engine


class DockerEngine:
    """A Docker engine: started here (``process`` set) or an existing one."""

    def __init__(
        self,
        host: str,
        process: ManagedProcess | None = None,
        root: Path | None = None,
    ) -> None:
        self.host = host
        self.process = process
        self.root = root

    @property
    def external(self) -> bool:
        return self.process is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def client(self, timeout: int = 120) -> docker.DockerClient:
        """A new ``docker.DockerClient`` for this engine (close it when done)."""
        return docker.DockerClient(base_url=self.host, timeout=timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the engine if it was started here; an existing engine is left alone."""
        if self.process is not None:
            self.process.stop(timeout)

    def __repr__(self) -> str:
        return f"DockerEngine(host={self.host!r}, pid={self.pid})"


def _wait_for_engine(host: str, proc: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if not proc.running():
            raise ServiceError(
                f"dockerd exited with status {proc.popen.returncode} before answering; "
                f"end of {proc.log_path}:\n{proc.log_tail()}"
            )
        try:
            client = docker.DockerClient(base_url=host, timeout=5)
            try:
                if client.ping() and proc.running():
                    return
            finally:
                client.close()
        except Exception as exc:  # not listening yet
            last_error = exc
        if time.monotonic() > deadline:
            raise ServiceError(
                f"dockerd did not answer on {host} within {timeout:.0f} s "
                f"(last error: {last_error}); end of {proc.log_path}:\n{proc.log_tail()}"
            )
        time.sleep(0.1)


def start_docker_engine(
    root: Path, timeout: float = 60.0, extra_args: list[str] | None = None
) -> DockerEngine:
    """Start ``dockerd`` with all its state under ``root`` and wait until it answers.

    The engine gets no bridge network and touches no iptables rules, so containers
    and builds have only the ``none`` and ``host`` networks. ``extra_args`` are
    added to dockerd's command line (``--storage-driver=vfs``, for example).
    """
    dockerd = require_binary("dockerd")
    require_binary("containerd")
    require_binary("runc")
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    sock = root / "docker.sock"
    if len(str(sock)) > _MAX_SOCKET_PATH:
        raise ServiceError(f"socket path too long for a unix socket: {sock}")
    pidfile = root / "dockerd.pid"
    with contextlib.suppress(OSError, ValueError):
        running = int(pidfile.read_text().strip())
        if pid_alive(running):
            raise ServiceError(f"dockerd {running} already runs with its state in {root}")
    host = f"unix://{sock}"
    argv = [
        dockerd,
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--pidfile", str(pidfile),
        "--host", f"unix://{sock}",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        *(extra_args or []),
    ]  # fmt: skip
    proc = ManagedProcess("dockerd", argv, root / "dockerd.log", marker=f"{root}/")
    try:
        _wait_for_engine(host, proc, timeout)
    except BaseException:
        proc.stop()
        raise
    return DockerEngine(host, proc, root)


def docker_engine_from_env() -> DockerEngine | None:
    """The existing engine named by PACHHOOK_TEST_DOCKER_HOST, if any."""
    host = os.environ.get(DOCKER_HOST_ENV, "").strip()
    return DockerEngine(host) if host else None


def _is_static_elf(path: Path) -> bool:
    """Whether ``path`` is an ELF file without a program interpreter."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF":
            return False
        is64 = header[4] == 2
        order = "<" if header[5] == 1 else ">"
        if is64:
            (phoff,) = struct.unpack_from(order + "Q", header, 0x20)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 0x36)
        else:
            (phoff,) = struct.unpack_from(order + "I", header, 0x1C)
            phentsize, phnum = struct.unpack_from(order + "HH", header, 0x2A)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(order + "I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def busybox_rootfs_tar() -> bytes:
    """A tar of a tiny root filesystem: static busybox as /bin/sh and its applets."""
    busybox = Path(os.path.realpath(require_binary("busybox")))
    if not _is_static_elf(busybox):
        raise MissingBinaryError(
            f"{busybox} is not statically linked: install the Debian package busybox-static "
            "(apt-get install busybox-static)"
        )
    listed = subprocess.run(
        [str(busybox), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    applets = sorted({a for a in listed if a and "/" not in a and a != "busybox"} | {"sh"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        info = tar.gettarinfo(str(busybox), arcname="bin/busybox")
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        with open(busybox, "rb") as f:
            tar.addfile(info, f)
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            link.mode = 0o777
            tar.addfile(link)
    return buf.getvalue()


def ensure_base_image(engine: DockerEngine, tag: str = BASE_IMAGE) -> str:
    """Import the busybox base image into the engine unless it is already there."""
    client = engine.client()
    try:
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass
        repository, _, version = tag.rpartition(":")
        client.api.import_image_from_data(
            busybox_rootfs_tar(),
            repository=repository,
            tag=version,
            changes=["ENV PATH=/bin", 'CMD ["/bin/sh"]'],
        )
        client.images.get(tag)  # raises if the import did not produce the tag
        return tag
    finally:
        client.close()


# --------------------------------------------------------------------------- registry


class RegistryClient:
    """Minimal client of the registry's HTTP API (distribution v2), urllib only."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self.password = password
        # Loopback traffic must never go through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(
        self, method: str, path: str, accept: str | None = None, timeout: float = 10
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(self.url + path, method=method)
        if accept:
            req.add_header("Accept", accept)
        if self.username is not None:
            token = f"{self.username}:{self.password or ''}".encode()
            req.add_header("Authorization", "Basic " + base64.b64encode(token).decode())
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers.items()), exc.read()

    def ping(self) -> int:
        """The status of ``GET /v2/``: 200, or 401 when credentials are needed."""
        return self._request("GET", "/v2/", timeout=2)[0]

    def tags(self, repo: str) -> list[str]:
        """Tags of a repository, sorted; empty when the repository does not exist."""
        path = f"/v2/{urllib.parse.quote(repo)}/tags/list"
        status, _, body = self._request("GET", path)
        if status == 404:
            return []
        if status != 200:
            raise RegistryHTTPError(status, self.url + path, body.decode(errors="replace"))
        return sorted(json.loads(body).get("tags") or [])

    def manifest_digest(self, repo: str, tag: str) -> str | None:
        """The digest of the manifest of ``repo:tag``, or None when there is none."""
        path = f"/v2/{urllib.parse.quote(repo)}/manifests/{urllib.parse.quote(tag)}"
        status, headers, body = self._request("HEAD", path, accept=", ".join(MANIFEST_MEDIA_TYPES))
        if status == 404:
            return None
        if status != 200:
            raise RegistryHTTPError(status, self.url + path, body.decode(errors="replace"))
        return headers.get("Docker-Content-Digest", "")

    def has_manifest(self, repo: str, tag: str) -> bool:
        """Whether the registry holds a manifest for ``repo:tag``."""
        return self.manifest_digest(repo, tag) is not None


class Registry:
    """A running ``docker-registry`` on loopback, with optional basic auth."""

    def __init__(
        self,
        port: int,
        process: ManagedProcess,
        root: Path,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self.url = f"http://{self.address}"
        self.process = process
        self.root = root
        self.username = username
        self.password = password

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def auth_config(self) -> dict[str, str] | None:
        """Credentials in docker-py's ``auth_config`` form, or None without auth."""
        if self.username is None:
            return None
        return {"username": self.username, "password": self.password or ""}

    def client(
        self, username: str | None = None, password: str | None = None, *, anonymous: bool = False
    ) -> RegistryClient:
        """An HTTP client; by default with this registry's own credentials."""
        if anonymous:
            return RegistryClient(self.url)
        if username is None:
            username, password = self.username, self.password
        return RegistryClient(self.url, username, password)

    def tags(self, repo: str) -> list[str]:
        return self.client().tags(repo)

    def has_manifest(self, repo: str, tag: str) -> bool:
        return self.client().has_manifest(repo, tag)

    def manifest_digest(self, repo: str, tag: str) -> str | None:
        return self.client().manifest_digest(repo, tag)

    def stop(self, timeout: float = 15.0) -> None:
        self.process.stop(timeout)

    def __repr__(self) -> str:
        auth = f", user={self.username!r}" if self.username else ""
        return f"Registry(address={self.address!r}, pid={self.pid}{auth})"


def htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd entry (the registry accepts no other hash)."""
    if ":" in username:
        raise ValueError("a user name in an htpasswd file cannot contain ':'")
    try:
        htpasswd = require_binary("htpasswd")
    except MissingBinaryError:
        try:
            import bcrypt
        except ImportError:
            raise MissingBinaryError(
                "htpasswd not found on PATH and Python's bcrypt is not installed: install "
                "the Debian package apache2-utils (apt-get install apache2-utils)"
            ) from None
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
        return f"{username}:{hashed}"
    out = subprocess.run(
        [htpasswd, "-Bbn", username, password], capture_output=True, text=True, check=True
    ).stdout
    return out.strip()


def _registry_config(root: Path, port: int, htpasswd: Path | None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "pachhook-test", "path": str(htpasswd)}}
    return config


def _wait_for_registry(reg: Registry, timeout: float) -> None:
    probe = RegistryClient(reg.url)
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        if not reg.process.running():
            raise ServiceError(
                f"docker-registry exited with status {reg.process.popen.returncode} before "
                f"answering; end of {reg.process.log_path}:\n{reg.process.log_tail()}"
            )
        try:
            last = probe.ping()
            if last == 200 or (last == 401 and reg.username is not None):
                return
        except OSError as exc:  # not listening yet
            last = exc
        if time.monotonic() > deadline:
            raise ServiceError(
                f"docker-registry did not answer on {reg.url} within {timeout:.0f} s "
                f"(last: {last}); end of {reg.process.log_path}:\n{reg.process.log_tail()}"
            )
        time.sleep(0.05)


def start_registry(
    root: Path,
    username: str | None = None,
    password: str | None = None,
    port: int | None = None,
    timeout: float = 30.0,
) -> Registry:
    """Start ``docker-registry serve`` on 127.0.0.1 with storage under ``root``.

    With ``username`` the registry asks for basic auth (htpasswd, bcrypt). Without
    ``port`` a free port is chosen, and another one is tried if it was taken in the
    meantime.
    """
    binary = require_binary("docker-registry")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    htpasswd: Path | None = None
    if username is not None:
        htpasswd = root / "htpasswd"
        htpasswd.write_text(htpasswd_line(username, password or "") + "\n")
    # REGISTRY_* variables would override the configuration file.
    env = {k: v for k, v in _child_env().items() if not k.startswith("REGISTRY_")}
    attempts = 1 if port is not None else 3
    for attempt in range(attempts):
        chosen = port if port is not None else free_port()
        config_path = root / "config.yml"
        # JSON is YAML, and needs no YAML writer.
        config_path.write_text(json.dumps(_registry_config(root, chosen, htpasswd), indent=2))
        log = root / f"registry-{attempt}.log"
        proc = ManagedProcess("docker-registry", [binary, "serve", str(config_path)], log, env)
        reg = Registry(chosen, proc, root, username, password)
        try:
            _wait_for_registry(reg, timeout)
            return reg
        except ServiceError:
            proc.stop()
            if attempt + 1 < attempts and "address already in use" in proc.log_tail():
                continue
            raise
        except BaseException:
            proc.stop()
            raise
    raise AssertionError("unreachable")
