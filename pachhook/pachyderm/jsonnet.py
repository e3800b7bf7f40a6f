"""Jsonnet, evaluated the way `pachctl create pipeline --jsonnet` has pachd evaluate it.

pachd runs go-jsonnet with every `--arg k=v` as a top-level argument *string* and accepts
one spec object or an array of specs. Here the same go-jsonnet (the `gojsonnet` wheel)
runs in a separate process (`jsonnet_worker.py`), because it cannot be stopped from
Python: a `tailstrict` recursion escapes its stack limit and aborts the whole process,
and a fork of a process that has loaded it hangs. So the worker is a fresh interpreter:

- wall time is bounded per template by killing the worker (by its pid), memory by
  RLIMIT_DATA set in the worker before go-jsonnet starts, CPU by RLIMIT_CPU as a
  backstop should pachhook itself die;
- the worker reads no file: each import comes back over the pipe, and is resolved here
  against the source (a commit's tree or the working tree), relative to the importing
  file and never outside the repository (no absolute paths, no `..` above the root, no
  symlink leading out, no URL; pachd would fetch URLs, pachhook refuses them);
- every failure becomes one line, `file:line:col: problem; what to do`.

This module never imports `_gojsonnet`, and importing it costs next to nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NamedTuple

from pachhook.errors import InputError

Read = Callable[[str], "bytes | None"]
IsLink = Callable[[str], bool]

WORKER = Path(__file__).with_name("jsonnet_worker.py")
MIN_MEMORY_MB = 128  # go-jsonnet's runtime alone takes about 90 MB of data
MAX_STACK = 500  # go-jsonnet's default, as pachd runs it
MAX_TRACE = 20
MAX_OUTPUT = 16 << 20  # bytes of JSON one template may return
STARTUP_SECONDS = 15.0
SYMLINK_HOPS = 40  # as the kernel's limit
TIMEOUT_KEY = "[pipelines] template_timeout"
MEMORY_KEY = "[pipelines] template_memory_mb"


class TemplateError(InputError):
    """A template that cannot be evaluated, or whose result is no spec: exit 2."""


class Job(NamedTuple):
    file: str  # repository-relative posix path of the template
    args: tuple[tuple[str, str], ...]  # top-level arguments, strings as pachctl passes them
    label: str  # `templates/edges.jsonnet (suffix=1)`: how messages name this instance


class Result(NamedTuple):
    value: Any  # the template's JSON value
    reads: dict[str, str]  # every file read (the template, imports, symlinks) -> blob id


def stamp() -> str:
    """What identifies the evaluator, for caches: the binding's file, size and mtime.
    Locating it loads nothing; asking the package metadata would cost ~0.1 s."""
    library = _library()
    info = os.stat(library)
    return f"{library}:{info.st_size}:{info.st_mtime_ns}"


@functools.lru_cache(maxsize=1)
def _library() -> str:
    import importlib.util

    spec = importlib.util.find_spec("_gojsonnet")
    if spec is None or spec.origin is None:
        raise InputError(
            "Jsonnet templates need go-jsonnet's Python binding, which is not installed; "
            "install it: pip install gojsonnet"
        )
    return spec.origin


# -- the repository as the templates see it -------------------------------------------


class Refused(Exception):
    """A path a template may not read, and why."""


class _Files:
    """Resolves and reads repository files for one evaluation, remembering what was read."""

    def __init__(self, read: Read, is_link: IsLink) -> None:
        self._read = read
        self._is_link = is_link
        self.reads: dict[str, str] = {}  # path -> blob id of the bytes read, in order

    def _take(self, path: str) -> bytes | None:
        from pachhook.repo.source import blob_id

        data = self._read(path)
        if data is not None:
            self.reads[path] = blob_id(data)
        return data

    def resolve(self, path: str) -> str:
        """The file a normalised path leads to, following symlinks one component at a
        time as the kernel does, never out of the repository. A link passed through is
        read: its target is part of what the template depends on."""
        todo = path.split("/")
        done: list[str] = []
        hops = 0
        while todo:
            head = todo.pop(0)
            here = "/".join([*done, head])
            if not self._is_link(here):
                done.append(head)
                continue
            hops += 1
            if hops > SYMLINK_HOPS:
                raise Refused(f"{path} passes through more than {SYMLINK_HOPS} symlinks")
            target = (self._take(here) or b"").decode("utf-8", "surrogateescape")
            joined = posixpath.normpath(posixpath.join("/".join(done), target))
            if target.startswith("/") or joined == ".." or joined.startswith("../"):
                raise Refused(f"{here} is a symlink to {target}, outside the repository")
            todo = ([] if joined == "." else joined.split("/")) + todo
            done = []
        return "/".join(done)

    def load(self, path: str) -> bytes:
        real = self.resolve(path)
        data = self._take(real)
        if data is None:
            raise FileNotFoundError(path if real == path else f"{path} (-> {real})")
        return data

    def import_file(self, base: str, rel: str) -> tuple[str, bytes]:
        """go-jsonnet's importer: `base` is the importing file's folder ("" or ending in
        "/"), `rel` the path as written. The answer's name is the lexical path, as
        go-jsonnet's own file importer gives it: messages and nested imports use it."""
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", rel):
            raise Refused(
                f"cannot import {rel!r}: imports from URLs are not supported; "
                "copy the file into the repository"
            )
        if rel.startswith("/"):
            raise Refused(
                f"cannot import {rel!r}: absolute paths are refused; "
                "import files of the repository by a path relative to the importing file"
            )
        lexical = posixpath.normpath(posixpath.join(base, rel))
        if lexical == ".." or lexical.startswith("../"):
            raise Refused(
                f"cannot import {rel!r}: it is outside the repository; "
                "import files of the repository only"
            )
        try:
            return lexical, self.load(lexical)
        except FileNotFoundError as exc:
            raise Refused(
                f"cannot import {rel!r}: {exc} does not exist; "
                "check the path, which is relative to the importing file"
            ) from None
        except Refused as exc:
            raise Refused(
                f"cannot import {rel!r}: {exc}; import files of the repository only"
            ) from None


