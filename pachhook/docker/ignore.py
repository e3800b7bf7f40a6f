"""Docker's ignore-file matching, and Go's `filepath.Match`, in pure Python.

The ignore file decides which files of the context reach the builder, so it
must match exactly what Docker does: the file is read the way
`moby/buildkit/frontend/dockerignore.ReadAll` reads it and matched the way
`moby/patternmatcher` matches (`MatchesOrParentMatches`):

- a line starting with `#` is a comment (only in column one); lines are trimmed;
- each pattern is cleaned like Go's `filepath.Clean`, and a leading `/` is dropped;
- `*` and `?` never match `/`; `**` matches any number of directories;
- a pattern that matches a directory excludes everything below it;
- patterns apply in order and the last one that matches wins; `!` re-includes.

Which file is in force depends on the builder (`ignore_file`): the classic builder
reads `.dockerignore` at the context's root; BuildKit reads `<Dockerfile>.dockerignore`
beside the Dockerfile instead when there is one (its patterns are still relative to
the context's root), and `.dockerignore` only when there is not.

Patterns are compiled once per ignore-file text (the same file serves every
image of a context) and matched against each directory once, so filtering a
large tree costs one cheap test per pattern and file.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from pachhook.config import ImageConfig
from pachhook.errors import InputError, located

IGNORE_FILE = ".dockerignore"


def ignore_candidates(image: ImageConfig, builder: str) -> tuple[str, ...]:
    """The repository paths that may hold `image`'s ignore file, the first present wins.
    Under BuildKit the Dockerfile's own file may lie outside the context, beside it."""
    root = IGNORE_FILE if image.context == "." else f"{image.context}/{IGNORE_FILE}"
    if builder == "buildkit":
        return (image.dockerfile_path + IGNORE_FILE, root)
    return (root,)


def ignore_file(image: ImageConfig, builder: str, exists: Callable[[str], bool]) -> str | None:
    """The repository path of the ignore file in force for `image` under `builder`."""
    return next((path for path in ignore_candidates(image, builder) if exists(path)), None)


class BadPattern(ValueError):
    """Go's `filepath.ErrBadPattern`: a malformed `[...]` class or a trailing escape."""


def go_clean(path: str) -> str:
    """Go's `path.Clean`: like `posixpath.normpath`, but `//x` becomes `/x`."""
    cleaned = posixpath.normpath(path) if path else "."
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


