"""How long `pachhook plan` takes on the synthetic monorepo, beside its floor.

    python bench/bench_plan.py [--rounds N]

(a) `pachhook plan --from A --to B` where B touches only files no image or spec uses
(b) the floor: `python -c pass` plus `git diff --name-only A B` on the same repository
(c) `pachhook plan --all --offline` (the pure plan; bench/bench_state.py measures it
    reading a registry and a cluster)
Whole processes, rounds interleaved, medians. Targets: (a) <= 100 ms and <= 3x (b);
(c) <= 1 s; and no docker, python_pachyderm or watchdog import on path (a).
"""

from __future__ import annotations

import argparse
import compileall
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import monorepo  # noqa: E402
from measure import heavy_imports, timed  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    root = WORK / "monorepo-plan"
    fresh = not (root / ".git").exists()
    monorepo.make(root)
    if fresh:
        monorepo.commit_change(
            root, [f"docs/part00/item_{m:05d}.txt" for m in (1, 3, 5)], "docs only"
        )
    b = monorepo.git(root, "rev-parse", "HEAD")
    a = monorepo.git(root, "rev-parse", "HEAD~1")
    files = monorepo.git(root, "ls-files").count("\n") + 1
    import pachhook.cli as package

    compileall.compile_dir(Path(package.__file__).parent, quiet=1)
    pachhook = [sys.executable, "-m", "pachhook"]
    cases = {
        "a": pachhook + ["plan", "--from", a, "--to", b],
        "python": [sys.executable, "-c", "pass"],
        "git diff": ["git", "diff", "--name-only", a, b],
        "c": pachhook + ["plan", "--all", "--offline"],
    }
    for cmd in cases.values():  # warm the caches once
        timed(cmd, root)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.rounds):
        for key, cmd in cases.items():
            times[key].append(timed(cmd, root)[0])
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    floor = med["python"] + med["git diff"]
    print(
        f"synthetic monorepo: {files} files, {monorepo.IMAGES} images, {monorepo.PIPELINES} pipelines"
    )
    print(f"rounds: {args.rounds}, medians (min-max) in ms")
    for key, label in [
        ("a", "(a) plan --from A --to B, irrelevant change"),
        ("python", "    python -c pass"),
        ("git diff", "    git diff --name-only A B"),
        ("c", "(c) plan --all --offline"),
    ]:
        lo, hi = min(times[key]) * 1000, max(times[key]) * 1000
        print(f"{label:<46} {med[key]:8.1f}  ({lo:.1f}-{hi:.1f})")
    print(f"(b) floor = python + git diff                  {floor:8.1f}")
    print(f"(a) / (b) = {med['a'] / floor:.2f}x   target: (a) <= 100 ms and <= 3x")
    print(f"(c) target: <= 1000 ms -> {'met' if med['c'] <= 1000 else 'NOT met'}")
    heavy = heavy_imports(cases["a"], root)
    print(f"heavy imports on path (a): {', '.join(heavy) if heavy else 'none'}")


if __name__ == "__main__":
    main()
