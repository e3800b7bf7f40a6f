"""Dockerfile text -> instructions and their words, as Docker 20.10's parser splits them (pure).

- The Dockerfile is split into instructions the way its parser does it (parser
  directives, continuation lines, comments, empty continuation lines skipped).
  dockerfile-parse is not used: it ends an instruction at an empty continuation
  line (Docker skips the line) and reads heredoc bodies as instructions.
- Heredocs: the classic builder does not know them (it fails on the body's first
  line); BuildKit does. Their bodies are skipped, so that a Dockerfile written
  for BuildKit still gets its instructions; the build itself will report the
  engine's error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import NamedTuple

from pachhook.errors import InputError, located

# The instructions Docker 20.10 knows; anything else fails the parse.
KNOWN = frozenset(
    [
        "add",
        "arg",
        "cmd",
        "copy",
        "entrypoint",
        "env",
        "expose",
        "from",
        "healthcheck",
        "label",
        "maintainer",
        "onbuild",
        "run",
        "shell",
        "stopsignal",
        "user",
        "volume",
        "workdir",
    ]
)
# What separates an instruction's words where Docker splits on blanks (its `tokenWhitespace`).
WHITESPACE = re.compile(r"[\t\v\f\r ]+")

_DIRECTIVE = re.compile(
    r"^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$"
)
_HEREDOC = re.compile(r"^(\d*)<<(-?)([^<]*)$")


class Instruction(NamedTuple):
    cmd: str  # lower case
    flags: tuple[str, ...]  # "--name=value" words before the arguments
    rest: str  # the arguments, trimmed
    line: int  # 1-based line where it starts


class Parsed(NamedTuple):
    instructions: tuple[Instruction, ...]
    escape: str
    heredocs: tuple[int, ...] = ()  # lines of the instructions that use a heredoc


class InstructionError(Exception):
    """A problem inside one instruction; whoever knows its file and line makes it an InputError."""

    def __init__(self, what: str, todo: str) -> None:
        super().__init__(what)
        self.what = what
        self.todo = todo


@lru_cache(maxsize=512)
def parse(text: str, origin: str = "Dockerfile") -> Parsed:
    """Split a Dockerfile into instructions as Docker's parser does; heredoc bodies skipped."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if text.endswith("\n"):
        lines.pop()
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    escape = "\\"
    continuation = re.compile(re.escape(escape) + r"[ \t]*\Z")
    directives_open = True
    seen: set[str] = set()

    def directive(line: str, number: int) -> None:
        # Parser directives count only before the first line that is not one.
        nonlocal directives_open, escape, continuation
        if not directives_open:
            return
        match = _DIRECTIVE.match(line)
        key = match.group(1).lower() if match else ""
        if key not in ("escape", "syntax"):
            directives_open = False
            return
        assert match is not None
        if key in seen:
            raise InputError(
                f"{located(origin, number)}: a second {key} parser directive; keep only one"
            )
        seen.add(key)
        if key == "escape":
            value = match.group(2)
            if value not in ("\\", "`"):
                raise InputError(
                    f"{located(origin, number)}: invalid escape {value!r}; use ` or \\"
                )
            escape = value
            continuation = re.compile(re.escape(escape) + r"[ \t]*\Z")

    out: list[Instruction] = []
    heredocs: list[int] = []
    i = 0
    while i < len(lines):
        number = i + 1
        token = lines[i].lstrip()
        i += 1
        directive(token, number)
        if token.startswith("#"):
            token = ""
        line, ended = _trim_continuation(token, continuation)
        if ended and not line:
            continue
        while not ended and i < len(lines):
            raw = lines[i]
            i += 1
            directive(raw, i)
            stripped = raw.lstrip()
            if stripped.startswith("#") or not stripped:
                continue  # comments and empty lines inside a continuation are skipped
            more, ended = _trim_continuation(raw, continuation)
            line += more
        instruction = split_command(line, number, origin)
        out.append(instruction)
        if instruction.cmd in ("run", "copy", "add"):
            for name, chomp in _heredocs(instruction.rest):
                i = _skip_heredoc(lines, i, name, chomp, number, origin)
                heredocs.append(number)
    return Parsed(tuple(out), escape, tuple(dict.fromkeys(heredocs)))


def unbuildable(data: bytes, origin: str) -> tuple[int, str] | None:
    """(line, what and what to do) of the first thing in a Dockerfile that Docker 20.10's
    builders cannot build, so that it is refused before any work; None if none."""
    nul = data.find(b"\0")
    if nul >= 0:
        return data.count(b"\n", 0, nul) + 1, (
            "holds a NUL byte, and a Dockerfile is text; remove it (was a binary file "
            "saved under this name?)"
        )
    parsed = parse(data.decode("utf-8", errors="replace"), origin)
    if parsed.heredocs:
        return parsed.heredocs[0], (
            "a heredoc (<<EOF) needs a newer Dockerfile frontend than Docker 20.10's "
            "builders have; write the text to a file in the context and COPY it, or use "
            "RUN with printf"
        )
    return None