# --- Go's filepath.Match (Go 1.19, the toolchain of Docker 20.10), on str ---------------------


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern.startswith("*"):
        pattern = pattern[1:]
        star = True
    inrange = False
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif ch == "[":
            inrange = True
        elif ch == "]":
            inrange = False
        elif ch == "*" and not inrange:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _get_esc(chunk: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise BadPattern(chunk)
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise BadPattern(chunk)
    char, rest = chunk[0], chunk[1:]
    if not rest:
        raise BadPattern(chunk)
    return char, rest


def _match_chunk(chunk: str, s: str) -> str | None:
    """The rest of `s` after `chunk` matched its start, else None (and BadPattern if malformed)."""
    # Like Go, keep scanning the chunk after a failure so that a malformed
    # pattern is reported whatever the name.
    failed = False
    while chunk:
        if not failed and not s:
            failed = True
        head = chunk[0]
        if head == "[":
            char = ""
            if not failed:
                char, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = chunk.startswith("^")
            if negated:
                chunk = chunk[1:]
            matched = False
            nrange = 0
            while True:
                if chunk.startswith("]") and nrange > 0:
                    chunk = chunk[1:]
                    break
                lo, chunk = _get_esc(chunk)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _get_esc(chunk[1:])
                if lo <= char <= hi:
                    matched = True
                nrange += 1
            if matched == negated:
                failed = True
        elif head == "?":
            if not failed:
                if s[0] == "/":
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
        else:
            if head == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise BadPattern(chunk)
            if not failed:
                if chunk[0] != s[0]:
                    failed = True
                s = s[1:]
            chunk = chunk[1:]
    return None if failed else s


def filepath_match(pattern: str, name: str) -> bool:
    """Go's `filepath.Match` on Linux: `*`, `?`, `[...]` (negated with `^`), `\\` escapes.

    Raises BadPattern for a malformed pattern, as Go returns ErrBadPattern.
    """
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            # A trailing * matches the rest of the name unless it holds a /.
            return "/" not in name
        rest = _match_chunk(chunk, name)
        if rest is not None and (not rest or pattern):
            name = rest
            continue
        if star:
            found = False
            i = 0
            while i < len(name) and name[i] != "/":
                rest = _match_chunk(chunk, name[i + 1 :])
                if rest is not None:
                    if not pattern and rest:
                        i += 1
                        continue
                    name = rest
                    found = True
                    break
                i += 1
            if found:
                continue
        # Before failing, check that the remainder of the pattern is well formed.
        while pattern:
            _, chunk, pattern = _scan_chunk(pattern)
            _match_chunk(chunk, "")
        return False
    return not name


def has_wildcards(path: str) -> bool:
    """Docker's `containsWildcards` on Linux: an unescaped `*`, `?` or `[`."""
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\":
            i += 1
        elif ch in "*?[":
            return True
        i += 1
    return False


# --- patternmatcher -----------------------------------------------------------------------------

_EXACT, _PREFIX, _SUFFIX, _REGEXP = range(4)
_REGEX_SPECIAL = frozenset(".+()|{}$")


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without the leading "!"
    exclusion: bool  # a "!" pattern: re-includes what it matches
    line: int
    kind: int = field(compare=False)
    regexp: re.Pattern[str] | None = field(compare=False)

    def match(self, path: str) -> bool:
        if self.kind == _EXACT:
            return path == self.text
        if self.kind == _PREFIX:
            return path.startswith(self.text[:-2])
        if self.kind == _SUFFIX:
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            # patternmatcher: "**/foo" also matches "foo" itself.
            return suffix.startswith("/") and path == suffix[1:]
        assert self.regexp is not None
        return self.regexp.match(path) is not None


def _compile(text: str) -> tuple[int, re.Pattern[str] | None]:
    """patternmatcher's `Pattern.compile`, translated rule for rule."""
    regex = "^"
    kind = _EXACT
    i, n = 0, len(text)
    index = 0
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":  # "**/" is "**"
                    i += 1
                if i >= n:  # trailing "**" matches everything below
                    if kind == _EXACT:
                        kind = _PREFIX
                    else:
                        regex += ".*"
                        kind = _REGEXP
                else:
                    regex += "(.*/)?"
                    kind = _REGEXP
                if index == 0:
                    kind = _SUFFIX
            else:
                regex += "[^/]*"
                kind = _REGEXP
        elif ch == "?":
            regex += "[^/]"
            kind = _REGEXP
        elif ch in _REGEX_SPECIAL:
            regex += "\\" + ch
        elif ch == "\\":
            if i < n:
                regex += "\\" + text[i]
                i += 1
                kind = _REGEXP
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex += ch
            kind = _REGEXP
        else:
            regex += ch
        index += 1
    if kind != _REGEXP:
        return kind, None
    try:
        return kind, re.compile(regex + "$")
    except re.error as exc:
        raise BadPattern(text) from exc


def read_patterns(text: str) -> list[tuple[int, str]]:
    """The ignore file's patterns with their line numbers, as Docker's `ReadAll` gives them."""
    out = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if number == 1:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append((number, "!" + pattern if invert else pattern))
    return out


class IgnoreMatcher:
    """The compiled patterns of one ignore file; `excluded` answers per context-relative path."""

    def __init__(self, patterns: tuple[Pattern, ...]) -> None:
        self.patterns = patterns
        # Per directory: for each pattern, whether it matches the directory or one of its
        # parents. Files of one directory share their parents, so each directory is
        # matched once.
        self._dirs: dict[str, tuple[bool, ...]] = {".": (False,) * len(patterns)}

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def _dir_hits(self, directory: str) -> tuple[bool, ...]:
        # Up to the nearest known ancestor, then down: a loop, since a path may be
        # thousands of folders deep.
        missing = []
        while directory not in self._dirs:
            missing.append(directory)
            directory = posixpath.dirname(directory) or "."
        hits = self._dirs[directory]
        for folder in reversed(missing):
            hits = tuple(
                hit or pattern.match(folder)
                for hit, pattern in zip(hits, self.patterns, strict=True)
            )
            self._dirs[folder] = hits
        return hits

    def excluded(self, path: str) -> bool:
        """Whether the builder never sees `path` (a clean, context-relative posix path)."""
        if not self.patterns:
            return False
        if path in (".", ""):
            return False  # patternmatcher will not exclude the context itself
        parent = self._dir_hits(posixpath.dirname(path) or ".")
        # The last pattern that matches decides: walk backwards and stop at the first.
        for index in range(len(self.patterns) - 1, -1, -1):
            pattern = self.patterns[index]
            if parent[index] or pattern.match(path):
                return not pattern.exclusion
        return False


@lru_cache(maxsize=256)
def compile_ignore(text: str, origin: str = IGNORE_FILE) -> IgnoreMatcher:
    """Compile an ignore file's text; `origin` (its repository path) names it in errors.

    The result is shared between callers with the same text: it only grows a
    per-directory cache, and its answers never change.
    """
    patterns = []
    for number, raw in read_patterns(text):
        cleaned = go_clean(raw.strip())
        exclusion = cleaned.startswith("!")
        if exclusion:
            if len(cleaned) == 1:
                raise InputError(
                    f'{located(origin, number)}: illegal exclusion pattern "!"; '
                    "write the path to re-include after the !"
                )
            cleaned = cleaned[1:]
        try:
            # patternmatcher checks syntax with filepath.Match, and so does this.
            filepath_match(cleaned, ".")
            kind, regexp = _compile(cleaned)
        except BadPattern:
            raise InputError(
                f"{located(origin, number)}: bad pattern {raw!r}; "
                "close the [...] class or drop the trailing backslash"
            ) from None
        patterns.append(Pattern(cleaned, exclusion, number, kind, regexp))
    return IgnoreMatcher(tuple(patterns))
