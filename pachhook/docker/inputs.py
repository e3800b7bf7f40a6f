"""Dockerfile -> the files that can change the built image (pure).

Two builders build images, and their rules differ: Docker 20.10's classic builder
(through docker-py) and BuildKit (through the Docker CLI). Every rule here follows
what the builder that builds the image does, checked against this engine, and the
places where its behaviour forced a choice say so. The Dockerfile is split into
instructions by `parse` and its words expanded by `shell`; here the stages are
walked as the builder dispatches them. In short, under both builders:

- A heredoc source of COPY/ADD adds no file (BuildKit reads it as inline text).
- COPY/ADD words are expanded with Docker's shell lexer. ENV wins over ARG of
  the same name; an ARG is visible only in the stage that declares it, with its
  value from build_args, else its default, else the global ARG's value;
  `COPY --from` is not expanded.
- A literal source that does not exist fails.
- Sources are looked up through symlinks, as the builder follows a symlink named
  as a source (but copies the symlinks inside a copied directory as they are).
  Unless the caller says which files are symlinks (`is_link`), a file is taken
  for one when its content is a short single line naming a path the builder sees
  (a wrong guess only adds inputs, never an error).

The classic builder:

- Only `.dockerignore` at the context root applies; `<Dockerfile>.dockerignore` is
  an ordinary file to it (a build with one present sends the files it names).
- `--chmod`, `RUN --mount` and the other BuildKit flags fail ("requires BuildKit"):
  errors here too, with the way to build with BuildKit.
- With a target, it still builds every stage before it (so a missing source there
  fails the build and is an error here), but only the stages the target needs (its
  FROM chain and COPY --from, transitively) give inputs.
- A wildcard that matches nothing fails only when the whole instruction ends up
  with no source at all.

BuildKit:

- `<Dockerfile>.dockerignore` beside the Dockerfile replaces `.dockerignore`, which
  is then an ordinary file of the context (see ignore.py).
- Files a `RUN --mount=type=bind` takes from the context are inputs (a directory:
  every file under it; no source: the whole context). A bind or cache mount
  `from=STAGE` makes that stage needed. Cache, secret, ssh and tmpfs mounts read
  no file of the context. `from=` names a stage, never an index.
- Only the stages the target needs are built: an error in any other stage (a
  missing source) is no error, and their files are no inputs.
- `--mount ... source=` is expanded like a COPY source (as newer frontends do; the
  20.10 frontend fails on a variable there, so no build it makes differs).
- A wildcard that matches nothing copies nothing, and is no error.
- Flags newer Dockerfile frontends know (`--link`, `--parents`, `--exclude`,
  `--checksum`, `RUN --network`) are let through: they take no other files (with
  `--exclude`, some inputs may be inert). An engine whose frontend lacks one says so
  when it builds.
"""

from __future__ import annotations

import csv
import re
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from pachhook.config import ImageConfig
from pachhook.docker.ignore import (
    BadPattern,
    IgnoreMatcher,
    compile_ignore,
    filepath_match,
    go_clean,
    has_wildcards,
    ignore_file,
)
from pachhook.docker.parse import (
    WHITESPACE,
    Instruction,
    InstructionError,
    Parsed,
    is_heredoc,
    json_or_words,
    parse,
    parse_words,
    split_command,
)
from pachhook.docker.shell import Lookup, expand
from pachhook.errors import InputError, located

# Build args Docker accepts without an ARG declaring them.
BUILTIN_ARGS = frozenset(
    [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "FTP_PROXY",
        "ftp_proxy",
        "NO_PROXY",
        "no_proxy",
    ]
)
CLASSIC, BUILDKIT = "classic", "buildkit"
# The flags each builder knows: the classic builder fails on the rest; for BuildKit,
# the flags of newer Dockerfile frontends too (see the module's notes).
FLAGS = {
    CLASSIC: {"copy": frozenset({"from", "chown"}), "add": frozenset({"chown"})},
    BUILDKIT: {
        "copy": frozenset({"from", "chown", "chmod", "link", "parents", "exclude"}),
        "add": frozenset({"chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"}),
        "run": frozenset({"mount", "network", "security"}),
    },
}
# The words of the errors that say a source is simply not in the build context (a build
# output, an LFS object not fetched): callers tell them from a Dockerfile the builder
# refuses, since the image is then broken rather than its Dockerfile wrong.
MISSING_SOURCE = "does not exist in the build context"
NO_MATCH = "matches nothing in the build context"  # a wildcard, under the classic builder


