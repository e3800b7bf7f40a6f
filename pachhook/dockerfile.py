"""Dockerfile -> the files that can change the built image (pure)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pachhook.config import ImageConfig
from pachhook.errors import InputError


def image_inputs(
    image: ImageConfig, paths: Sequence[str], read: Callable[[str], bytes | None]
) -> tuple[str, ...]:
    """Every file of `paths` (sorted, repository-relative) that can change `image`.

    Placeholder until the Dockerfile analysis lands: the whole context.
    """
    if read(image.dockerfile_path) is None:
        raise InputError(f"{image.dockerfile_path}: no such Dockerfile for image {image.name}")
    prefix = "" if image.context == "." else image.context + "/"
    found = {p for p in paths if p.startswith(prefix)}
    found.add(image.dockerfile_path)
    return tuple(sorted(found))
