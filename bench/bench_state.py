"""`pachhook plan --all` reading state, on the synthetic monorepo, beside the offline plan.

    python bench/bench_state.py [--rounds N]

The monorepo (bench/monorepo.py: 100 images, 500 pipelines, made once under
bench/.work/) is cloned into a temporary folder, with its images pointed at a registry of
the benchmark's own (started on loopback, stopped by pid) that holds all 100 tags with pachhook's input-digest label
(pushed through the registry's HTTP API: no Docker engine needed). A pachd double
(tests/pachd_double.py, enterprise limits, in a process of its own) gets all 500
pipelines from one `pachhook run --all`. Then, rounds interleaved, whole processes:

(a) `pachhook plan --all`: one ListPipeline (500 pipelines) and 100 registry lookups
(b) `pachhook plan --all --offline`: the pure plan, which contacts nothing
(c) `pachhook plan --from A --to B` where B touches only files no image or spec uses
(d) the floor of (c): `python -c pass` plus `git diff --name-only A B`

Targets: (a) <= 1500 ms, every image `exists` and every pipeline `unchanged`, and no
write RPC; (c) as bench/bench_plan.py has it (<= 100 ms, <= 3x (d), no heavy import).
Beside each median wall time: the median CPU time (user + system) of the process and
its children, which a machine busy with other work changes less; and the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import monorepo  # noqa: E402
import services  # noqa: E402
from measure import ENV, heavy_imports, timed  # noqa: E402

WORK = HERE / ".work"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG = "application/vnd.docker.container.image.v1+json"


def clone(root: Path, registry: str) -> Path:
    """A clone of the plan benchmark's monorepo whose images live in `registry`."""
    source = WORK / "monorepo-plan"
    fresh = not (source / ".git").exists()
    monorepo.make(source)
    if fresh:
        monorepo.commit_change(
            source, [f"docs/part00/item_{m:05d}.txt" for m in (1, 3, 5)], "docs only"
        )
    if root.exists():
        shutil.rmtree(root)
    subprocess.run(["git", "clone", "-q", str(source), str(root)], check=True)
    config = root / "pachhook.toml"
    config.write_text(config.read_text().replace(monorepo.REGISTRY, f"{registry}/bench"))
    monorepo.git(root, "commit", "-q", "-am", "images in the benchmark's registry")
    monorepo.commit_change(root, [f"docs/part00/item_{m:05d}.txt" for m in (7, 9)], "docs only")
    return root


def push_images(root: Path, registry: str) -> int:
    """Every image's planned tag, carrying pachhook's input digest label."""
    from pachhook.plan.load import plan_selection
    from pachhook.repo.git import Repo
    from pachhook.repo.selection import Selection

    planned = plan_selection(Repo.discover(root), Selection(everything=True), {})
    assert planned.workspace is not None
    for state in planned.workspace.images:
        path = state.repository.split("/", 1)[1]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Labels": {"io.pachhook.input-digest": state.digest}},
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        ).encode()
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        start = urllib.request.Request(
            f"http://{registry}/v2/{path}/blobs/uploads/", method="POST", data=b""
        )
        with urllib.request.urlopen(start) as answer:
            location = answer.headers["Location"]
        if location.startswith("/"):
            location = f"http://{registry}{location}"
        joiner = "&" if "?" in location else "?"
        upload = urllib.request.Request(
            f"{location}{joiner}digest={digest}",
            method="PUT",
            data=config,
            headers={"Content-Type": "application/octet-stream"},
        )
        urllib.request.urlopen(upload).close()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST,
                "config": {"mediaType": CONFIG, "size": len(config), "digest": digest},
                "layers": [],
            }
        ).encode()
        put = urllib.request.Request(
            f"http://{registry}/v2/{path}/manifests/{state.tag}",
            method="PUT",
            data=manifest,
            headers={"Content-Type": MANIFEST},
        )
        urllib.request.urlopen(put).close()
    return len(planned.workspace.images)


