"""What pachhook's pre-push hook adds to a `git push` that changes nothing relevant.

    python bench/bench_hooks.py [--rounds N]

On the synthetic monorepo (bench/monorepo.py), each round commits a change to a docs/
file (no image or spec uses it) and times `git push` to a local bare remote with:

(a) no pre-push hook
(b) pachhook's raw hook (`pachhook install`)
(c) the pre-commit framework running a no-op hook (`language: system`, entry `true`)
(d) the pre-commit framework running pachhook's hook (`pachhook-pre-push`)

Whole pushes, configurations interleaved within each round, medians. Targets:
(b) - (a) <= 100 ms; (d) - (c) <= 100 ms. The pre-commit framework builds the hook's
environment once, under bench/.work/pre-commit-home, from a snapshot of this checkout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import monorepo  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
VENV_BIN = Path(sys.executable).parent

# As installed: with bytecode (some shells set PYTHONDONTWRITEBYTECODE; pip compiles on install).
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    **monorepo.GIT_ENV,
    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    "PRE_COMMIT_HOME": str(WORK / "pre-commit-home"),
}
for name in ("PACHYDERM_CLUSTER_URL", "PACHYDERM_TOKEN", "DOCKER_HOST"):
    ENV.pop(name, None)


def sh(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-800:]}\n{proc.stderr[-800:]}")
    return proc.stdout


def snapshot() -> tuple[Path, str]:
    """This checkout as it is (uncommitted files too), as a repository with one commit."""
    target = WORK / "hook-repo"
    if target.exists():
        shutil.rmtree(target)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, map(os.fsdecode, files)):
        if (ROOT / name).is_file() and not name.startswith("bench/.work"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    sh(["git", "init", "-q", "-b", "main"], target)
    sh(["git", "add", "-A"], target)
    sh(["git", "commit", "-q", "-m", "snapshot"], target)
    return target, sh(["git", "rev-parse", "HEAD"], target).strip()


def pre_commit_hook(root: Path, config: str) -> str:
    """The pre-push script `pre-commit install` writes for `config`."""
    hook = root / ".git" / "hooks" / "pre-push"
    hook.unlink(missing_ok=True)
    sh([str(VENV_BIN / "pre-commit"), "install", "-t", "pre-push", "-c", config], root)
    sh([str(VENV_BIN / "pre-commit"), "install-hooks", "-c", config], root)
    return hook.read_text()


def setup() -> tuple[Path, dict[str, str | None]]:
    root = WORK / "monorepo-hooks"
    remote = WORK / "monorepo-hooks-remote.git"
    if root.exists():
        shutil.rmtree(root)
    if remote.exists():
        shutil.rmtree(remote)
    source = WORK / "monorepo-plan"
    if (source / ".git").exists():  # bench_plan's, if it was made: a clone is quicker
        sh(["git", "clone", "-q", str(source), str(root)], WORK)
        sh(["git", "remote", "remove", "origin"], root)
    else:
        monorepo.make(root)
    sh(["git", "init", "-q", "--bare", "-b", "main", str(remote)], WORK)
    repository, rev = snapshot()
    (root / ".pre-commit-pachhook.yaml").write_text(
        f"repos:\n  - repo: {repository}\n    rev: {rev}\n    hooks:\n"
        "      - id: pachhook-pre-push\n"
    )
    (root / ".pre-commit-noop.yaml").write_text(
        "repos:\n  - repo: local\n    hooks:\n"
        "      - id: noop\n        name: noop\n        entry: 'true'\n        language: system\n"
        "        stages: [pre-push]\n        pass_filenames: false\n        always_run: true\n"
    )
    sh(["git", "add", "-A"], root)
    sh(["git", "commit", "-q", "-m", "pre-commit configurations"], root)
    sh(["git", "remote", "add", "origin", str(remote)], root)
    sh(["git", "push", "-q", "-u", "origin", "main"], root)

    started = time.monotonic()
    hooks: dict[str, str | None] = {
        "none": None,
        "pre-commit noop": pre_commit_hook(root, ".pre-commit-noop.yaml"),
        "pre-commit pachhook": pre_commit_hook(root, ".pre-commit-pachhook.yaml"),
    }
    print(f"pre-commit environments ready in {time.monotonic() - started:.1f}s")
    (root / ".git" / "hooks" / "pre-push").unlink()
    sh([sys.executable, "-m", "pachhook", "install"], root)
    hooks["raw"] = (root / ".git" / "hooks" / "pre-push").read_text()
    return root, hooks


def timed_push(root: Path, hook: str | None, round_: int) -> float:
    path = root / ".git" / "hooks" / "pre-push"
    path.unlink(missing_ok=True)
    if hook is not None:
        path.write_text(hook)
        path.chmod(0o755)
    monorepo.commit_change(
        root, [f"docs/part{round_ % 8:02d}/item_{2 * round_ + 1:05d}.txt"], "docs"
    )
    start = time.perf_counter()
    proc = subprocess.run(
        ["git", "push", "origin", "main"], cwd=root, capture_output=True, text=True, env=ENV
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"git push failed:\n{proc.stdout}\n{proc.stderr}")
    if (
        hook is not None
        and "pachhook" in hook
        and "nothing in this push" not in proc.stderr + proc.stdout
    ):
        raise SystemExit(f"the hook did not say it had nothing to do:\n{proc.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    root, hooks = setup()
    files = sh(["git", "ls-files"], root).count("\n")
    order = ["none", "raw", "pre-commit noop", "pre-commit pachhook"]
    for n, name in enumerate(order):  # warm the caches once
        timed_push(root, hooks[name], 1000 + n)
    times: dict[str, list[float]] = {name: [] for name in order}
    for round_ in range(args.rounds):
        for n, name in enumerate(order):
            times[name].append(timed_push(root, hooks[name], round_ * len(order) + n))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"synthetic monorepo: {files} files; git push of a docs/ change to a local bare remote")
    print(f"rounds: {args.rounds}, medians (min-max) in ms")
    labels = {
        "none": "(a) no hook",
        "raw": "(b) pachhook's raw hook",
        "pre-commit noop": "(c) pre-commit, a no-op hook",
        "pre-commit pachhook": "(d) pre-commit, pachhook's hook",
    }
    for name in order:
        lo, hi = min(times[name]) * 1000, max(times[name]) * 1000
        print(f"{labels[name]:<36} {med[name]:8.1f}  ({lo:.1f}-{hi:.1f})")
    raw = med["raw"] - med["none"]
    framework = med["pre-commit noop"] - med["none"]
    through = med["pre-commit pachhook"] - med["pre-commit noop"]
    print(f"raw hook adds        (b)-(a) = {raw:6.1f} ms   target <= 100 -> {verdict(raw)}")
    print(f"pre-commit's own overhead (c)-(a) = {framework:6.1f} ms")
    print(
        f"pachhook via pre-commit (d)-(c) = {through:6.1f} ms   target <= 100 -> {verdict(through)}"
    )
    heavy = heavy_imports(root)
    print(f"heavy imports on the no-op hook's path: {', '.join(heavy) if heavy else 'none'}")


def heavy_imports(root: Path) -> list[str]:
    """Modules of docker, python_pachyderm, watchdog or rich that the no-op hook imports."""
    head, before = (sh(["git", "rev-parse", r], root).strip() for r in ("HEAD", "HEAD~1"))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pachhook", "hook", "pre-push", "origin", "x"],
        cwd=root,
        input=f"refs/heads/main {head} refs/heads/main {before}\n",
        capture_output=True,
        text=True,
        env=ENV,
    )
    if proc.returncode != 0 or "nothing in this push" not in proc.stderr:
        raise SystemExit(f"the hook did not run as a no-op:\n{proc.stderr[-800:]}")
    names = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines()}
    return sorted(names & {"docker", "python_pachyderm", "watchdog", "rich"})


def verdict(added: float) -> str:
    return "met" if added <= 100 else "NOT met"


if __name__ == "__main__":
    main()
