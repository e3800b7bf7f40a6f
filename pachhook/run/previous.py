"""Where a build on a cold machine finds its cache: the tags of an image that run now.

With `cache_from = "registry"` a build reuses the layers of an earlier image of the same
repository. The best one is the tag the cluster's pipelines run now (their stored specs
name it), else the last tag this repository's runs pushed (the ledger): a fresh CI
runner has the cluster, a developer's clone has the ledger. Neither is needed: without
them a build is simply a cold one, and says so in its log.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from pachhook.config import normalize_repository, split_reference
from pachhook.docker.digest import ImageState
from pachhook.errors import PachhookError
from pachhook.run import ledger

MOST = 3  # tags handed to one build: each costs the builder a manifest request


class RunningImages(Protocol):
    def pipeline_images(self) -> Mapping[tuple[str, str], str]: ...


class PreviousImages:
    """`cache_sources` for the engine: called from build threads; each source read once."""

    def __init__(
        self,
        state_dir: Path,
        cluster: Callable[[], RunningImages] | None,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.state_dir = state_dir
        self.cluster = cluster
        self.say = say
        self._lock = threading.Lock()
        self._running: list[str] | None = None
        self._pushed: list[str] | None = None

    def __call__(self, state: ImageState) -> list[str]:
        with self._lock:
            if self._running is None:
                self._running = self._read_cluster()
            if self._pushed is None:
                self._pushed = self._read_ledger()
            found: list[str] = []
            for ref in [*self._running, *self._pushed]:
                if ref not in found and normalize_repository(ref) == state.repository:
                    found.append(ref)
            return found[:MOST]

    def _read_cluster(self) -> list[str]:
        if self.cluster is None:
            return []
        try:
            images = self.cluster().pipeline_images()
        except PachhookError as exc:
            self.say(f"build cache: cannot read the images the cluster runs ({exc.message})")
            return []
        return sorted({ref for ref in images.values() if split_reference(ref)[1]})

    def _read_ledger(self) -> list[str]:
        pushed: list[str] = []
        for entry in reversed(ledger.read(self.state_dir)):
            if entry.get("kind") != "run":
                continue
            for image in entry.get("images") or ():
                ref = image.get("reference") if isinstance(image, dict) else None
                verified = isinstance(image, dict) and (
                    image.get("manifest") or image.get("status") == "exists"
                )
                if isinstance(ref, str) and verified and ref not in pushed:
                    pushed.append(ref)
        return pushed