def _trim_continuation(line: str, continuation: re.Pattern[str]) -> tuple[str, bool]:
    match = continuation.search(line)
    if match:
        return line[: match.start()], False
    return line, True


def split_command(line: str, number: int, origin: str) -> Instruction:
    """One instruction's text (continuations joined) -> its command, flags and arguments."""
    parts = WHITESPACE.split(line.strip(), maxsplit=1)
    cmd = parts[0].lower()
    if cmd not in KNOWN:
        raise InputError(
            f"{located(origin, number)}: unknown instruction {parts[0].upper()}; "
            "fix the spelling or the line continuation above it"
        )
    flags: list[str] = []
    rest = ""
    if len(parts) == 2:
        rest, flags = _extract_flags(parts[1])
    return Instruction(cmd, tuple(flags), rest.strip(), number)


def _extract_flags(line: str) -> tuple[str, list[str]]:
    """Docker's `extractBuilderFlags`: the leading `--flag` words (quotes removed) and the rest."""
    rest = line.lstrip()
    if not rest.startswith("--"):
        return rest, []  # no flags, as in most instructions: nothing to scan
    flags: list[str] = []
    # The escape directive does not reach flags: Docker hard-codes the backslash here.
    for start, end, word in _scan_words(line, "\\", raw=False):
        if not line.startswith("--", start):
            return line[start:], flags
        if word == "--":
            return line[end:], flags
        flags.append(word)
    return "", flags


def parse_words(rest: str, escape: str) -> list[str]:
    """Docker's `parseWords`: split on blanks outside quotes, keeping quotes and escapes."""
    # A quoted word keeps its quotes, so only a lone trailing escape leaves one empty.
    return [word for _, _, word in _scan_words(rest, escape, raw=True) if word]


def _scan_words(text: str, escape: str, *, raw: bool) -> Iterator[tuple[int, int, str]]:
    """The loop Docker's `extractBuilderFlags` and `parseWords` share: (start, end, word).

    A word ends at a blank outside quotes, or at the end of `text` (an unclosed
    quote runs to it; a trailing escape is dropped and may leave the word empty).
    `raw` (`parseWords`) keeps quotes and escapes in the word for the shell lexer,
    and the escape does nothing within single quotes; otherwise (`extractBuilderFlags`)
    both are removed and the escape works within either quote.
    """
    n = len(text)
    pos = 0
    while True:
        while pos < n and text[pos].isspace():
            pos += 1
        if pos == n:
            return
        start = pos
        chars: list[str] = []
        quote = ""
        while pos < n:
            ch = text[pos]
            if not quote:
                if ch.isspace():
                    break
                if ch in "'\"":
                    quote = ch
                    if raw:
                        chars.append(ch)
                    pos += 1
                    continue
            elif ch == quote:
                quote = ""
                if raw:
                    chars.append(ch)
                pos += 1
                continue
            if ch == escape and not (raw and quote == "'"):
                pos += 1
                if pos == n:
                    break
                if raw:
                    chars.append(ch)
                ch = text[pos]
            chars.append(ch)
            pos += 1
        yield start, pos, "".join(chars)


def json_or_words(rest: str) -> list[str]:
    """Docker's `parseMaybeJSONToList`: a JSON array of strings, else blank-separated words."""
    stripped = rest.lstrip()
    if stripped.startswith("["):
        try:
            value, _ = json.JSONDecoder().raw_decode(stripped)
        except ValueError:
            value = None
        if isinstance(value, list):
            if not all(isinstance(item, str) for item in value):
                raise InstructionError(
                    "the JSON array holds something other than strings", "quote every item"
                )
            return list(value)
    return [w for w in WHITESPACE.split(rest) if w] if rest else []


def is_heredoc(word: str) -> bool:
    """Whether a COPY/ADD word is a heredoc (`<<EOF`): inline text for BuildKit, no file."""
    return _HEREDOC.match(word) is not None


def _heredocs(rest: str) -> Iterator[tuple[str, bool]]:
    for word in WHITESPACE.split(rest):
        match = _HEREDOC.match(word)
        if match and match.group(3):
            name = match.group(3)
            if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"":
                name = name[1:-1]
            if name:
                yield name, match.group(2) == "-"


def _skip_heredoc(
    lines: list[str], i: int, name: str, chomp: bool, number: int, origin: str
) -> int:
    while i < len(lines):
        candidate = lines[i].lstrip("\t") if chomp else lines[i]
        i += 1
        if candidate == name:
            return i
    raise InputError(
        f"{located(origin, number)}: unterminated heredoc <<{name}; end it with a line {name}"
    )
