"""BuildKit builds, through the Docker CLI.

docker-py speaks only the classic builder (docker/docker-py#2230 is still open), so an
image that BuildKit builds is built by running the Docker CLI:

    DOCKER_BUILDKIT=1 <cli> build --progress=plain --iidfile F -f DOCKERFILE CONTEXT_DIR

Its plain progress is read into the same events as a classic build (steps, output, the
failing step), its image ID comes from the `--iidfile`, and the rest of a run (push,
verify) goes through docker-py as before: the image is in the same engine's store.

- Which CLI: not simply `docker` on PATH. A Docker 23+ CLI without the buildx plugin
  refuses BuildKit builds ("BuildKit is enabled but the buildx component is missing or
  broken"), while Debian's docker.io 20.10 builds with BuildKit without any plugin. So
  each candidate (PACHHOOK_DOCKER_CLI, else `docker` on PATH, /usr/bin/docker,
  /usr/local/bin/docker) is asked `DOCKER_BUILDKIT=1 <cli> build --help`, pointed at no
  engine (the 20.10 CLI would ping its engine first), and the first that offers
  `--secret` is used. The answer is kept for the
  process.
- Which engine: the one docker-py talks to. The CLI follows `docker context` where
  docker-py follows DOCKER_HOST (else the default socket), so the CLI is always given
  DOCKER_HOST explicitly, or the build and the push could reach different engines.
- Secrets: `--secret id=ID,env=VAR` puts only the variable's name on the command line;
  its value is in the CLI's environment alone, and BuildKit mounts it for the RUN steps
  that ask, never into a layer.

This module imports nothing heavy: resolving `builder = "auto"` while planning costs one
short subprocess, and nothing at all on the no-op path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import NamedTuple

from pachhook.config import CREDENTIAL_VARIABLES, BuildSecret, ImageConfig
from pachhook.docker.digest import ImageState

BUILDKIT, CLASSIC = "buildkit", "classic"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"  # docker-py's default too
CLI_VARIABLE = "PACHHOOK_DOCKER_CLI"  # the operator's choice of CLI (never the repository's)
PROBE_TIMEOUT = 20  # seconds for `build --help` or `--version`
# The engine a probe is pointed at: none. Docker 20.10's CLI pings its engine before any
# command, `--help` and `--version` too; a plan (and bad input found by it) must reach no
# engine, and what a CLI offers does not depend on one.
NO_ENGINE = "unix:///dev/null"
TAIL_LINES = 20

# -- which CLI ---------------------------------------------------------------------------------


class Cli(NamedTuple):
    """A Docker CLI that builds with BuildKit."""

    path: str

    def describe(self, env: Mapping[str, str]) -> str:
        return f"{self.path} (Docker CLI {cli_version(self.path, env)})"


class Rejected(NamedTuple):
    path: str
    reason: str


# The answers, per CLI and the places where it finds its plugins (buildx).
_probed: dict[tuple[str, str, str], Cli | Rejected] = {}
_versions: dict[str, str] = {}
_probe_lock = threading.Lock()


def candidates(env: Mapping[str, str]) -> list[str]:
    """The CLIs to try, in order, each real file once: PACHHOOK_DOCKER_CLI alone when set."""
    explicit = env.get(CLI_VARIABLE, "").strip()
    if explicit:
        return [shutil.which(explicit, path=env.get("PATH", os.defpath)) or explicit]
    on_path = shutil.which("docker", path=env.get("PATH", os.defpath))
    found: list[str] = []
    seen: set[str] = set()
    for name in (on_path, "/usr/bin/docker", "/usr/local/bin/docker"):
        if not name or not os.access(name, os.X_OK):
            continue
        real = os.path.realpath(name)
        if real not in seen:
            seen.add(real)
            found.append(name)
    return found


def probe(path: str, env: Mapping[str, str]) -> Cli | Rejected:
    """Whether the CLI at `path` builds with BuildKit (no engine is contacted)."""
    key = (path, env.get("DOCKER_CONFIG", ""), env.get("HOME", ""))
    with _probe_lock:
        known = _probed.get(key)
    if known is not None:
        return known
    result: Cli | Rejected
    try:
        helped = subprocess.run(
            [path, "build", "--help"],
            env={**cli_environment(env), "DOCKER_BUILDKIT": "1", "DOCKER_HOST": NO_ENGINE},
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        result = Rejected(path, str(exc))
    else:
        if helped.returncode == 0 and "--secret" in helped.stdout:
            result = Cli(path)
        else:
            said = (helped.stderr or helped.stdout).strip().splitlines()
            result = Rejected(path, said[0] if said else f"exit status {helped.returncode}")
    with _probe_lock:
        _probed[key] = result
    return result


def find_cli(env: Mapping[str, str]) -> tuple[Cli | None, list[Rejected]]:
    """The first CLI that builds with BuildKit, and the ones passed over, with why."""
    rejected: list[Rejected] = []
    for path in candidates(env):
        found = probe(path, env)
        if isinstance(found, Cli):
            return found, rejected
        rejected.append(found)
    return None, rejected


def cli_version(path: str, env: Mapping[str, str]) -> str:
    """`20.10.24+dfsg1`, from `<cli> --version` (asked once, and only to describe it)."""
    with _probe_lock:
        known = _versions.get(path)
    if known is not None:
        return known
    try:
        said = subprocess.run(
            [path, "--version"],
            env={**cli_environment(env), "DOCKER_HOST": NO_ENGINE},
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
            stdin=subprocess.DEVNULL,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        said = ""
    match = re.search(r"version ([^,\s]+)", said)
    version = match[1] if match else "of unknown version"
    with _probe_lock:
        _versions[path] = version
    return version


def buildkit_refused(env: Mapping[str, str]) -> bool:
    """DOCKER_BUILDKIT=0: the user asked Docker for the classic builder."""
    return env.get("DOCKER_BUILDKIT", "").strip().lower() in ("0", "false", "no")


def resolve(image: ImageConfig, env: Mapping[str, str]) -> str:
    """The builder that builds `image`: "buildkit" or "classic". `auto` is BuildKit where a
    Docker CLI here builds with it (and DOCKER_BUILDKIT is not 0), else classic."""
    if image.builder in (BUILDKIT, CLASSIC):
        return image.builder
    if buildkit_refused(env):
        return CLASSIC
    return BUILDKIT if find_cli(env)[0] is not None else CLASSIC


def describe(states: Iterable[ImageState], env: Mapping[str, str]) -> list[str]:
    """Lines that say which builder builds how many of `states`, and through which CLI."""
    builders: dict[str, int] = {}
    for state in states:
        builders[state.builder] = builders.get(state.builder, 0) + 1
    lines = []
    for builder, number in sorted(builders.items()):
        count = f"{number} image(s)"
        if builder == CLASSIC:
            lines.append(f"builder: classic, through docker-py, for {count}")
            continue
        cli, rejected = find_cli(env)
        how = f"through {cli.describe(env)}" if cli else "but no Docker CLI here builds with it"
        passed = "".join(f"; passed over {r.path}: {r.reason}" for r in rejected)
        lines.append(f"builder: BuildKit, {how}, for {count}{passed}")
    return lines


def cli_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The CLI's environment: the engine docker-py uses, and none of pachhook's own
    credentials (the CLI reads Docker's config for the registries)."""
    child = {k: v for k, v in env.items() if k not in CREDENTIAL_VARIABLES}
    child.pop("DOCKER_CONTEXT", None)  # DOCKER_HOST names the engine
    child.pop("BUILDKIT_PROGRESS", None)
    child["DOCKER_HOST"] = env.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    return child