def start_double(log: Path) -> tuple[subprocess.Popen[str], str]:
    repos = [f"--repo=raw{n:03d}" for n in range(monorepo.PIPELINES // 5)]
    proc = subprocess.Popen(
        [sys.executable, str(HERE.parent / "tests" / "pachd_double.py"), "--enterprise", *repos],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    if not address:
        proc.kill()
        raise SystemExit(f"the pachd double did not start: {log.read_text()[-500:]}")
    return proc, address


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument(
        "--profile", metavar="FILE", help="also write cProfile statistics of one (a) to FILE"
    )
    args = parser.parse_args()
    services_root = services.short_tempdir("bst-")
    registry = services.start_registry(services_root / "registry")
    double, address = start_double(services_root / "double.log")
    try:
        root = clone(services_root / "monorepo", registry.address)
        pushed = push_images(root, registry.address)
        env = {**ENV, "PACHYDERM_CLUSTER_URL": address, "HOME": str(services_root)}
        env.pop("PACHYDERM_TOKEN", None)
        pachhook = [sys.executable, "-m", "pachhook"]
        started = time.perf_counter()
        setup = subprocess.run(
            [*pachhook, "run", "--all", "--json"], cwd=root, capture_output=True, env=env, text=True
        )
        if setup.returncode != 0:
            raise SystemExit(f"pachhook run --all failed: {setup.stderr[-800:]}")
        record = json.loads(setup.stdout)["run"]
        applied = sum(1 for p in record["pipelines"] if p["status"] == "applied")
        print(
            f"setup: {pushed} images pushed; run --all applied {applied} pipelines "
            f"in {time.perf_counter() - started:.1f}s"
        )
        check = subprocess.run(
            [*pachhook, "plan", "--all", "--json"],
            cwd=root,
            capture_output=True,
            env=env,
            text=True,
        )
        data = json.loads(check.stdout)
        images = {i["action"] for i in data["images"]}
        pipelines = {p["action"] for p in data["pipelines"]}
        print(
            f"plan --all with state: state {data['state']}; image actions {sorted(images)}, "
            f"pipeline actions {sorted(pipelines)}"
        )
        b = monorepo.git(root, "rev-parse", "HEAD")
        a = monorepo.git(root, "rev-parse", "HEAD~1")
        cases = {
            "a": [*pachhook, "plan", "--all"],
            "b": [*pachhook, "plan", "--all", "--offline"],
            "c": [*pachhook, "plan", "--from", a, "--to", b],
            "python": [sys.executable, "-c", "pass"],
            "git diff": ["git", "diff", "--name-only", a, b],
        }
        for cmd in cases.values():  # warm the caches once
            timed(cmd, root, env)
        if args.profile:
            profiled = [sys.executable, "-m", "cProfile", "-o", args.profile, *cases["a"][1:]]
            subprocess.run(profiled, cwd=root, capture_output=True, env=env, check=True)
        times: dict[str, list[float]] = {k: [] for k in cases}
        cpus: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for key, cmd in cases.items():
                wall, cpu = timed(cmd, root, env)
                times[key].append(wall)
                cpus[key].append(cpu)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        cpu_med = {k: statistics.median(v) * 1000 for k, v in cpus.items()}
        floor = med["python"] + med["git diff"]
        writes = subprocess.run(
            [*pachhook, "run", "--all", "--json"], cwd=root, capture_output=True, env=env, text=True
        )
        after = json.loads(writes.stdout)["run"]
        load = os.getloadavg()[0]
        print(f"rounds: {args.rounds}, load average {load:.1f} on {os.cpu_count()} cores")
        print(f"{'medians in ms':<46} {'wall':>8}  (min-max)         cpu")
        for key, label in [
            ("a", "(a) plan --all, registry and cluster read"),
            ("b", "(b) plan --all --offline"),
            ("c", "(c) plan --from A --to B, irrelevant change"),
            ("python", "    python -c pass"),
            ("git diff", "    git diff --name-only A B"),
        ]:
            lo, hi = min(times[key]) * 1000, max(times[key]) * 1000
            span = f"({lo:.1f}-{hi:.1f})"
            print(f"{label:<46} {med[key]:8.1f}  {span:<17} {cpu_med[key]:6.1f}")
        print(f"(d) floor = python + git diff                  {floor:8.1f}")
        print(
            f"(a) / (b) = {med['a'] / med['b']:.2f}x wall, {cpu_med['a'] / cpu_med['b']:.2f}x cpu; "
            f"(a) target <= 1500 ms -> {'met' if med['a'] <= 1500 else 'NOT met'}"
        )
        print(f"(c) / (d) = {med['c'] / floor:.2f}x   target: (c) <= 100 ms and <= 3x")
        heavy = heavy_imports(cases["c"], root, env)
        print(f"heavy imports on path (c): {', '.join(heavy) if heavy else 'none'}")
        print(
            f"run --all afterwards: transaction {after['transaction']}, "
            f"{sum(1 for p in after['pipelines'] if p['status'] == 'applied')} applied"
        )
    finally:
        double.terminate()
        try:
            double.wait(timeout=10)
        except subprocess.TimeoutExpired:
            double.kill()
        registry.stop()
        services.remove_tree(services_root)


if __name__ == "__main__":
    main()
