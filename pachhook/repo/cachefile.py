"""Cache files under the repository's state folder (`.git/pachhook/`).

A cache may be lost or unreadable at any time: reading one that is not there or not
JSON gives None, and a write that fails leaves the next run to compute again. A write
goes to a temporary file beside the cache, then renames it over, so a reader never
sees half a file, whichever process or thread wrote it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    """The cache at `path`, or None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, data: Any) -> None:
    """Replace the cache at `path` with `data`; a failure only loses the cache."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(data, separators=(",", ":")))
        temp.replace(path)
    except OSError:
        temp.unlink(missing_ok=True)
