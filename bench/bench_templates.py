"""`pachhook plan` on the synthetic monorepo with 50 Jsonnet templates added.

    python bench/bench_templates.py [--rounds N] [--work DIR]

The monorepo of bench/monorepo.py (100 images, 500 specs, 20,000+ files) plus 50
template files sharing a library, one instance each (made once under --work):

(a)  plan --from A --to B, B touches only docs/: the no-op path; the template traces
     are known to hold at B (an earlier plan evaluated there)
(a') the same, with traces known at no commit: one `git ls-tree` at the base checks them
(a0) the same kind of change before the templates were added: the no-op path without
     templates, for comparison
(b)  the floor: `python -c pass` plus `git diff --name-only A B`
(c)  plan --all, every template taken from the cache
(d)  plan --all with the template cache emptied: 50 instances evaluated in one worker
(e)  plan --from B --to L, L changes the shared library, cache emptied: every instance
     evaluated at L and at B (only specs whose evaluation changed are updated)
Whole processes, rounds interleaved, medians. Targets: (a) and (a') <= 100 ms and <= 3x
(b); on them no docker, python_pachyderm, watchdog nor Jsonnet module is imported.
"""

from __future__ import annotations

import argparse
import compileall
import json
import shutil
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import monorepo  # noqa: E402
from measure import HEAVY, imported, timed  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work"
UNWANTED = (*HEAVY, "_gojsonnet")


def unwanted(modules: set[str]) -> list[str]:
    heavy = {m.split(".")[0] for m in modules if m.split(".")[0] in UNWANTED}
    jsonnet = {m for m in modules if "jsonnet" in m or m == "pachhook.pachyderm.templates"}
    return sorted(heavy | jsonnet)


def make(root: Path) -> dict[str, str]:
    """The repository and its commits: P0 (no templates), P1 (docs only), A (templates
    added), B (docs only), L (the shared library changed, on a branch of its own)."""
    if not (root / ".git").exists():
        monorepo.make(root)
        monorepo.commit_change(root, [f"docs/part00/item_{m:05d}.txt" for m in (1, 3)], "docs")
        monorepo.add_templates(root)
        monorepo.commit_change(root, [f"docs/part01/item_{m:05d}.txt" for m in (501, 503)], "docs")
        monorepo.git(root, "checkout", "-q", "-b", "library")
        (root / "lib/images.libsonnet").write_text(
            (root / "lib/images.libsonnet").read_text().replace(":v0", ":v1")
        )
        monorepo.git(root, "commit", "-qam", "library: new image tags")
        monorepo.git(root, "checkout", "-q", "main")
    rev = lambda ref: monorepo.git(root, "rev-parse", ref)  # noqa: E731
    return {
        "P0": rev("main~3"),
        "P1": rev("main~2"),
        "A": rev("main~1"),
        "B": rev("main"),
        "L": rev("library"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--work", type=Path, default=WORK, help="where the repository is made")
    args = parser.parse_args()
    root = args.work / "monorepo-templates"
    refs = make(root)
    files = monorepo.git(root, "ls-files").count("\n") + 1
    import pachhook.cli as package

    compileall.compile_dir(Path(package.__file__).parent, quiet=1)
    state = root / ".git" / "pachhook" / "templates"
    pachhook = [sys.executable, "-m", "pachhook", "plan"]

    def empty_cache() -> None:
        shutil.rmtree(state / "cache", ignore_errors=True)

    def forget_commits() -> None:
        index = json.loads((state / "index.json").read_text())
        for variants in index.values():
            for variant in variants:
                variant["commits"] = []
        (state / "index.json").write_text(json.dumps(index))

    def nothing() -> None:
        pass

    noop = pachhook + ["--from", refs["A"], "--to", refs["B"]]
    cases: dict[str, tuple[list[str], Callable[[], None]]] = {
        "a": (noop, nothing),
        "a'": (noop, forget_commits),
        "a0": (pachhook + ["--from", refs["P0"], "--to", refs["P1"]], nothing),
        "python": ([sys.executable, "-c", "pass"], nothing),
        "git diff": (["git", "diff", "--name-only", refs["A"], refs["B"]], nothing),
        "c": (pachhook + ["--all"], nothing),
        "d": (pachhook + ["--all"], empty_cache),
        "e": (pachhook + ["--from", refs["B"], "--to", refs["L"]], empty_cache),
    }
    timed(pachhook + ["--all"], root)  # the traces, known to hold at B
    for cmd, setup in cases.values():  # warm the file caches once
        setup()
        timed(cmd, root)
    times: dict[str, list[float]] = {k: [] for k in cases}
    cpus: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for key, (cmd, setup) in cases.items():
            setup()
            wall, spent = timed(cmd, root)
            times[key].append(wall)
            cpus[key].append(spent)
    timed(pachhook + ["--all"], root)  # leave the traces as (a) finds them

    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    med_cpu = {k: statistics.median(v) * 1000 for k, v in cpus.items()}
    floor = med["python"] + med["git diff"]
    floor_cpu = med_cpu["python"] + med_cpu["git diff"]
    print(
        f"synthetic monorepo: {files} files, {monorepo.IMAGES} images, {monorepo.PIPELINES} "
        f"spec pipelines, {monorepo.TEMPLATES} Jsonnet templates (one shared library)"
    )
    print(f"rounds: {args.rounds}, medians in ms: wall (min-max), and CPU (user + system)")
    for key, label in [
        ("a", "(a)  no-op plan, traces known at B"),
        ("a'", "(a') no-op plan, traces checked at the base"),
        ("a0", "(a0) no-op plan, before the templates"),
        ("python", "     python -c pass"),
        ("git diff", "     git diff --name-only A B"),
        ("c", "(c)  plan --all, templates from the cache"),
        ("d", "(d)  plan --all, 50 templates evaluated"),
        ("e", "(e)  shared library changed, evaluated"),
    ]:
        lo, hi = min(times[key]) * 1000, max(times[key]) * 1000
        span = f"({lo:.1f}-{hi:.1f})"
        print(f"{label:<46} {med[key]:8.1f}  {span:<17} cpu {med_cpu[key]:7.1f}")
    print(
        f"(b)  floor = python + git diff                  {floor:8.1f}  {'':<17} cpu {floor_cpu:7.1f}"
    )
    for key in ("a", "a'"):
        ratio = med[key] / floor
        met = "met" if med[key] <= 100 and ratio <= 3 else "NOT met"
        print(
            f"({key}) / (b) = {ratio:.2f}x (cpu {med_cpu[key] / floor_cpu:.2f}x), "
            f"({key}) / (a0) = {med[key] / med['a0']:.2f}x (cpu {med_cpu[key] / med_cpu['a0']:.2f}x)   "
            f"target: <= 100 ms and <= 3x (b) -> {met}"
        )
    print(f"(d) - (c) = {med['d'] - med['c']:.1f} ms to evaluate {monorepo.TEMPLATES} templates")
    forget_commits()
    for key in ("a'", "a"):
        found = unwanted(imported(noop, root))
        print(f"heavy or Jsonnet imports on path ({key}): {', '.join(found) if found else 'none'}")


if __name__ == "__main__":
    main()
