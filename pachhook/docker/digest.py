"""The input digest of an image, and the tags derived from it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pachhook.config import ImageConfig
from pachhook.errors import PachhookError
from pachhook.repo.source import Entry

TAG_PREFIX = "ph-"


@dataclass(frozen=True)
class ImageState:
    """An image as a source holds it: its inputs, their digest, and the tag to build."""

    config: ImageConfig
    inputs: tuple[str, ...]
    removed_inputs: tuple[str, ...]  # changed paths absent from the source that were inputs
    digest: str
    tag: str
    builder: str = "classic"  # the builder that builds it: "buildkit" or "classic"
    ignore_file: str | None = None  # the ignore file in force (repository path), if any
    # Inputs git does not see (git-ignored build outputs a Dockerfile names), read from the
    # working tree; and ADD <url> sources, which no file holds.
    outside_git: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def repository(self) -> str:
        return self.config.repository

    @property
    def key(self) -> tuple[str, str | None]:
        return self.config.key


def input_digest(
    image: ImageConfig,
    inputs: Sequence[str],
    entry: Callable[[str], Entry],
    dockerfile_text: str,
    builder: str = "classic",
) -> str:
    """sha256 over the sorted inputs (path, mode, blob id), the Dockerfile text, the
    build args, target and platform, and the builder: everything the engine is given to
    build from. The same content built by the other builder is another image (and
    neither builder reuses the other's layers), so it gets another tag."""
    h = hashlib.sha256()
    for path in sorted(inputs):
        mode, oid = entry(path)
        h.update(f"{path}\0{mode}\0{oid}\n".encode())
    h.update(b"\0dockerfile\0" + dockerfile_text.encode())
    settings: dict[str, object] = {
        "build_args": dict(sorted(image.build_args.items())),
        "target": image.target,
        "platform": image.platform,
        "dockerfile": image.dockerfile_path,
        "context": image.context,
        **({"variant": image.variant} if image.variant else {}),
    }
    # Classic images keep the digests they had before the builder was a choice.
    if builder != "classic":
        settings["builder"] = builder
    if image.secrets:
        # Which secrets a build gets, never their values (a new value is no new image).
        settings["secrets"] = sorted(secret.spec for secret in image.secrets)
    h.update(b"\0settings\0" + json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def digest_tag(digest: str, variant: str | None = None) -> str:
    """`ph-` and 12 hex digits; an image variant's tags start with the variant."""
    tag = TAG_PREFIX + digest[:12]
    return f"{variant}-{tag}" if variant else tag


FLOATING_TAGS = frozenset({"latest"})


def checked_tag(state: ImageState) -> str:
    """The tag to build and push; a floating tag is refused (Pachyderm workers pull
    `IfNotPresent` and would keep running the old image)."""
    tag = state.tag
    if not tag:
        raise PachhookError(
            f"{state.name}: no tag was computed for this image; run pachhook plan to see why"
        )
    if tag.lower() in FLOATING_TAGS:
        raise PachhookError(
            f"refusing the floating tag {tag!r} (Pachyderm workers would keep running the old "
            'image); use tag_policy = "digest" or "git-sha"'
        )
    return tag