# -- the evaluator process --------------------------------------------------------------


class Evaluator:
    """One evaluator process for any number of templates, one after the other: started
    on first use, restarted after a template had to be stopped, ended by `close`."""

    def __init__(self, read: Read, is_link: IsLink, *, timeout: float, memory_mb: int) -> None:
        if memory_mb < MIN_MEMORY_MB:
            raise InputError(
                f"{MEMORY_KEY}: {memory_mb} is too little for go-jsonnet; give at least {MIN_MEMORY_MB}"
            )
        self.read = read
        self.is_link = is_link
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.version = ""
        self._proc: Any = None  # subprocess.Popen[bytes]
        self._stderr: IO[bytes] | None = None
        self._buffer = b""

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is not None:  # interrupted, or a failure: no use waiting for the worker
            self._stop_worker()
        self.close()

    def close(self) -> None:
        import subprocess

        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the worker's end of input: it leaves
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self._kill(proc)
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def evaluate(self, job: Job) -> Result:
        """The JSON value of one template instance, and the files it read."""
        import json
        import time

        files = _Files(self.read, self.is_link)
        source = self._template_text(job, files)
        if self._proc is None:
            self._start()
        request = {
            "file": job.file,
            "source": source,
            "args": dict(job.args),
            "max_stack": MAX_STACK,
            "max_trace": MAX_TRACE,
            "cpu_seconds": int(self.timeout * 2) + 2,
        }
        self._send(b"J", json.dumps(request).encode(), job)
        deadline = time.monotonic() + self.timeout
        refusal = ""  # why the last import was refused, worded here
        while True:
            kind, payload = self._receive(deadline, job)
            if kind == b"I":
                base, rel = json.loads(payload)
                try:
                    found, content = files.import_file(base, rel)
                except Refused as exc:
                    refusal = str(exc)
                    self._send(b"X", b"", job)
                else:
                    self._send(b"F", found.encode() + b"\0" + content, job)
            elif kind == b"R":
                return Result(json.loads(payload), files.reads)
            elif kind == b"E":
                raise TemplateError(
                    one_line(payload.decode("utf-8", "replace"), job, source, refusal)
                )
            else:
                self._stop_worker()
                raise TemplateError(
                    f"{job.label}: the Jsonnet evaluator answered {kind!r}; this is a bug in pachhook"
                )

    def _template_text(self, job: Job, files: _Files) -> str:
        try:
            data = files.load(job.file)
        except (Refused, FileNotFoundError) as exc:
            raise TemplateError(
                f"{job.label}: cannot read the template ({exc}); name a file of the repository"
            ) from None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise TemplateError(
                f"{job.file}:{line}: not UTF-8 text; save the template as UTF-8"
            ) from None

    # -- the process

    def _start(self) -> None:
        import subprocess
        import sys
        import tempfile
        import time

        if self._stderr is None:
            # A crashing Go runtime writes tens of kilobytes: a file, not a pipe, takes it.
            self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._stderr.seek(0)
        self._stderr.truncate()
        self._buffer = b""
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-S",
                str(WORKER),
                os.path.dirname(_library()),
                str(self.memory_mb << 20),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
        )
        kind, payload = self._receive(time.monotonic() + STARTUP_SECONDS, None)
        if kind != b"H":
            self._stop_worker()
            raise InputError("the Jsonnet evaluator did not start; check the gojsonnet package")
        self.version = payload.decode()

    @staticmethod
    def _kill(proc: Any) -> int:
        import signal

        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        return int(proc.wait())

    def _stop_worker(self) -> int:
        proc, self._proc = self._proc, None
        if proc is None:
            return 0
        status = self._kill(proc)
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        return status

    def _send(self, kind: bytes, payload: bytes, job: Job) -> None:
        import struct

        try:
            self._proc.stdin.write(kind + struct.pack(">I", len(payload)) + payload)
        except (BrokenPipeError, ValueError):
            raise self._died(job) from None

    def _receive(self, deadline: float, job: Job | None) -> tuple[bytes, bytes]:
        import select
        import struct
        import time

        stream = self._proc.stdout.fileno()
        while True:
            if len(self._buffer) >= 5:
                (size,) = struct.unpack(">I", self._buffer[1:5])
                if size > MAX_OUTPUT and job is not None:
                    self._stop_worker()
                    raise TemplateError(
                        f"{job.label}: the template returned more than {MAX_OUTPUT >> 20} MB of JSON; "
                        "return pipeline specs only"
                    )
                if len(self._buffer) >= 5 + size:
                    kind, payload = self._buffer[:1], self._buffer[5 : 5 + size]
                    self._buffer = self._buffer[5 + size :]
                    return kind, payload
            left = deadline - time.monotonic()
            if left <= 0:
                self._stop_worker()
                raise self._timed_out(job)
            ready, _, _ = select.select([stream], [], [], left)
            if ready:
                chunk = os.read(stream, 1 << 16)
                if not chunk:
                    raise self._died(job)
                self._buffer += chunk

    # -- how a stopped evaluation is told

    def _timed_out(self, job: Job | None) -> InputError:
        if job is None:
            return InputError(
                f"the Jsonnet evaluator did not start within {STARTUP_SECONDS:g} s; "
                "check the gojsonnet package and the machine's load"
            )
        return TemplateError(
            f"{job.label}: evaluation was stopped after {self.timeout:g} s; the template may "
            f"recurse or loop forever: fix it, or raise {TIMEOUT_KEY}"
        )

    def _died(self, job: Job | None) -> InputError:
        import signal

        status = self._stop_worker()
        text = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            text = self._stderr.read(4096).decode("utf-8", "replace")
        what = job.label if job else "the Jsonnet evaluator"
        if any(s in text for s in ("out of memory", "cannot allocate memory", "MemoryError")):
            return TemplateError(
                f"{what}: evaluation was stopped at the {self.memory_mb} MB memory limit; the "
                f"template may build huge values or recurse forever: fix it, or raise {MEMORY_KEY}"
            )
        if status == -signal.SIGXCPU:
            return TemplateError(
                f"{what}: evaluation was stopped at its CPU time limit; the template may loop "
                f"forever: fix it, or raise {TIMEOUT_KEY}"
            )
        if "stack overflow" in text:
            return TemplateError(
                f"{what}: evaluation recursed too deeply and was stopped; make the recursion end"
            )
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        return InputError(
            f"{what}: the Jsonnet evaluator stopped (status {status}: {first[:200]}); "
            "this is a bug in pachhook, please report it"
        )


