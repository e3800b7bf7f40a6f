"""One commit touches one of 10 images: pachhook's run beside rebuilding and pushing all 10.

    python bench/bench_build.py [--rounds N]

Starts its own Docker engine and registry (tests/services.py) and stops them by pid.
A repository with 10 small Python-ish apps (each FROM local/busybox:1, a RUN step,
COPY of its sources) is built and pushed once. Then, each round:

(a) a commit touches one image; `pachhook run --no-deploy --from HEAD~1` (a whole
    process): builds that image, pushes it, verifies it in the registry;
(b) another commit touches the same image; what the seed's action does on every
    push: build each of the 10 images with docker-py, tagged with the commit SHA,
    and push it (in this process, chunks checked for errors).

Both use the same engine and its build cache (the seed's action on a fresh CI runner
would have no cache, so (b) is the cheap case of the seed). Medians over the rounds.
With --cold-seed, a third line (c) runs (b) without the build cache, as on such a runner.

    python bench/bench_build.py --cold-cache [--rounds N] [--builder B] [--deps-mb M] [--deps-seconds S]

A fresh CI runner: its engine has no build cache. The 10 images (FROM a base in the
registry, a dependency layer that takes S seconds and M MB to make: a stand-in for a
pip install, whose time is mostly downloading and unpacking) are built, pushed and
deployed to a pachd double once. Then, each round, a commit changes one source file of
one image, and on a new, empty engine and a new clone (no ledger):

(d) `pachhook run --no-deploy --from HEAD~1` with CI set, so cache_from = "registry":
    the build reuses the layers of the tag the cluster's pipelines run now;
(e) the same without CI (cache_from = "off"): a cold rebuild of that one image.

Both pull the base image from the registry; starting the engine is not timed. The two
are interleaved, with the order swapped every round. Medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import services  # noqa: E402

IMAGES = 10
SOURCES_PER_IMAGE = 12
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}

DOCKERFILE = f"""FROM {services.BASE_IMAGE}
WORKDIR /app
COPY requirements.txt .
RUN i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo "pkg$i==1.$i" ; done > installed.txt
COPY src/ ./src/
RUN find src -name '*.py' | sort > manifest.txt && cat src/*.py | wc -c > size.txt
CMD ["sh", "-c", "cat manifest.txt"]
"""


def git(root: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    )
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {proc.stderr}")
    return proc.stdout.strip()


def make_repo(
    root: Path, registry: str, dockerfile: str = DOCKERFILE, config_head: str = ""
) -> list[tuple[str, Path]]:
    """The repository; (image name, context folder) per image."""
    git(root, "init", "-q", "-b", "main")
    images = []
    config = []
    for n in range(IMAGES):
        context = root / "apps" / f"app{n:02d}"
        (context / "src").mkdir(parents=True)
        (context / "Dockerfile").write_text(dockerfile)
        (context / ".dockerignore").write_text("**/__pycache__\n*.pyc\n")
        (context / "requirements.txt").write_text("numpy==1.26\npandas==2.1\n")
        for m in range(SOURCES_PER_IMAGE):
            body = "".join(f"def f{k}(x):\n    return x * {k} + {n}\n\n" for k in range(40))
            (context / "src" / f"mod{m:02d}.py").write_text(f'"""app {n} module {m}."""\n\n{body}')
        name = f"{registry}/bench/app{n:02d}"
        config.append(f'[[image]]\nname = "{name}"\ncontext = "apps/app{n:02d}"\n')
        images.append((name, context))
    (root / "pachhook.toml").write_text("jobs = 2\n" + config_head + "\n" + "\n".join(config))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "ten apps")
    return images


def touch(root: Path, context: Path, marker: str) -> str:
    path = context / "src" / "mod00.py"
    path.write_text(path.read_text() + f"\nCHANGE = {marker!r}\n")
    git(root, "commit", "-q", "-am", f"touch {context.name} ({marker})")
    return git(root, "rev-parse", "HEAD")