def is_missing_source(message: str) -> bool:
    return MISSING_SOURCE in message or NO_MATCH in message


BOOLEAN_FLAGS = frozenset({"link", "parents", "keep-git-dir"})  # `--link` alone means true
MOUNT_TYPES = frozenset({"bind", "cache", "tmpfs", "secret", "ssh"})
MAX_LINK_HOPS = 40  # how many symlinks one source may pass through before it counts as missing
MAX_LINK_SIZE = 4096  # a symlink's target is a path: longer content is not a symlink

_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_\.]*$")
_INDEX = re.compile(r"^[+-]?[0-9]+$")


# --- variables ----------------------------------------------------------------------------------


@dataclass
class _Vars:
    """What `$NAME` means at one point of one stage, as the classic builder decides it."""

    build_args: Mapping[str, str]
    meta: Mapping[str, str | None]  # global ARGs (before the first FROM), defaults expanded
    env: dict[str, str] = field(default_factory=dict)  # ENV, inherited from a parent stage
    declared: dict[str, str | None] = field(default_factory=dict)  # this stage's ARGs

    def arg(self, name: str) -> str | None:
        if name in self.build_args:
            return self.build_args[name]
        default = self.declared.get(name)
        if default is None:
            # An ARG without default takes the global ARG's value, if any.
            return self.meta.get(name)
        return default

    def lookup(self, name: str) -> str | None:
        if name in self.env:
            return self.env[name]  # ENV wins over an ARG of the same name
        if name in self.declared or name in BUILTIN_ARGS:
            return self.arg(name)
        return None


def _meta_lookup(build_args: Mapping[str, str], meta: Mapping[str, str | None]) -> Lookup:
    def lookup(name: str) -> str | None:
        if name in build_args and (name in meta or name in BUILTIN_ARGS):
            return build_args[name]
        return meta.get(name)

    return lookup


# --- the build context --------------------------------------------------------------------------


