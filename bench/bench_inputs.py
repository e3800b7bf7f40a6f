"""Inputs and input digests of all 100 images of the synthetic monorepo.

    python bench/bench_inputs.py [--rounds N]

In process, after the listing: from a commit (git blob ids from the tree) and from
the working tree (blob ids hashed from file content), medians of N rounds. The two
must give the same digests for the same content.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import monorepo  # noqa: E402

from pachhook.config import load  # noqa: E402
from pachhook.plan.workspace import image_state  # noqa: E402
from pachhook.repo.git import Repo  # noqa: E402
from pachhook.repo.source import CommitSource, Source, WorkingTreeSource  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work"


def all_images(source: Source) -> tuple[float, float, dict[str, str], int]:
    start = time.perf_counter()
    source.paths  # noqa: B018 - the listing, timed on its own
    listed = time.perf_counter()
    config = load(source.read, {})
    states = [
        image_state(image, config, source, n, frozenset()) for n, image in enumerate(config.images)
    ]
    done = time.perf_counter()
    inputs = sum(len(s.inputs) for s in states)
    return listed - start, done - listed, {s.name: s.digest for s in states}, inputs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    root = monorepo.make(WORK / "monorepo-inputs")
    repo = Repo.discover(root)
    head = repo.resolve("HEAD")
    results: dict[str, list[tuple[float, float]]] = {"commit": [], "working tree": []}
    digests: dict[str, dict[str, str]] = {}
    for _ in range(args.rounds):
        for label, make in (
            ("commit", lambda: CommitSource(repo, head)),
            ("working tree", lambda: WorkingTreeSource(repo)),
        ):
            source = make()
            listing, analysis, found, count = all_images(source)
            source.close()
            results[label].append((listing, analysis))
            digests[label] = found
    print(
        f"synthetic monorepo: {len(CommitSource(repo, head).paths)} files, {len(digests['commit'])} images, {count} inputs in all"
    )
    print(f"rounds: {args.rounds}, medians in ms")
    for label, rows in results.items():
        listing = statistics.median(r[0] for r in rows) * 1000
        analysis = statistics.median(r[1] for r in rows) * 1000
        print(
            f"  {label:<13} listing {listing:7.1f}   inputs+digests of all images {analysis:7.1f}   total {listing + analysis:7.1f}"
        )
    same = digests["commit"] == digests["working tree"]
    print(f"digests equal between commit and working tree: {same}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