def pachhook(root: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pachhook", "run", "--no-deploy", *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pachhook run failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout


SEED = """
import json, sys
import docker

host, sha, cold, images = sys.argv[1], sys.argv[2], sys.argv[3] == "1", json.loads(sys.argv[4])
client = docker.DockerClient(base_url=host)
for name, context in images:
    client.images.build(path=context, tag=f"{name}:{sha}", rm=True, nocache=cold)
    for chunk in client.api.push(name, tag=sha, stream=True, decode=True):
        if "error" in chunk or "errorDetail" in chunk:
            raise SystemExit(f"push of {name}:{sha} failed: {chunk}")
client.close()
"""


def seed_action(host: str, images: list[tuple[str, Path]], sha: str, cold: bool = False) -> float:
    """Every image built and pushed under the commit SHA, as the seed's action does: a
    process of its own, as a CI job is, so that both sides pay for starting up."""
    listed = json.dumps([(name, str(context)) for name, context in images])
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", SEED, host, sha, "1" if cold else "0", listed],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"seed action failed:\n{proc.stderr[-2000:]}")
    return elapsed


COLD_DOCKERFILE = """FROM {base}
WORKDIR /app
COPY requirements.txt .
RUN mkdir -p /deps && dd if=/dev/urandom of=/deps/site-packages.bin bs=1M count={mb} 2>/dev/null \\
    && sleep {seconds}
COPY src/ ./src/
RUN find src -name '*.py' | sort > manifest.txt
"""


def spec(n: int, name: str) -> str:
    return json.dumps(
        {
            "pipeline": {"name": f"app{n:02d}"},
            "transform": {"image": name, "cmd": ["sh", "-c", "true"]},
            "input": {"pfs": {"repo": "raw", "glob": "/*"}},
        }
    )


def push_base(engine: services.DockerEngine, registry: str) -> str:
    """The base image in the registry, as a real base is: every engine pulls the very
    same image (one imported on each engine would differ, and no layer could be reused)."""
    reference = f"{registry}/base/busybox:1"
    client = engine.client()
    try:
        client.images.get(services.BASE_IMAGE).tag(reference)
        for chunk in client.api.push(reference, stream=True, decode=True):
            if "error" in chunk:
                raise SystemExit(f"push of {reference} failed: {chunk}")
    finally:
        client.close()
    return reference


def last_image(clone: Path) -> dict[str, object]:
    lines = (clone / ".git" / "pachhook" / "runs.jsonl").read_text().splitlines()
    images = json.loads(lines[-1])["images"]
    built = [i for i in images if i["status"] == "built"]
    if len(built) != 1:
        raise SystemExit(f"expected one image built, got {images}")
    return dict(built[0])


def cold_cache(args: argparse.Namespace) -> None:
    from pachd_double import PachdDouble

    root = services.short_tempdir("bcache-")
    engine = registry = None
    token = "bench-token"
    try:
        engine = services.start_docker_engine(root / "engine")
        services.ensure_base_image(engine)
        registry = services.start_registry(root / "registry")
        base = push_base(engine, registry.address)
        with PachdDouble(token=token) as pachd:
            pachd.create_repo("raw")
            repo = root / "repo"
            repo.mkdir()
            dockerfile = COLD_DOCKERFILE.format(
                base=base, mb=args.deps_mb, seconds=args.deps_seconds
            )
            head = f'\n[build]\nbuilder = "{args.builder}"\n'
            images = make_repo(repo, registry.address, dockerfile, head)
            for n, (name, _) in enumerate(images):
                (repo / "pipelines").mkdir(exist_ok=True)
                (repo / "pipelines" / f"app{n:02d}.json").write_text(spec(n, name))
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", "pipelines")
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("DOCKERHUB_", "PACHHOOK_"))
                and k not in ("CI", "DOCKER_BUILDKIT")
            }
            env.update(
                DOCKER_HOST=engine.host,
                DOCKER_CONFIG=str(root / "docker-config"),
                PACHYDERM_CLUSTER_URL=pachd.address,
                PACHYDERM_TOKEN=token,
            )
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "pachhook", "run", "--all"],
                cwd=repo,
                capture_output=True,
                text=True,
                env=env,
            )
            first = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"first run failed:\n{proc.stdout}\n{proc.stderr}")
            warm = services.DockerEngine(engine.host)
            client = warm.client()
            running = {
                name: list(
                    client.images.get(pachd.pipelines()[("default", f"app{n:02d}")].image).attrs[
                        "RootFS"
                    ]["Layers"]
                )
                for n, (name, _) in enumerate(images)
            }
            client.close()

            times: dict[str, list[float]] = {"cache": [], "cold": []}
            reused: dict[str, list[bool]] = {"cache": [], "cold": []}
            for r in range(args.rounds):
                n = (3 * r + 1) % IMAGES
                name, context = images[n]
                order = ["cache", "cold"] if r % 2 == 0 else ["cold", "cache"]
                for variant in order:
                    touch(repo, context, f"{variant} round {r}")
                    clone = root / f"clone-{variant}-{r}"
                    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
                    fresh = services.start_docker_engine(root / f"fresh-{variant}-{r}")
                    try:
                        run_env = {**env, "DOCKER_HOST": fresh.host}
                        if variant == "cache":
                            run_env["CI"] = "true"
                        elapsed, _ = pachhook(clone, run_env, "--from", "HEAD~1")
                        built = last_image(clone)
                        client = fresh.client()
                        layers = client.images.get(str(built["reference"])).attrs["RootFS"][
                            "Layers"
                        ]
                        client.close()
                        # All but the two layers of the changed sources: the base and the dependencies.
                        reused[variant].append(layers[:-2] == running[name][:-2])
                        if variant == "cache" and not built["cache_from"]:
                            raise SystemExit(f"no cache source found: {built}")
                        times[variant].append(elapsed)
                    finally:
                        fresh.stop()
                        services.remove_tree(root / f"fresh-{variant}-{r}")
                        shutil.rmtree(clone, ignore_errors=True)

        cache, cold = statistics.median(times["cache"]), statistics.median(times["cold"])
        print(
            f"repository: {IMAGES} images, each FROM {base} with a dependency layer of "
            f"{args.deps_mb} MB that takes {args.deps_seconds} s to make; builder {args.builder}"
        )
        print(f"first pachhook run --all (build, push, deploy all {IMAGES}):  {first:7.2f} s")
        print(
            f"rounds: {args.rounds}; one commit changes one source file of one image; each run on"
        )
        print("a new, empty engine and a new clone; medians (min-max)")
        print(
            f'(d) cache_from = "registry" (CI):  {cache:7.2f} s  '
            f"({min(times['cache']):.2f}-{max(times['cache']):.2f})  "
            f"dependency layer reused {sum(reused['cache'])}/{args.rounds}"
        )
        print(
            f"(e) cold rebuild of that image:    {cold:7.2f} s  "
            f"({min(times['cold']):.2f}-{max(times['cold']):.2f})  "
            f"dependency layer reused {sum(reused['cold'])}/{args.rounds}"
        )
        print(f"(e) / (d) = {cold / cache:.1f}x")
    finally:
        if registry is not None:
            registry.stop()
        if engine is not None:
            engine.stop()
        services.remove_tree(root)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--rounds", type=int, default=None, help="default: 5, or 3 with --cold-cache"
    )
    parser.add_argument(
        "--cold-seed", action="store_true", help="also time (b) without the build cache"
    )
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="time a one-file change on a fresh engine with and without cache_from = registry",
    )
    parser.add_argument("--builder", default="auto", choices=["auto", "buildkit", "classic"])
    parser.add_argument("--deps-mb", type=int, default=20)
    parser.add_argument("--deps-seconds", type=float, default=5.0)
    args = parser.parse_args()
    if args.cold_cache:
        args.rounds = args.rounds or 3
        cold_cache(args)
        return
    args.rounds = args.rounds or 5

    root = services.short_tempdir("bbench-")
    engine = registry = None
    try:
        engine = services.start_docker_engine(root / "engine")
        services.ensure_base_image(engine)
        registry = services.start_registry(root / "registry")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKERHUB_")}
        env.update(DOCKER_HOST=engine.host, DOCKER_CONFIG=str(root / "docker-config"))
        repo = root / "repo"
        repo.mkdir()
        images = make_repo(repo, registry.address)

        first, _ = pachhook(repo, env, "--all")
        noop, out = pachhook(repo, env, "--all")
        assert out.count(": exists in ") == IMAGES, out

        ours: list[float] = []
        seeds: list[float] = []
        colds: list[float] = []
        for r in range(args.rounds):
            _, context = images[(3 * r + 1) % IMAGES]
            touch(repo, context, f"pachhook round {r}")
            elapsed, out = pachhook(repo, env, "--from", "HEAD~1")
            built = out.count(": built in ")
            assert built == 1, out
            ours.append(elapsed)
            sha = touch(repo, context, f"seed round {r}")
            seeds.append(seed_action(engine.host, images, sha))
        # Apart, after (a) and (b): builds without cache leave new layers that (b) would reuse.
        for r in range(args.rounds if args.cold_seed else 0):
            _, context = images[(3 * r + 1) % IMAGES]
            sha = touch(repo, context, f"cold seed round {r}")
            colds.append(seed_action(engine.host, images, sha, cold=True))

        med_ours, med_seed = statistics.median(ours), statistics.median(seeds)
        print(
            f"repository: {IMAGES} images, {SOURCES_PER_IMAGE + 3} files each; engine {engine.host}"
        )
        print(f"first pachhook run --all (builds and pushes all {IMAGES}):  {first:7.2f} s")
        print(f"pachhook run --all again (all {IMAGES} in the registry):   {noop:7.2f} s")
        print(f"rounds: {args.rounds}; one commit touches one image; medians (min-max)")
        print(
            f"(a) pachhook run --no-deploy --from HEAD~1 (1 image):   {med_ours:7.2f} s"
            f"  ({min(ours):.2f}-{max(ours):.2f})"
        )
        print(
            f"(b) seed: build + push all {IMAGES} under the commit SHA:  {med_seed:7.2f} s"
            f"  ({min(seeds):.2f}-{max(seeds):.2f})"
        )
        print(f"(b) / (a) = {med_seed / med_ours:.1f}x")
        if colds:
            med_cold = statistics.median(colds)
            print(
                f"(c) seed without build cache (fresh CI runner):        {med_cold:7.2f} s"
                f"  ({min(colds):.2f}-{max(colds):.2f})"
            )
            print(f"(c) / (a) = {med_cold / med_ours:.1f}x")
    finally:
        if registry is not None:
            registry.stop()
        if engine is not None:
            engine.stop()
        services.remove_tree(root)


if __name__ == "__main__":
    main()