class _Context:
    """The files the builder sees: the source's files under the context, minus the ignored."""

    def __init__(
        self,
        paths: Sequence[str],
        prefix: str,
        ignore: IgnoreMatcher,
        read: Callable[[str], bytes | None],
        is_link: Callable[[str], bool] | None = None,
        ignore_path: str | None = None,
    ) -> None:
        self.paths = paths
        self.prefix = prefix
        self.ignore = ignore
        self.ignore_path = ignore_path or "the ignore file"  # for messages
        self.read = read
        self.is_link = is_link
        self._links: dict[str, str | None] = {}

    def _range(self, rel_dir: str) -> tuple[int, int]:
        """Index range in `paths` of every file under the context-relative `rel_dir`."""
        base = self.prefix if rel_dir == "." else self.prefix + rel_dir + "/"
        lo = bisect_left(self.paths, base)
        if not base:
            return lo, len(self.paths)
        # "0" follows "/": every path that starts with base sorts before base[:-1] + "0".
        hi = bisect_left(self.paths, base[:-1] + "0", lo)
        return lo, hi

    def is_file(self, rel: str) -> bool:
        full = self.prefix + rel
        i = bisect_left(self.paths, full)
        return i < len(self.paths) and self.paths[i] == full

    def is_dir(self, rel: str) -> bool:
        lo, hi = self._range(rel)
        return lo < hi

    def visible(self, rel: str) -> bool:
        return not self.ignore.excluded(rel)

    def files_under(self, rel_dir: str) -> Iterator[str]:
        """Context-relative files under `rel_dir` that the builder sees."""
        lo, hi = self._range(rel_dir)
        cut = len(self.prefix)
        excluded = self.ignore.excluded if self.ignore else None
        for full in self.paths[lo:hi]:
            rel = full[cut:]
            if excluded is None or not excluded(rel):
                yield rel

    def dir_visible(self, rel: str) -> bool:
        """A directory reaches the builder unless ignored and holding no re-included file."""
        if not self.is_dir(rel):
            return False
        return rel == "." or self.visible(rel) or next(self.files_under(rel), None) is not None

    def entries(self, rel_dir: str, depth: int | None) -> set[str]:
        """Files and directories under `rel_dir` (at `depth` components, if given), seen or not."""
        lo, hi = self._range(rel_dir)
        cut = len(self.prefix)
        found: set[str] = set()
        for full in self.paths[lo:hi]:
            parts = full[cut:].split("/")
            if depth is not None:
                if len(parts) >= depth:
                    found.add("/".join(parts[:depth]))
            else:
                for k in range(1, len(parts) + 1):
                    found.add("/".join(parts[:k]))
        return found

    def reachable(self, rel: str) -> bool:
        """Whether the builder sees `rel` as a file or a directory."""
        if rel != "." and self.is_file(rel):
            return self.visible(rel)
        return self.dir_visible(rel)

    def link_target(self, rel: str) -> str | None:
        """The path a symlink file points to; None for a regular file.

        Without `is_link`, a file counts as a possible symlink when its content
        is one short line; `resolve` keeps it only if that line names a path.
        """
        if rel in self._links:
            return self._links[rel]
        target = None
        full = self.prefix + rel
        data = None if self.is_link is not None and not self.is_link(full) else self.read(full)
        if data and len(data) <= MAX_LINK_SIZE and b"\n" not in data and b"\0" not in data:
            try:
                target = data.decode("utf-8")
            except UnicodeDecodeError:
                target = None
        self._links[rel] = target
        return target

    def resolve(self, rel: str, hops: int = 0) -> tuple[str | None, list[str]]:
        """Follow symlinks in `rel` as the builder does, kept inside the context.

        Returns the context-relative path it reaches (None if it reaches nothing
        the builder sees) and the symlinks passed on the way.
        """
        done: list[str] = []
        todo = [] if rel == "." else rel.split("/")
        links: list[str] = []
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()  # a symlink scope never leaves the context
                continue
            here = "/".join([*done, part])
            if not self.is_file(here):
                done.append(part)
                continue
            if not self.visible(here):
                return None, links
            target = self.link_target(here)
            if target is None or hops >= MAX_LINK_HOPS:
                if todo:
                    return None, links  # a regular file has no children
                done.append(part)
                continue
            # The builder resolves an absolute target from the context's root.
            base = [] if target.startswith("/") else done
            followed, more = self.resolve("/".join([*base, target]) or ".", hops + 1)
            if followed is None or not self.reachable(followed):
                if todo or self.is_link is not None:
                    return None, links  # a dangling symlink: the builder fails on it
                done.append(part)  # not a symlink after all: a file with a path in it
                continue
            links.append(here)
            links.extend(more)
            done = [] if followed == "." else followed.split("/")
        return "/".join(done) or ".", links

    def source_files(self, rel: str) -> tuple[bool, list[str]]:
        """Whether `rel` reaches the builder, and the context-relative files it copies."""
        target, links = self.resolve(rel)
        if target is None:
            return False, []
        if target != "." and self.is_file(target):
            if not self.visible(target):
                return False, []
            return True, [*links, target]
        if self.dir_visible(target):
            return True, [*links, *self.files_under(target)]
        return False, []


# --- analysis -----------------------------------------------------------------------------------


@dataclass
class _Stage:
    index: int
    name: str | None
    base: str
    line: int
    instructions: list[Instruction] = field(default_factory=list)
    deps: set[int] = field(default_factory=set)  # stages it starts FROM or copies --from
    files: set[str] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=dict)
    triggers: list[Instruction] = field(default_factory=list)
    error: InputError | None = None  # BuildKit: the stage's error, if the target needs it
    urls: list[str] = field(default_factory=list)  # ADD <url>: fetched at build time


@dataclass(frozen=True)
class Analysis:
    """What one image's Dockerfile reads from the source."""

    inputs: tuple[str, ...]  # repository-relative, sorted
    ignore_file: str | None  # repository-relative: the ignore file in force, if any
    stages: tuple[str, ...]  # names (or indexes) of the stages the target needs, in order
    builder: str = CLASSIC  # whose rules these are
    urls: tuple[str, ...] = ()  # ADD <url> sources of those stages: inputs no file holds


