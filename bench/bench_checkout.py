"""What `.gitattributes` costs a plan: `pachhook plan --all` on the synthetic monorepo,
without and with a `.gitattributes` (LFS, eol=crlf and text=auto rules), which makes
pachhook ask git for every file's checkout rule (one `read-tree` into a temporary index
and one `check-attr` batch per source).

    python bench/bench_checkout.py [--rounds N]

Whole processes, the two commits interleaved, medians. No target: the figure says what
repositories with `.gitattributes` pay, and that repositories without pay nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import monorepo  # noqa: E402

WORK = Path(__file__).resolve().parent / ".work"
ATTRIBUTES = "* text=auto\n*.bin filter=lfs diff=lfs merge=lfs -text\n*.sh text eol=crlf\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    source = monorepo.make(WORK / "monorepo-plan")
    with tempfile.TemporaryDirectory(prefix="bench-checkout-") as tmp:
        root = Path(tmp) / "repo"
        # A clone of its own: the shared monorepo is left as it is.
        subprocess.run(["git", "clone", "-q", "--local", str(source), str(root)], check=True)
        without = monorepo.git(root, "rev-parse", "HEAD")
        (root / ".gitattributes").write_text(ATTRIBUTES)
        monorepo.git(root, "add", ".gitattributes")
        monorepo.git(root, "commit", "-q", "-m", "attributes")
        with_attributes = monorepo.git(root, "rev-parse", "HEAD")
        cases = {"without .gitattributes": without, "with .gitattributes": with_attributes}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for round_ in range(args.rounds + 1):
            for label, commit in cases.items():
                monorepo.git(root, "checkout", "-q", "--detach", commit)
                start = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "pachhook", "plan", "--all"],
                    cwd=root,
                    capture_output=True,
                )
                elapsed = time.perf_counter() - start
                if proc.returncode != 0:
                    raise SystemExit(f"plan failed: {proc.stderr.decode()[-500:]}")
                if round_:  # the first round warms the caches
                    times[label].append(elapsed)
    print(f"rounds: {args.rounds}, plan --all medians (min-max) in ms")
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    for label, values in times.items():
        print(f"{label:<24} {med[label]:8.1f}  ({min(values) * 1000:.1f}-{max(values) * 1000:.1f})")
    ratio = med["with .gitattributes"] / med["without .gitattributes"]
    print(f"with / without = {ratio:.2f}x")


if __name__ == "__main__":
    main()
