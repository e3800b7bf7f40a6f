"""Output for CI: GitHub's workflow commands, step outputs and job summary, and the
Markdown summary file for any CI.

With GITHUB_ACTIONS=true, `run` and `plan` first register every secret they may use with
`::add-mask::`, put each image's build log in a `::group::`, turn a failure with a known
file (and line) into an `::error file=...,line=...::` annotation, append their Markdown
summary (summary.py) to GITHUB_STEP_SUMMARY and their outputs (`images`, `pipelines`,
`transaction`, `changed`) to GITHUB_OUTPUT. Workflow commands go to standard error, where
the runner reads them as well, so that `--json` keeps standard output to itself.

Build output comes from the repository's own Dockerfiles and code: it is shown between
`::stop-commands::` markers, so that no line of it is taken for a command.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pachhook.errors import PachhookError
from pachhook.run.summary import error_markdown, plan_markdown, run_markdown

if TYPE_CHECKING:
    from pachhook.docker.engine import ImageResult
    from pachhook.plan.planner import Plan, Planned
    from pachhook.run.executor import RunRecord

Write = Callable[[str], None]
MAX_GROUP_LINES = 4000  # lines of one image's build kept for its group


def _stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


# -- workflow commands ------------------------------------------------------------------------


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str = "", **properties: str | int | None) -> str:
    """One workflow command line, its message and properties escaped as the runner expects."""
    props = ",".join(
        f"{key}={escape_property(str(value))}"
        for key, value in properties.items()
        if value is not None
    )
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


@dataclass(frozen=True)
class GitHub:
    """The job this process runs in, as GITHUB_* variables describe it."""

    output_file: str | None
    summary_file: str | None
    workspace: str | None = None
    write: Write = field(default=_stderr, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str], write: Write = _stderr) -> GitHub | None:
        if env.get("GITHUB_ACTIONS", "").strip().lower() != "true":
            return None
        return cls(
            env.get("GITHUB_OUTPUT") or None,
            env.get("GITHUB_STEP_SUMMARY") or None,
            env.get("GITHUB_WORKSPACE") or None,
            write,
        )

    def mask(self, env: Mapping[str, str]) -> None:
        for value in secrets(env):
            self.write(command("add-mask", value))

    def error(
        self,
        message: str,
        *,
        root: Path | None = None,
        file: str | None = None,
        line: int | None = None,
        title: str,
    ) -> None:
        """An annotation; `file` is relative to the repository `root`, and is given to the
        runner relative to the workspace (the repository may be a folder of it)."""
        where = None
        if file is not None and root is not None:
            path = (root / file).resolve()
            where = file
            if self.workspace:
                try:
                    where = str(path.relative_to(Path(self.workspace).resolve()))
                except ValueError:
                    where = str(path)
        self.write(command("error", message, file=where, line=line if where else None, title=title))

    def outputs(self, values: Mapping[str, str]) -> None:
        if not self.output_file:
            return
        with open(self.output_file, "a", encoding="utf-8") as handle:
            for name, value in values.items():
                if "\n" in value:
                    delimiter = f"ghadelimiter_{uuid.uuid4()}"
                    handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
                else:
                    handle.write(f"{name}={value}\n")

    def group(self, title: str, lines: Sequence[str]) -> None:
        """A collapsed group whose lines are never read as commands."""
        token = uuid.uuid4().hex
        self.write(command("group", title))
        self.write(command("stop-commands", token))
        for line in lines:
            self.write(line)
        self.write(f"::{token}::")
        self.write(command("endgroup"))


# -- secrets ----------------------------------------------------------------------------------


def secrets(env: Mapping[str, str]) -> list[str]:
    """Every secret a run may hold: the cluster tokens (PACHYDERM_TOKEN, pachctl's session
    tokens) and the registry passwords (DOCKERHUB_TOKEN, Docker's config.json), one line
    each: a value on several lines is masked line by line, as the runner does."""
    found = [env.get("PACHYDERM_TOKEN", ""), env.get("DOCKERHUB_TOKEN", "")]
    found += _pachctl_tokens(env)
    found += _docker_config_secrets(env)
    out: list[str] = []
    for value in found:
        for line in value.splitlines():
            if line.strip() and line.strip() not in out:
                out.append(line.strip())
    return out


def _pachctl_tokens(env: Mapping[str, str]) -> list[str]:
    from pachhook.pachyderm.connection import pachctl_contexts

    try:
        _, _, contexts = pachctl_contexts(env)
    except PachhookError:
        return []  # a broken config is reported where it is used
    tokens = []
    for context in contexts.values():
        token = context.get("session_token") or context.get("sessionToken")
        if isinstance(token, str):
            tokens.append(token)
    return tokens


def _docker_config_secrets(env: Mapping[str, str]) -> list[str]:
    folder = env.get("DOCKER_CONFIG") or os.path.join(env.get("HOME", ""), ".docker")
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return []
    auths = doc.get("auths") if isinstance(doc, dict) else None
    found: list[str] = []
    for entry in auths.values() if isinstance(auths, dict) else ():
        if not isinstance(entry, dict):
            continue
        for key in ("auth", "password", "identitytoken", "registrytoken"):
            if isinstance(entry.get(key), str) and entry[key]:
                found.append(entry[key])
        if isinstance(entry.get("auth"), str):
            try:
                decoded = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                continue
            found.append(decoded.partition(":")[2])
    return found


# -- where an error is --------------------------------------------------------------------------

_LEADING = re.compile(r"^(?P<file>[^\s:()]+)(?::(?P<line>\d+))?: ")
_INSIDE = re.compile(r"\((?P<file>[^\s:()]+):(?P<line>\d+)\)")


def located_in(message: str, root: Path | None) -> tuple[str | None, int | None]:
    """The file (relative to the repository root) and line a message names, as pachhook
    writes them (`path:line: ...`, or `(path:line)` for a pipeline); only a file that is
    there counts, so that `git: ...` names none."""
    if root is None:
        return None, None
    for pattern in (_LEADING, _INSIDE):
        match = pattern.search(message)
        if match and (root / match["file"]).is_file():
            line = match["line"]
            return match["file"], int(line) if line else None
    return None, None


_STEP = re.compile(r"\bat step (\d+)/\d+ ")


def dockerfile_line(text: str | None, error: str) -> int | None:
    """The Dockerfile line of the step a build failed at (`at step N/M`): the classic
    builder counts every instruction, in file order, up to the target stage."""
    match = _STEP.search(error)
    if text is None or match is None:
        return None
    from pachhook.docker.parse import parse

    try:
        instructions = parse(text).instructions
    except PachhookError:
        return None
    number = int(match[1])
    return instructions[number - 1].line if 0 < number <= len(instructions) else None


# -- build logs, one group per image ---------------------------------------------------------


class GroupedProgress:
    """Build events for a GitHub log. Builds run side by side and a group must be one
    block, so each image's lines are kept until its build ends, then shown as one group
    (the executor's own news is shown as it comes)."""

    def __init__(self, github: GitHub, say: Write, clock: Callable[[], float] = time.time) -> None:
        self.github = github
        self.say = say
        self.clock = clock
        self._lines: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def _now(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.clock()))

    def _keep(self, reference: str, line: str) -> None:
        with self._lock:
            lines = self._lines.setdefault(reference, [])
            if len(lines) < MAX_GROUP_LINES:
                lines.append(line)
            elif len(lines) == MAX_GROUP_LINES:
                lines.append("… more lines are in the build log")

    def message(self, line: str) -> None:
        self.say(f"{self._now()} {line}")

    def stage(self, reference: str, stage: str) -> None:
        self._keep(reference, f"{self._now()} {stage}")

    def step(
        self, reference: str, number: int, total: int, instruction: str, stage: str | None = None
    ) -> None:
        label = f"{stage} {number}/{total}" if stage else f"{number}/{total}"
        self._keep(reference, f"{self._now()} step {label} {instruction}")

    def output(self, reference: str, line: str) -> None:
        if line.strip():
            self._keep(reference, line.rstrip())

    def finished(self, result: ImageResult, tail: Sequence[str] = ()) -> None:
        with self._lock:
            lines = self._lines.pop(result.reference, [])
            outcome = f"{result.status} in {result.seconds:.1f}s"
            if result.log_path:
                lines.append(f"full build log: {result.log_path}")
            self.github.group(f"{result.reference}: {outcome}", lines)
            if not result.ok:
                self.say(f"{self._now()} {result.reference} failed: {result.error}")

    def close(self) -> None:
        with self._lock:
            for reference, lines in self._lines.items():
                self.github.group(f"{reference}: did not finish", lines)
            self._lines.clear()

    def summary(self, results: Sequence[ImageResult]) -> None:
        """The job summary says it better."""


# -- what a command leaves for its job ------------------------------------------------------


@dataclass(frozen=True)
class CiReport:
    """Where a command's results go besides its usual output: GitHub (when it runs there)
    and a Markdown file (`--summary FILE`)."""

    github: GitHub | None = None
    summary_file: str | None = None
    root: Path | None = None  # the repository, for the files an annotation names

    @classmethod
    def of(cls, env: Mapping[str, str], summary_file: str | None, root: Path | None) -> CiReport:
        return cls(GitHub.from_env(env), summary_file, root)

    def at(self, root: Path) -> CiReport:
        return replace(self, root=root)

    @property
    def active(self) -> bool:
        return self.github is not None or self.summary_file is not None

    def start(self, env: Mapping[str, str]) -> None:
        if self.github is not None:
            self.github.mask(env)

    def plan_done(self, plan: Plan) -> None:
        if not self.active:
            return
        self._summary(plan_markdown(plan.to_json()))
        if self.github is not None:
            changed = plan.evaluated and not plan.nothing_to_do
            self.github.outputs(
                {
                    "images": json.dumps([i.reference or i.name for i in plan.builds]),
                    "pipelines": json.dumps([f"{p.key[0]}/{p.key[1]}" for p in plan.deploys]),
                    "transaction": "",
                    "changed": "true" if changed else "false",
                }
            )

    def run_done(self, planned: Planned, record: RunRecord) -> None:
        if not self.active:
            return
        self._summary(run_markdown(planned.plan.to_json(), record.to_json()))
        if self.github is None:
            return
        pushed = [i.reference for i in record.images if i.status == "built" and i.manifest]
        applied = [f"{p.project}/{p.name}" for p in record.pipelines if p.status == "applied"]
        self.github.outputs(
            {
                "images": json.dumps(pushed),
                "pipelines": json.dumps(applied),
                "transaction": record.transaction or "",
                "changed": "true" if pushed or applied else "false",
            }
        )
        annotated = False
        for image in record.images:
            if image.ok:
                continue
            file, line = self._dockerfile(planned, image)
            self.github.error(
                f"{image.reference}: {image.error}",
                root=self.root,
                file=file,
                line=line,
                title="image failed",
            )
            annotated = True
        if record.error and not annotated:
            file, line = located_in(record.error, self.root)
            self.github.error(
                record.error, root=self.root, file=file, line=line, title="pachhook run failed"
            )

    def failed(self, command_name: str, message: str) -> None:
        """The command stopped with an error before it had a result to report."""
        if not self.active:
            return
        self._summary(error_markdown(command_name, message))
        if self.github is not None:
            file, line = located_in(message, self.root)
            self.github.error(
                message, root=self.root, file=file, line=line, title=f"pachhook {command_name}"
            )

    def _summary(self, markdown: str) -> None:
        for path in {self.summary_file, self.github.summary_file if self.github else None}:
            if path:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(markdown + "\n")

    def _dockerfile(self, planned: Planned, image: ImageResult) -> tuple[str | None, int | None]:
        state = next(
            (i.state for i in planned.plan.images if i.name == image.name and i.state), None
        )
        if state is None:
            return None, None
        path = state.config.dockerfile_path
        try:
            data = planned.resolved.source.read(path)
        except (OSError, PachhookError):
            data = None
        text = data.decode("utf-8", errors="replace") if data is not None else None
        return path, dockerfile_line(text, image.error or "")