def image_inputs(
    image: ImageConfig,
    paths: Sequence[str],
    read: Callable[[str], bytes | None],
    *,
    is_link: Callable[[str], bool] | None = None,
    builder: str | None = None,
) -> tuple[str, ...]:
    """Every file of `paths` (sorted, repository-relative) that can change `image`.

    The Dockerfile, the ignore file in force, and every file that a COPY or ADD
    (and, under BuildKit, a RUN --mount) of a stage the target needs takes from the
    context, minus what the ignore file excludes. Raises InputError where the build
    would fail on the same input.

    `is_link(path)`, when the caller knows file modes, says which files are
    symlinks; without it a source file is read to tell (see the module's notes).
    `builder` is the builder that builds the image ("buildkit" or "classic"; by
    default the configured one, and classic for "auto").
    """
    return analyze(image, paths, read, is_link=is_link, builder=builder).inputs


def analyze(
    image: ImageConfig,
    paths: Sequence[str],
    read: Callable[[str], bytes | None],
    *,
    is_link: Callable[[str], bool] | None = None,
    builder: str | None = None,
) -> Analysis:
    """`image_inputs` with what it found on the way (the ignore file, the needed stages)."""
    builder = builder or (BUILDKIT if image.builder == BUILDKIT else CLASSIC)
    dockerfile = image.dockerfile_path
    data = read(dockerfile)
    if data is None:
        raise InputError(
            f"{dockerfile}: no such Dockerfile for image {image.name}; "
            "add it or fix the image's context/dockerfile in the config"
        )
    prefix = "" if image.context == "." else image.context + "/"

    def exists(path: str) -> bool:
        i = bisect_left(paths, path)
        return i < len(paths) and paths[i] == path

    ignore_path = ignore_file(image, builder, exists)
    ignore_data = read(ignore_path) if ignore_path is not None else None
    ignore = compile_ignore(
        "" if ignore_data is None else ignore_data.decode("utf-8", errors="replace"),
        ignore_path or "",
    )
    context = _Context(paths, prefix, ignore, read, is_link, ignore_path)
    parsed = parse(data.decode("utf-8", errors="replace"), dockerfile)
    stages, needed = _Builder(image, parsed, context, dockerfile, builder).run()
    found: set[str] = {dockerfile}
    if ignore_path is not None and ignore_data is not None:
        found.add(ignore_path)
    for index in needed:
        found.update(prefix + rel for rel in stages[index].files)
    return Analysis(
        inputs=tuple(sorted(found)),
        ignore_file=ignore_path if ignore_data is not None else None,
        stages=tuple(stages[i].name or str(i) for i in sorted(needed)),
        builder=builder,
        urls=tuple(dict.fromkeys(u for i in sorted(needed) for u in stages[i].urls)),
    )