# -- go-jsonnet's errors, in one line ------------------------------------------------------

# go-jsonnet's LocationRange.String(): file:L:C, file:L:C-C2 or file:(L:C)-(L2:C2)
_RANGE = re.compile(
    r"^(?P<file>.+?):(?:(?P<l>\d+):(?P<c>\d+)(?:-\d+)?|\((?P<l2>\d+):(?P<c2>\d+)\)-\(\d+:\d+\))$"
)
_LEADING_RANGE = re.compile(
    r"(?s)^(?P<at>\S+?:(?:\d+:\d+(?:-\d+)?|\(\d+:\d+\)-\(\d+:\d+\)))\s+(?P<message>.*)$"
)


def _position(text: str) -> str | None:
    """`file:line:col` of one of go-jsonnet's location ranges; None when it is none."""
    m = _RANGE.match(text)
    if m is None:
        return None
    return f"{m['file']}:{m['l'] or m['l2']}:{m['c'] or m['c2']}"


def _flat(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def one_line(raw: str, job: Job, source: str, refusal: str = "") -> str:
    """`file:line:col: problem; what to do` from go-jsonnet's error text:

    static   `FILE:RANGE MESSAGE\\n\\n<the source line>\\n\\n`
    runtime  `RUNTIME ERROR: MESSAGE\\n\\tFILE:RANGE\\tFRAME\\n...`, innermost frame first
             (a static error in an imported file: `RUNTIME ERROR: FILE:RANGE MESSAGE`)
    """
    evaluating = f" (evaluating {job.label})"
    if not raw.startswith("RUNTIME ERROR: "):
        m = _LEADING_RANGE.match(raw.partition("\n")[0])
        at = _position(m["at"]) if m else None
        if m and at:
            return f"{at}: {_flat(m['message'])}{_unless_in(at, job, evaluating)}; fix the template"
        return f"{job.file}: {_flat(raw)}; fix the template"

    message, _, trace = raw[len("RUNTIME ERROR: ") :].partition("\n\t")
    frames = (line.lstrip("\t").split("\t")[0] for line in ("\t" + trace).split("\n"))
    at = next((p for p in map(_position, frames) if p), None)
    here = at or job.file

    if message.startswith("importer error:"):
        # The binding garbles the importer's text; the reason was kept on this side.
        return f"{here}: {refusal or 'the import could not be read'}"
    m = _LEADING_RANGE.match(message)
    inner = _position(m["at"]) if m else None
    if m and inner:  # a syntax error in an imported file
        return f"{inner}: {_flat(m['message'])}{evaluating}; fix that file"
    missing = re.match(r"Missing argument: (\S+)$", message)
    if missing:
        name = missing[1]
        return (
            f"{job.file}:{_parameter_position(source, name)}: the template's function needs "
            f'argument {name!r}, which args do not give; add {name} = "..." to the args '
            f"of {job.label}"
        )
    unknown = re.match(r"function has no parameter (\S+)$", message)
    if unknown:
        name = unknown[1]
        return (
            f"{job.file}:{_parameter_position(source, None)}: the template's function has no "
            f"parameter {name!r}; remove {name} from the args of {job.label}"
        )
    if message.startswith("max stack frames exceeded"):
        return (
            f"{here}: recursion deeper than {MAX_STACK} calls (max stack frames exceeded)"
            f"{_unless_in(at, job, evaluating)}; make the recursion end"
        )
    return (
        f"{here}: {_flat(message)}{_unless_in(at, job, evaluating)}; fix the template or its args"
    )


def _unless_in(at: str | None, job: Job, evaluating: str) -> str:
    """Name the instance when the location alone does not."""
    return "" if at and at.startswith(job.file + ":") else evaluating


# -- the template's top-level function, read without evaluating --------------------------

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>//[^\n]*|\#[^\n]*|/\*.*?\*/)
    | (?P<block>\|\|\|.*?\n[ \t]*\|\|\|)
    | (?P<string>@?"(?:[^"\\]|\\.)*"|@?'(?:[^'\\]|\\.)*')
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<other>.)
    """,
    re.S | re.X,
)


_NESTING = {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}


class Parameter(NamedTuple):
    name: str
    offset: int  # in the source
    optional: bool  # has a default value


class Header(NamedTuple):
    offset: int  # of the `function` keyword
    parameters: tuple[Parameter, ...]


def _tokens(source: str) -> Iterator[tuple[str, str, int]]:
    for m in _TOKEN.finditer(source):
        kind = m.lastgroup or "other"
        if kind not in ("space", "comment"):
            yield kind, m.group(), m.start()


def top_level_function(source: str) -> Header | None:
    """The parameters of the function a template evaluates to (`local ...;` and
    `assert ...;` before it are passed over); None when it is not a function."""
    tokens = list(_tokens(source))
    i = 0
    while i < len(tokens) and tokens[i][1] in ("local", "assert"):
        depth = 0
        while i < len(tokens):
            text = tokens[i][1]
            depth += _NESTING.get(text, 0)
            i += 1
            if text == ";" and depth == 0:
                break
    if i + 1 >= len(tokens) or tokens[i][1] != "function" or tokens[i + 1][1] != "(":
        return None
    header, i = tokens[i][2], i + 2
    parameters: list[Parameter] = []
    depth, expect_name = 1, True  # just after the opening parenthesis
    while i < len(tokens) and depth:
        kind, text, offset = tokens[i]
        if depth == 1 and expect_name and kind == "word":
            optional = i + 1 < len(tokens) and tokens[i + 1][1] == "="
            parameters.append(Parameter(text, offset, optional))
        depth += _NESTING.get(text, 0)
        expect_name = depth == 1 and text == ","
        i += 1
    return Header(header, tuple(parameters))


def _parameter_position(source: str, name: str | None) -> str:
    """`line:col` of parameter `name` of the top-level function (of the function itself
    when `name` is None or not found): go-jsonnet gives no location for these errors."""
    header = top_level_function(source)
    if header is None:
        return "1:1"
    offset = next((p.offset for p in header.parameters if p.name == name), header.offset)
    line = source.count("\n", 0, offset) + 1
    return f"{line}:{offset - (source.rfind(chr(10), 0, offset) + 1) + 1}"
