"""Glob patterns for `[pipelines] include/exclude`: `*`, `?`, `[...]` and `**`.

Written here rather than taken from pathspec because the pattern check runs on
every hook call, before anything heavy is imported.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    return re.compile(_translate(pattern) + r"\Z")


@lru_cache(maxsize=64)
def _compile_any(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{_translate(p)})" for p in patterns) + r"\Z")


def _translate(pattern: str) -> str:
    pattern = pattern.strip().lstrip("/")
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def matches(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether `path` matches one of `patterns` (compiled once per set of patterns)."""
    compiled = _compile_any(patterns)
    return compiled is not None and compiled.match(path) is not None
