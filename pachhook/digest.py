"""The input digest of an image, and the tags derived from it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

from pachhook.config import ImageConfig
from pachhook.source import Entry

TAG_PREFIX = "ph-"


def input_digest(
    image: ImageConfig, inputs: Sequence[str], entry: Callable[[str], Entry], dockerfile_text: str
) -> str:
    """sha256 over the sorted inputs (path, mode, blob id), the Dockerfile text, the
    build args, target and platform: everything the engine is given to build from."""
    h = hashlib.sha256()
    for path in sorted(inputs):
        mode, oid = entry(path)
        h.update(f"{path}\0{mode}\0{oid}\n".encode())
    h.update(b"\0dockerfile\0" + dockerfile_text.encode())
    settings = {
        "build_args": dict(sorted(image.build_args.items())),
        "target": image.target,
        "platform": image.platform,
        "dockerfile": image.dockerfile_path,
        "context": image.context,
    }
    h.update(b"\0settings\0" + json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def digest_tag(digest: str) -> str:
    return TAG_PREFIX + digest[:12]
