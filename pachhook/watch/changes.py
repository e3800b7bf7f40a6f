"""A change to one file: what the watcher reports and what a watch filter is asked about."""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple


class Change(IntEnum):
    added = 1
    modified = 2
    deleted = 3


class FileChange(NamedTuple):
    change: Change
    path: str  # repository-relative, posix; a folder that went away ends with "/"