class _Builder:
    """Walks the stages as the classic builder dispatches them, collecting sources."""

    def __init__(
        self, image: ImageConfig, parsed: Parsed, context: _Context, dockerfile: str, builder: str
    ) -> None:
        self.image = image
        self.escape = parsed.escape
        self.instructions = parsed.instructions
        self.context = context
        self.origin = dockerfile
        self.build_args = dict(image.build_args)
        self.buildkit = builder == BUILDKIT
        self.flags = FLAGS[builder]

    def fail(self, line: int, what: str, todo: str) -> InputError:
        return InputError(f"{located(self.origin, line)}: {what}; {todo}")

    def needs_buildkit(self, what: str) -> InstructionError:
        """`what` (an instruction and flag) is BuildKit's, and the classic builder builds."""
        if self.image.builder == CLASSIC:
            return InstructionError(
                f"{what} needs BuildKit, and image {self.image.name} is set to the classic builder",
                'set builder = "buildkit" (or "auto") for it in the configuration',
            )
        return InstructionError(
            f'{what} needs BuildKit, but builder "auto" chose the classic builder for image '
            f"{self.image.name} (no Docker CLI here builds with BuildKit, or DOCKER_BUILDKIT=0)",
            "install Debian's docker.io or Docker's buildx plugin, or name a CLI that builds "
            "with BuildKit in PACHHOOK_DOCKER_CLI",
        )

    def run(self) -> tuple[list[_Stage], set[int]]:
        meta: dict[str, str | None] = {}
        stages: list[_Stage] = []
        for ins in self.instructions:
            if ins.cmd == "from":
                stages.append(self._from(ins, len(stages), meta))
            elif not stages:
                if ins.cmd != "arg":
                    raise self.fail(
                        ins.line,
                        f"{ins.cmd.upper()} before the first FROM",
                        "only ARG may come before FROM",
                    )
                self._arg(ins, _meta_lookup(self.build_args, meta), meta)
            else:
                try:
                    self._check_flags(ins)
                except InstructionError as exc:
                    raise self.fail(ins.line, exc.what, exc.todo) from None
                stages[-1].instructions.append(ins)
        if not stages:
            raise self.fail(1, "no FROM instruction", "start the build stage with FROM")
        target = len(stages) - 1
        if self.image.target is not None:
            wanted = self.image.target.lower()
            names = [s.name for s in stages]
            if wanted not in names:
                listed = ", ".join(n for n in names if n) or "none"
                raise InputError(
                    f"{self.origin}: target {self.image.target!r} is no stage of this Dockerfile "
                    f"(named stages: {listed}); fix the image's target in the config"
                )
            target = names.index(wanted)
        # The classic builder builds every stage up to the target, needed or not; BuildKit
        # only the ones the target needs. Both are walked in order (for the variables they
        # pass on), and under BuildKit only a needed stage's error counts.
        for stage in stages[: target + 1]:
            try:
                self._stage(stage, stages, meta)
            except InputError as exc:
                if not self.buildkit:
                    raise
                stage.error = exc
        needed: set[int] = set()
        todo = [target]
        while todo:
            index = todo.pop()
            if index in needed:
                continue
            needed.add(index)
            todo.extend(stages[index].deps)
        for index in sorted(needed):
            error = stages[index].error
            if error is not None:
                raise error
        return stages, needed

    def _from(self, ins: Instruction, index: int, meta: Mapping[str, str | None]) -> _Stage:
        words = [w for w in WHITESPACE.split(ins.rest) if w]
        name = None
        if len(words) == 3 and words[1].lower() == "as":
            name = words[2].lower()
            if not _STAGE_NAME.match(name):
                raise self.fail(
                    ins.line,
                    f"invalid stage name {words[2]!r}",
                    "start it with a letter and use letters, digits, '-', '_' and '.'",
                )
        elif len(words) != 1:
            raise self.fail(
                ins.line, "FROM takes one or three arguments", "write FROM IMAGE [AS NAME]"
            )
        for flag in ins.flags:
            if _flag_name(flag) != "platform":
                raise self.fail(ins.line, f"unknown flag {flag}", "remove it")
        return _Stage(index=index, name=name, base=words[0], line=ins.line)

    def _check_flags(self, ins: Instruction) -> None:
        """Flags the builder fails on in whichever stage they are (it parses every stage)."""
        if ins.cmd not in ("copy", "add", "run"):
            return
        if ins.cmd == "run" and not self.buildkit:
            return  # the classic builder fails on RUN flags where it runs them (_run)
        allowed = self.flags.get(ins.cmd, frozenset())
        for flag in ins.flags:
            name = _flag_name(flag)
            if name in allowed:
                continue
            if not self.buildkit and name in FLAGS[BUILDKIT][ins.cmd]:
                if name == "chmod":
                    continue  # the classic builder fails on it where it copies (_copy)
                raise self.needs_buildkit(f"{ins.cmd.upper()} --{name}")
            who = "BuildKit" if self.buildkit else "the classic builder"
            raise InstructionError(f"{ins.cmd.upper()} {flag}: {who} has no such flag", "remove it")

    def _stage(self, stage: _Stage, stages: list[_Stage], meta: Mapping[str, str | None]) -> None:
        try:
            base = expand(stage.base, self.escape, _meta_lookup(self.build_args, meta))
        except InstructionError as exc:
            raise self.fail(stage.line, exc.what, exc.todo) from None
        parent = _stage_by_name(stages[: stage.index], base)
        vars_ = _Vars(self.build_args, meta)
        pending: list[Instruction] = []
        if parent is not None:
            stage.deps.add(parent.index)
            vars_.env = dict(parent.env)
            # ONBUILD triggers of a parent stage run first in the child.
            pending.extend(parent.triggers)
        pending.extend(stage.instructions)
        for ins in pending:
            try:
                self._dispatch(ins, stage, stages, vars_)
            except InstructionError as exc:
                raise self.fail(ins.line, exc.what, exc.todo) from None
        stage.env = vars_.env

    def _dispatch(
        self, ins: Instruction, stage: _Stage, stages: list[_Stage], vars_: _Vars
    ) -> None:
        if ins.cmd == "arg":
            self._arg(ins, vars_.lookup, vars_.declared)
        elif ins.cmd == "env":
            self._env(ins, vars_)
        elif ins.cmd in ("copy", "add"):
            self._copy(ins, stage, stages, vars_)
        elif ins.cmd == "run":
            self._run(ins, stage, stages, vars_)
        elif ins.cmd == "onbuild":
            inner = split_command(ins.rest, ins.line, self.origin)
            if inner.cmd in ("onbuild", "from", "maintainer"):
                raise InstructionError(f"ONBUILD {inner.cmd.upper()} is not allowed", "remove it")
            self._check_flags(inner)
            stage.triggers.append(inner)

    def _run(self, ins: Instruction, stage: _Stage, stages: list[_Stage], vars_: _Vars) -> None:
        if not self.buildkit:
            if ins.flags:
                # Docker 20.10's classic builder: "the --mount option requires BuildKit".
                raise self.needs_buildkit(f"RUN --{_flag_name(ins.flags[0])}")
            return
        for flag in ins.flags:
            name, value = _flag(flag)
            if name != "mount":
                continue  # --network and --security read no file
            if not value:
                raise InstructionError(
                    "RUN --mount has no value", "write --mount=type=bind,source=PATH,target=PATH"
                )
            self._mount(_mount_options(value), stage, stages, vars_)

    def _mount(
        self, options: dict[str, str], stage: _Stage, stages: list[_Stage], vars_: _Vars
    ) -> None:
        kind = options.get("type", "bind").lower()
        if kind not in MOUNT_TYPES:
            raise InstructionError(
                f"unsupported mount type {options['type']!r}",
                f"use one of {', '.join(sorted(MOUNT_TYPES))}",
            )
        origin = options.get("from")
        if origin and "$" in origin:
            raise InstructionError(
                f"RUN --mount from={origin} takes no variables",
                "name a stage, or add a stage FROM that image AS a name and mount that",
            )
        if kind not in ("bind", "cache"):
            return  # secret, ssh and tmpfs mounts read nothing of the context
        if origin:
            # An earlier stage's name, else an image (an index is an image's name here).
            found = _stage_by_name(stages[: stage.index], origin)
            if found is not None:
                stage.deps.add(found.index)
            return
        if kind == "cache":
            return  # an empty cache, or what earlier builds left in it
        source = expand(options.get("source", ""), self.escape, vars_.lookup)
        # BuildKit cleans the source from the context's root: nothing above it.
        path = go_clean("/" + source).lstrip("/") or "."
        if path == ".":
            stage.files.update(self.context.files_under("."))
            return
        stage.files.update(self._source_files(path, f"RUN --mount source {source!r}"))

    def _arg(self, ins: Instruction, lookup: Lookup, into: dict[str, str | None]) -> None:
        words = parse_words(ins.rest, self.escape)
        if not words:
            raise self.fail(ins.line, "ARG needs a name", "write ARG NAME[=default]")
        pairs: list[tuple[str, str | None]] = []
        for word in words:
            key, eq, value = word.partition("=")
            if eq and not key:
                raise self.fail(ins.line, f"ARG {word!r} has no name", "write ARG NAME=default")
            pairs.append((key, value if eq else None))
        try:
            # Every value is expanded before any of them is declared, as Docker does.
            expanded = [
                (
                    expand(key, self.escape, lookup),
                    None if value is None else expand(value, self.escape, lookup),
                )
                for key, value in pairs
            ]
        except InstructionError as exc:
            raise self.fail(ins.line, exc.what, exc.todo) from None
        into.update(expanded)

    def _env(self, ins: Instruction, vars_: _Vars) -> None:
        words = parse_words(ins.rest, self.escape)
        if not words:
            raise InstructionError("ENV needs a name and a value", "write ENV NAME=value")
        pairs: list[tuple[str, str]] = []
        if "=" not in words[0]:
            # The old form: ENV NAME the rest of the line.
            parts = WHITESPACE.split(ins.rest, maxsplit=1)
            if len(parts) < 2:
                raise InstructionError("ENV needs a name and a value", "write ENV NAME=value")
            pairs.append((parts[0], parts[1]))
        else:
            for word in words:
                key, eq, value = word.partition("=")
                if not eq:
                    raise InstructionError(f"ENV {word!r} has no '='", "write ENV NAME=value ...")
                pairs.append((key, value))
        lookup = vars_.lookup
        expanded = [
            (expand(k, self.escape, lookup), expand(v, self.escape, lookup)) for k, v in pairs
        ]
        for key, value in expanded:
            vars_.env[key] = value

    def _copy(self, ins: Instruction, stage: _Stage, stages: list[_Stage], vars_: _Vars) -> None:
        cmd = ins.cmd.upper()
        flags = dict(_flag(f) for f in ins.flags)
        for name, value in flags.items():
            if value is None and name not in BOOLEAN_FLAGS:
                raise InstructionError(f"{cmd} --{name} has no value", f"write --{name}=VALUE")
        if "chmod" in flags and not self.buildkit:
            raise self.needs_buildkit(f"{cmd} --chmod")
        words = json_or_words(ins.rest)
        if len(words) < 2:
            raise InstructionError(
                f"{cmd} needs at least one source and a destination", f"write {cmd} SRC... DEST"
            )
        # A heredoc source (BuildKit only) is inline text, not a file.
        inline = [w for w in words[:-1] if is_heredoc(w)]
        words = [w for w in words[:-1] if not is_heredoc(w)] + words[-1:]
        if inline and len(words) == 1:
            return
        expanded = [expand(w, self.escape, vars_.lookup) for w in words]
        sources, dest = expanded[:-1], expanded[-1]
        origin = flags.get("from")
        if origin is not None:
            for source in sources:
                if _is_url(source):
                    raise InstructionError(
                        f"source {source!r} can't be a URL for {cmd}", "use ADD or RUN"
                    )
            self._copy_from(origin, stage, stages)
            return
        count = 0
        for source in sources:
            if _is_url(source):
                if ins.cmd == "copy":
                    raise InstructionError(
                        f"source {source!r} can't be a URL for COPY", "use ADD for URLs"
                    )
                count += 1  # ADD downloads it: no file of the source
                stage.urls.append(source)
                continue
            matched = self._context_source(source, cmd)
            count += len(matched)
            for files in matched:
                stage.files.update(files)
        if self.buildkit:
            return  # BuildKit copies what wildcards match, nothing included, into any dest
        if count == 0:
            ignore_path = self.context.ignore_path
            if any(self._glob(s.removeprefix("/").removeprefix("./"), seen=False) for s in sources):
                raise InstructionError(
                    f"{cmd} has no source files: {' '.join(sources)} matches only files "
                    f"excluded by {ignore_path} in the build context {self.image.context!r}",
                    f"fix the pattern, or check {ignore_path}",
                )
            raise InstructionError(
                f"{cmd} has no source files: {' '.join(sources)} {NO_MATCH} {self.image.context!r}",
                f"add the files, fix the pattern, or check {ignore_path}",
            )
        if count + len(inline) > 1 and not dest.endswith("/"):
            raise InstructionError(
                f"{cmd} copies several sources into {dest!r}",
                "end the destination with / to make it a directory",
            )

    def _copy_from(self, origin: str, stage: _Stage, stages: list[_Stage]) -> None:
        # Both builders take --from literally (no variables): a stage name, then a stage
        # index, else an image reference, which adds no file.
        earlier = stages[: stage.index]
        found = _stage_by_name(earlier, origin)
        if found is None and _INDEX.match(origin):
            index = int(origin)
            if not 0 <= index < len(earlier):
                raise InstructionError(
                    f"--from={origin}: there is no stage {index} before this one",
                    "stages count from 0; use an earlier stage's index or name",
                )
            found = earlier[index]
        if found is not None:
            stage.deps.add(found.index)

    def _context_source(self, source: str, cmd: str) -> list[list[str]]:
        """One source word -> one file list per thing it copies (empty list: nothing found)."""
        path = source.removeprefix("/").removeprefix("./")
        if has_wildcards(path):
            return self._glob(path)
        cleaned = go_clean(path) if path else "."
        if cleaned == ".." or cleaned.startswith("../"):
            raise InstructionError(
                f"{cmd} source {source!r} is outside the build context {self.image.context!r}",
                "move the file into the context or widen the image's context in the config",
            )
        return [self._source_files(cleaned, f"{cmd} source {source!r}")]

    def _source_files(self, rel: str, what: str) -> list[str]:
        """The files `rel` (cleaned, inside the context) copies; `what` names the source in
        the error when it does not reach the builder: excluded by the ignore file (bad
        input), or not there at all (MISSING_SOURCE: the image cannot be built)."""
        context = self.context
        ok, files = context.source_files(rel)
        if not ok:
            why = (
                f"is excluded by {context.ignore_path} in" if self._ignored(rel) else MISSING_SOURCE
            )
            raise InstructionError(
                f"{what} {why} {self.image.context!r}",
                f"add the file, fix the path, or check {context.ignore_path}",
            )
        return files

    def _ignored(self, rel: str) -> bool:
        context = self.context
        return (context.is_file(rel) or context.is_dir(rel)) and not context.visible(rel)

    def _glob(self, pattern: str, seen: bool = True) -> list[list[str]]:
        """What `pattern` copies; with `seen=False`, what it would copy without the ignore
        file (to tell a pattern that matches nothing from one the ignore file empties)."""
        context = self.context
        parts = pattern.split("/")
        fixed: list[str] = []
        for part in parts[:-1]:
            if has_wildcards(part) or "\\" in part:
                break
            fixed.append(part)
        base = "/".join(fixed) or "."
        # Only "[...]" can match a "/"; without it a match has as many components as the pattern.
        depth = None if "[" in pattern else len(parts)
        matched: list[list[str]] = []
        for entry in sorted(context.entries(base, depth)):
            try:
                if not filepath_match(pattern, entry):
                    continue
            except BadPattern:
                return []  # the builder ignores the error: the pattern matches nothing
            if not seen:
                matched.append([entry])
                continue
            if context.is_file(entry):
                if not context.visible(entry):
                    continue
            elif not context.dir_visible(entry):
                continue
            ok, files = context.source_files(entry)
            if ok:
                matched.append(files)
        return matched


