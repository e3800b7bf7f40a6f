"""Faults at the wire, for the fault tests: a proxy in front of the Docker engine that can
hold a request or cut its connection mid-answer, and a registry that logs every request
it is sent (and grants nothing), to prove that no credential reaches it.

Both listen on this machine only (a unix socket, 127.0.0.1) and are stopped by the test
that started them.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from tests import services

_REQUEST_LINE = re.compile(rb"(GET|POST|HEAD|PUT|DELETE) (/\S*) HTTP/1\.[01]\r\n")


# -- the engine, behind a proxy ------------------------------------------------------------------


@dataclass
class _Rule:
    pattern: re.Pattern[str]
    action: str  # hold | cut
    after: bytes = b"\r\n\r\n"  # cut: the answer goes up to and including this, no further
    seen: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    times: int = 1


class EngineProxy:
    """`unix://<socket>` that passes every byte to and from the engine's socket, records
    each request line (`requests`), and for a request whose path matches a rule either
    holds it (nothing more goes to the engine until `release()`: the caller waits, as on
    an engine that hangs) or cuts its connection once the answer has reached a marker (by
    default the end of its headers: the engine went away mid-stream, as when dockerd
    restarts)."""

    def __init__(self, engine_host: str, folder: Path) -> None:
        if not engine_host.startswith("unix://"):
            raise ValueError("the engine proxy needs a unix:// engine")
        self.target = engine_host.removeprefix("unix://")
        self.path = str(folder / "engine-proxy.sock")
        self.requests: list[str] = []
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(64)
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="engine-proxy", daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def hold(self, path_pattern: str) -> _Rule:
        rule = _Rule(re.compile(path_pattern), "hold")
        with self._lock:
            self._rules.append(rule)
        return rule

    def cut(self, path_pattern: str, after: bytes = b"\r\n\r\n") -> _Rule:
        rule = _Rule(re.compile(path_pattern), "cut", after)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            rules, self._rules = self._rules, []
        for rule in rules:
            rule.released.set()

    def saw(self, path_pattern: str) -> bool:
        pattern = re.compile(path_pattern)
        with self._lock:
            return any(pattern.search(line) for line in self.requests)

    def stop(self) -> None:
        self._stopped.set()
        self.clear()
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                with suppress(OSError):
                    sock.close()
        with suppress(OSError):
            os.unlink(self.path)

    # - the pump -

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                engine.connect(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, engine]
            threading.Thread(
                target=self._pump, args=(client, engine), name="engine-proxy-conn", daemon=True
            ).start()

    def _match(self, data: bytes) -> _Rule | None:
        found = None
        for match in _REQUEST_LINE.finditer(data):
            line = f"{match.group(1).decode()} {match.group(2).decode(errors='replace')}"
            with self._lock:
                self.requests.append(line)
                for rule in self._rules:
                    if rule.times > 0 and rule.pattern.search(line):
                        rule.times -= 1
                        rule.seen.set()
                        found = rule
        return found

    def _pump(self, client: socket.socket, engine: socket.socket) -> None:
        cutting: _Rule | None = None
        answered = b""
        try:
            while not self._stopped.is_set():
                ready, _, _ = select.select([client, engine], [], [], 0.2)
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        return
                    rule = self._match(data)
                    if rule is not None and rule.action == "hold":
                        while not rule.released.wait(0.05):
                            if self._stopped.is_set():
                                return
                    if rule is not None and rule.action == "cut":
                        cutting, answered = rule, b""
                    engine.sendall(data)
                if engine in ready:
                    data = engine.recv(65536)
                    if not data:
                        return
                    if cutting is not None:
                        answered += data
                        at = answered.find(cutting.after)
                        if at >= 0:
                            # Up to the marker and no further: the answer stops mid-way.
                            end = at + len(cutting.after)
                            client.sendall(data[: max(0, end - (len(answered) - len(data)))])
                            cutting.released.set()
                            return  # both ends are closed below
                    client.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, engine):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@contextmanager
def engine_proxy(engine_host: str) -> Iterator[EngineProxy]:
    folder = services.short_tempdir("prx-")
    proxy = EngineProxy(engine_host, folder)
    try:
        yield proxy
    finally:
        proxy.stop()
        services.remove_tree(folder)


# -- a registry that logs what it is sent ---------------------------------------------------------


class LoggingRegistry:
    """An HTTP server on 127.0.0.1 that answers every registry request with 401 and a
    bearer challenge whose realm is itself (`/token`, or `realm` when given), and every
    token request with 401: it grants nothing, and keeps every request line, header and
    body it was sent. With `grant`, its token service hands out the token "granted" and
    a request bearing it gets 404 (no such manifest)."""

    def __init__(self, realm: str | None = None, grant: bool = False) -> None:
        self.log: list[str] = []
        self.realm = realm
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                registry.log.append(
                    f"{self.command} {self.path}\n{self.headers}\n{body.decode(errors='replace')}"
                )
                body_out = json.dumps({"errors": [{"code": "UNAUTHORIZED"}]}).encode()
                if self.path.startswith("/token"):
                    if grant:
                        self.send_response(200)
                        body_out = json.dumps({"token": "granted"}).encode()
                    else:
                        self.send_response(401)
                elif grant and self.headers.get("Authorization") == "Bearer granted":
                    self.send_response(404)
                    body_out = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN"}]}).encode()
                else:
                    self.send_response(401)
                    realm = registry.realm or f"http://127.0.0.1:{registry.port}/token"
                    self.send_header(
                        "WWW-Authenticate", f'Bearer realm="{realm}",service="logging-registry"'
                    )
                self.send_header("Content-Type", "application/json")
                self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
                self.send_header("Content-Length", str(len(body_out)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body_out)

            do_GET = do_POST = do_PUT = do_PATCH = do_HEAD = do_DELETE = _any

            def log_message(self, format: str, *args: object) -> None:
                registry.log.append("raw: " + format % args)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def text(self) -> str:
        return "\n".join(self.log)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def logging_registry(realm: str | None = None, grant: bool = False) -> Iterator[LoggingRegistry]:
    registry = LoggingRegistry(realm, grant)
    try:
        yield registry
    finally:
        registry.stop()


# -- processes -----------------------------------------------------------------------------------


def kill_when(proc: subprocess.Popen[str], event: threading.Event, timeout: float = 60) -> None:
    """SIGKILL `proc` (which the test started) once `event` is set."""
    if not event.wait(timeout):
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the awaited moment never came:\n{out}\n{err}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()


def wait_for(check: object, timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come true within {timeout}s")
        time.sleep(0.02)