# -- one build ---------------------------------------------------------------------------------


class BuildRequest(NamedTuple):
    dockerfile: str  # a path: the Dockerfile, beside its `<name>.dockerignore` if any
    context_dir: str
    reference: str  # name:tag
    target: str | None = None
    build_args: Mapping[str, str] = MappingProxyType({})
    labels: Mapping[str, str] = MappingProxyType({})
    platform: str | None = None
    network: str | None = None  # "none" for an engine without a bridge network
    secrets: tuple[BuildSecret, ...] = ()
    cache_from: tuple[str, ...] = ()
    inline_cache: bool = False  # BUILDKIT_INLINE_CACHE=1: the image can serve as a cache


def build_argv(cli: Cli, request: BuildRequest, iidfile: str) -> list[str]:
    argv = [cli.path, "build", "--progress=plain", "--iidfile", iidfile]
    argv += ["-f", request.dockerfile, "-t", request.reference]
    if request.network:
        argv += ["--network", request.network]
    if request.target:
        argv += ["--target", request.target]
    if request.platform:
        argv += ["--platform", request.platform]
    args = dict(request.build_args)
    if request.inline_cache:
        args["BUILDKIT_INLINE_CACHE"] = "1"
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in request.labels.items():
        argv += ["--label", f"{key}={value}"]
    for ref in request.cache_from:
        argv += ["--cache-from", ref]
    for secret in request.secrets:
        argv += ["--secret", secret.spec]  # the variable's name; its value stays in env
    argv.append(request.context_dir)
    return argv


class Step(NamedTuple):
    stage: str | None  # None in a one-stage Dockerfile; "stage-N" for an unnamed stage
    number: int  # within its stage, FROM being 1
    total: int
    instruction: str

    @property
    def label(self) -> str:
        return (
            f"{self.stage} {self.number}/{self.total}"
            if self.stage
            else f"{self.number}/{self.total}"
        )


