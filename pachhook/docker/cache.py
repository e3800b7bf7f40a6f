"""Is an image's tag already in the registry, holding our content?

The engine only builds, pushes and verifies; this is the lookup that lets a run skip a
build. A tag found to hold our content (its input digest label) is remembered, manifest
digest -> input digest, under the state dir, so later runs check it with one HEAD request,
which Docker Hub does not count as a pull. A tag that holds other content is refused:
tags are never reused.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pachhook.docker.digest import ImageState, checked_tag
from pachhook.docker.registry import Registries, split_name
from pachhook.errors import PachhookError
from pachhook.repo.cachefile import read_json, write_json

LABEL_DIGEST = "io.pachhook.input-digest"
VERIFIED_TAGS = "verified-tags.json"  # under the state dir: tags whose content was checked
VERIFIED_TAGS_KEPT = 2000  # the most recent; an older tag is simply checked in full again


class TagCache:
    def __init__(self, registries: Registries, state_dir: Path, tag_policy: str) -> None:
        self.registries = registries
        self.path = state_dir / VERIFIED_TAGS
        self.tag_policy = tag_policy
        self._lock = threading.RLock()
        self._verified: dict[str, dict[str, str]] | None = None

    def exists(self, state: ImageState) -> bool:
        """The registry serves the tag, and its content is ours (same input digest label)."""
        tag = checked_tag(state)
        host, path = split_name(state.name)
        registry = self.registries.registry(host)
        reference = f"{state.name}:{tag}"
        known = self._tags().get(reference)
        manifest = registry.manifest_digest(path, tag)
        if manifest is None:
            return False
        if known and manifest and known.get("manifest") == manifest:
            found = known.get("input_digest")
        else:
            labels = registry.labels(path, tag, state.config.platform) or {}
            found = labels.get(LABEL_DIGEST)
            if found and manifest:
                self.remember(reference, manifest, found)
        if found == state.digest:
            return True
        raise floating_tag(host, tag, found, state.digest, self.tag_policy)

    def remember(self, reference: str, manifest: str, input_digest: str) -> None:
        """`reference` serves `manifest`, built from `input_digest`."""
        with self._lock:
            tags = self._tags()
            tags.pop(reference, None)
            tags[reference] = {"manifest": manifest, "input_digest": input_digest}
            for stale in list(tags)[:-VERIFIED_TAGS_KEPT]:
                del tags[stale]
            write_json(self.path, tags)  # only a cache: lost, the registry is asked in full

    def _tags(self) -> dict[str, dict[str, str]]:
        with self._lock:
            if self._verified is None:
                data = read_json(self.path)
                self._verified = data if isinstance(data, dict) else {}
            return self._verified


def floating_tag(host: str, tag: str, found: str | None, wanted: str, policy: str) -> PachhookError:
    held = f"input digest {found[:12]}" if found else "no pachhook input digest label"
    hint = (
        'switch to tag_policy = "digest", or delete the tag from the registry'
        if policy == "git-sha"
        else "delete the tag from the registry if it is stale"
    )
    return PachhookError(
        f"registry {host} already has tag {tag} for other content ({held}; this build has "
        f"{wanted[:12]}); a tag is never reused: {hint}"
    )