def _stage_by_name(stages: Sequence[_Stage], name: str) -> _Stage | None:
    wanted = name.lower()
    for stage in stages:
        if stage.name == wanted:
            return stage
    return None


def _mount_options(value: str) -> dict[str, str]:
    """One `--mount` value, a CSV record as BuildKit reads it (Go's encoding/csv): keys
    lower-cased, aliases folded; bare words (`ro`, `rw`, `required`) carry no value."""
    try:
        fields = next(csv.reader([value]), [])
    except csv.Error as exc:
        raise InstructionError(
            f"RUN --mount={value}: not a comma-separated list ({exc})", "fix its quoting"
        ) from None
    aliases = {"src": "source", "dst": "target", "destination": "target"}
    options: dict[str, str] = {}
    for item in fields:
        key, eq, val = item.partition("=")
        key = key.strip().lower()
        if not eq:
            if key in ("ro", "readonly", "rw", "readwrite", "required"):
                continue
            raise InstructionError(
                f"RUN --mount={value}: {item!r} must be a key=value pair", "write key=value"
            )
        options[aliases.get(key, key)] = val
    return options


def _flag_name(flag: str) -> str:
    return flag[2:].partition("=")[0]


def _flag(flag: str) -> tuple[str, str | None]:
    name, eq, value = flag[2:].partition("=")
    return name, value if eq else None


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))