class BuildFailed(Exception):
    """The CLI failed: where (the step, if one failed) and what it said."""

    def __init__(self, step: Step | None, message: str, *, engine: bool = False) -> None:
        super().__init__(message)
        self.step = step
        self.message = message
        self.engine = engine  # the engine could not be reached


_VERTEX = re.compile(r"^#(\d+) (.*)$")
_STEP = re.compile(r"^(?:CACHED )?\[(?:(\S+) )?(\d+)/(\d+)\] (.*)$")
_TIMED = re.compile(r"^\d+\.\d+ (.*)$")
_ENGINE_DOWN = ("cannot connect to the docker daemon", "error during connect")


class PlainProgress:
    """`--progress=plain` lines -> steps and output lines.

    A vertex's first line `#N NAME` names it; Dockerfile steps are named `[STAGE i/n]
    INSTRUCTION` (`[i/n]` in a one-stage Dockerfile). Then `#N 0.12 OUTPUT`, `#N CACHED`,
    `#N DONE 0.1s`, `#N ERROR: MSG`. After a failure the CLI prints a block between
    `------` lines and then the error. A vertex error alone is no failure (a missing
    `--cache-from` image prints one and the build goes on): only the exit status decides.
    """

    def __init__(
        self,
        on_step: Callable[[Step], None] = lambda step: None,
        on_output: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.on_step = on_step
        self.on_output = on_output
        self.names: dict[int, str] = {}
        self.steps: dict[int, Step] = {}
        self.errors: list[tuple[int, str]] = []
        self.free: list[str] = []  # lines of no vertex: the final error, hints
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)  # what a person reads of the end
        self._in_block = False

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        if line.strip() == "------":
            self._in_block = not self._in_block
            return
        if self._in_block:
            return  # the failing step's last lines, told again
        match = _VERTEX.match(line)
        if match is None:
            self.free.append(line.strip())
            if line.strip() not in (message for _, message in self.errors[-3:]):
                self.tail.append(line.strip())
            return
        vertex, rest = int(match[1]), match[2]
        if vertex not in self.names:
            self.names[vertex] = rest
            step = _STEP.match(rest)
            if step:
                parsed = Step(step[1], int(step[2]), int(step[3]), step[4])
                self.steps[vertex] = parsed
                self.on_step(parsed)
            return
        if rest == self.names[vertex] or rest.startswith("sha256:") or rest.startswith("DONE"):
            return
        if rest == "CACHED":
            if vertex in self.steps:
                self.on_output("CACHED")
            return
        if rest.startswith("ERROR"):
            message = rest.removeprefix("ERROR").lstrip(":").strip()
            self.errors.append((vertex, message))
            self.tail.append(message)
            return
        timed = _TIMED.match(rest)
        if timed:  # the output of a step
            self.tail.append(timed[1])
            self.on_output(timed[1])

    def failure(self, status: int) -> BuildFailed:
        """What failed, once the CLI exited with `status`."""
        final = ""
        for line in reversed(self.free):
            if line.lower().startswith(("error", "failed", "cannot connect")):
                final = re.sub(r"^error:\s*", "", line, flags=re.IGNORECASE)
                break
        final = final or (self.free[-1] if self.free else "")
        if any(down in final.lower() for down in _ENGINE_DOWN):
            return BuildFailed(None, final, engine=True)
        step_errors = [(v, m) for v, m in self.errors if v in self.steps]
        if step_errors:
            vertex, message = step_errors[-1]
            return BuildFailed(self.steps[vertex], message or final)
        return BuildFailed(None, final or f"docker build exited with status {status}")


def build(
    cli: Cli,
    request: BuildRequest,
    env: Mapping[str, str],
    iidfile: str,
    *,
    progress: PlainProgress,
    on_line: Callable[[str], None],
) -> str:
    """Run one build; the image ID, or BuildFailed. Every line of the CLI goes to
    `on_line` (the build's log) and to `progress`."""
    child = cli_environment(env)
    child["DOCKER_BUILDKIT"] = "1"
    argv = build_argv(cli, request, iidfile)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child,
        )
    except OSError as exc:
        raise BuildFailed(None, f"cannot run {cli.path}: {exc}") from None
    assert proc.stdout is not None
    with proc:
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            on_line(line)
            progress.feed(line)
    if proc.returncode != 0:
        raise progress.failure(proc.returncode)
    try:
        with open(iidfile, encoding="utf-8") as handle:
            image_id = handle.read().strip()
    except OSError:
        image_id = ""
    if not image_id.startswith("sha256:"):
        raise BuildFailed(None, f"{cli.path} built, but wrote no image ID to its --iidfile")
    return image_id
