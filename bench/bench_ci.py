"""CI on a fresh runner: the seed's workflow beside the pachhook action, one commit touching
one of 10 images.

    python bench/bench_ci.py [--rounds N] [--install-seconds S]

Starts its own Docker engine, registry and pachd double (tests/services.py,
tests/pachd_double.py) and stops them. The repository has 10 images (bench_build.py's
apps: FROM local/busybox:1, two RUN steps, COPY of their sources) and 10 pipelines, one
per image, on a bare remote. The action's first run deploys everything. Then, each round:

(a) a commit touches one image and is pushed; the engine's images and build cache are
    removed (a hosted runner starts empty); the action (action.yml, run by
    tests/actions_runner.py as a runner runs it, in a `git clone --depth 1` made as
    actions/checkout makes it, its pachhook already in the tool cache): it decides by
    state, builds and pushes the one image, updates its one pipeline;
(b) for the same commit, the engine emptied again, the seed's workflow in a process of
    its own: build each of the 10 images, tag it with the commit SHA, push it, and
    re-submit every spec with `transform.image` set to that tag, to a pachd double of its
    own (its SHA tags leave pachhook's tags alone; its specs would be drift to pachhook).

Medians over the rounds, interleaved. Not timed on either side: the checkout, and what
each installs before its work (the action's pip install, printed once; the seed builds
a pachctl image in its own workflow).

Each app pins a dependency of its own, so no two images share their dependency layer.
Nothing can be downloaded here, so an image's dependency step (bench_build's
`RUN ... > installed.txt`, next to `COPY requirements.txt`) costs almost nothing, where on
a hosted runner it downloads and installs packages (a `pip install numpy pandas` takes
tens of seconds there). `--install-seconds S` (default 10) makes that step wait S
seconds first, as a download would (no CPU); `--install-seconds 0` leaves it as it is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
import bench_build  # noqa: E402
import services  # noqa: E402
from pachd_double import PachdDouble  # noqa: E402

from tests.actions_runner import ActionRun, checkout, load_action, push_event, run_action  # noqa: E402

TOKEN = "bench-token"

SEED = """
import json, sys
import docker, python_pachyderm

host, sha, pachd, token, images = sys.argv[1:6]
images = json.loads(images)
client = docker.DockerClient(base_url=host)
for name, context, spec_path in images:
    client.images.build(path=context, tag=f"{name}:{sha}", rm=True)
    for chunk in client.api.push(name, tag=sha, stream=True, decode=True):
        if "error" in chunk or "errorDetail" in chunk:
            raise SystemExit(f"push of {name}:{sha} failed: {chunk}")
client.close()
address = pachd.split("://", 1)[1]
cluster = python_pachyderm.Client(host=address.split(":")[0], port=int(address.split(":")[1]),
                                  auth_token=token)
for name, context, spec_path in images:
    with open(spec_path) as handle:
        spec = json.load(handle)
    spec["transform"]["image"] = f"{name}:{sha}"
    request = python_pachyderm.parse_dict_pipeline_spec(spec)
    request.update = True
    cluster.create_pipeline_from_request(request)
"""


def empty_engine(engine: services.DockerEngine) -> None:
    """Remove every image but the base, and with them the classic builder's cache."""
    client = engine.client()
    try:
        for image in client.images.list():
            if services.BASE_IMAGE not in image.tags:
                client.images.remove(image.id, force=True)
    finally:
        client.close()


def make_repo(root: Path, registry: str, install: int) -> list[tuple[str, Path, Path]]:
    """bench_build's 10 apps, a pipeline spec each; (image, context, spec) per image."""
    images = bench_build.make_repo(root, registry)
    dockerfile = bench_build.DOCKERFILE.replace("RUN i=0;", f"RUN sleep {install}; i=0;")
    assert install == 0 or dockerfile != bench_build.DOCKERFILE
    out = []
    include = []
    for n, (name, context) in enumerate(images):
        spec = {
            "pipeline": {"name": f"app{n:02d}"},
            "input": {"pfs": {"repo": "raw", "glob": "/*"}},
            "transform": {"image": f"{name}:seed", "cmd": ["sh", "-c", "cat manifest.txt"]},
        }
        if install:
            (context / "Dockerfile").write_text(dockerfile)
        # Apps pin dependencies of their own: no two share the dependency layer, as in a
        # real repository (identical ones would let the builder reuse one for all ten).
        requirements = context / "requirements.txt"
        requirements.write_text(requirements.read_text() + f"app{n:02d}-helpers==1.{n}\n")
        path = root / "pipelines" / f"app{n:02d}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(spec, indent=2) + "\n")
        out.append((name, context, path))
        include.append(f"pipelines/app{n:02d}.json")
    config = root / "pachhook.toml"
    config.write_text(config.read_text() + '\n[pipelines]\ninclude = ["pipelines/*.json"]\n')
    bench_build.git(root, "add", "-A")
    bench_build.git(root, "commit", "-q", "-m", "pipelines")
    return out


def run_job(
    action_dir: Path,
    origin: Path,
    work: Path,
    sha: str,
    before: str,
    number: int,
    env: dict[str, str],
    cache: Path,
) -> tuple[float, ActionRun]:
    workspace = work / f"ws-{number}"
    checkout(f"file://{origin}", workspace, sha=sha, ref="refs/heads/main")
    base_env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(work)}
    start = time.perf_counter()
    result = run_action(
        load_action(action_dir),
        workspace=workspace,
        event=push_event(before=before, after=sha),
        env=env,
        base_env={**base_env, **bench_build.GIT_ENV},
        secrets=[TOKEN],
        runner_temp=work / f"temp-{number}",
        tool_cache=cache,
    )
    elapsed = time.perf_counter() - start
    if not result.ok:
        raise SystemExit("the action failed:\n" + "\n".join(result.log[-60:]))
    return elapsed, result


def seed(host: str, images: list[tuple[str, Path, Path]], sha: str, pachd: str) -> float:
    listed = json.dumps([(n, str(c), str(s)) for n, c, s in images])
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", SEED, host, sha, pachd, TOKEN, listed],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the seed's workflow failed:\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--log", help="write the last round's pachhook output to this file")
    parser.add_argument(
        "--install-seconds",
        type=int,
        default=10,
        help="seconds each image's dependency step waits, as a download would (default 10)",
    )
    args = parser.parse_args()

    root = services.short_tempdir("cibench-")
    engine = registry = None
    double = PachdDouble(token=TOKEN).start()
    seeds_double = PachdDouble(token=TOKEN).start()
    try:
        engine = services.start_docker_engine(root / "engine")
        services.ensure_base_image(engine)
        registry = services.start_registry(root / "registry")
        double.create_repo("raw")
        seeds_double.create_repo("raw")
        repo = root / "repo"
        repo.mkdir()
        images = make_repo(repo, registry.address, args.install_seconds)
        origin = root / "origin.git"
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(origin)], check=True)
        bench_build.git(repo, "remote", "add", "origin", str(origin))
        env = {
            "DOCKER_HOST": engine.host,
            "PACHYDERM_CLUSTER_URL": double.address,
            "PACHYDERM_TOKEN": TOKEN,
        }
        cache = root / "toolcache"

        head = bench_build.git(repo, "rev-parse", "HEAD")
        first, result = run_job(ROOT, origin, root, head, "0" * 40, 0, env, cache)
        install = result.step("install")
        assert len(json.loads(result.outputs["images"])) == len(images)

        ours: list[float] = []
        seeds: list[float] = []
        for r in range(args.rounds):
            name, context, _ = images[(3 * r + 1) % len(images)]
            before = bench_build.git(repo, "rev-parse", "HEAD")
            sha = bench_build.touch(repo, context, f"round {r}")
            bench_build.git(repo, "push", "-q", "origin", "main")
            empty_engine(engine)
            elapsed, result = run_job(ROOT, origin, root, sha, before, r + 1, env, cache)
            pushed = json.loads(result.outputs["images"])
            assert [p.rsplit(":", 1)[0] for p in pushed] == [name], pushed
            assert json.loads(result.outputs["pipelines"]) == [f"default/app{(3 * r + 1) % 10:02d}"]
            ours.append(elapsed)
            steps = ", ".join(f"{s.id or 'cleanup'} {s.seconds:.1f}" for s in result.steps)
            print(f"  round {r}: action {elapsed:.1f} s ({steps})", flush=True)
            if args.log:
                Path(args.log).write_text(result.step("pachhook").stderr)

            empty_engine(engine)
            seeds.append(seed(engine.host, images, sha, seeds_double.address))
            print(f"  round {r}: seed {seeds[-1]:.1f} s", flush=True)

        med_ours, med_seed = statistics.median(ours), statistics.median(seeds)
        print(f"repository: {len(images)} images, {len(images)} pipelines; engine {engine.host}")
        print(
            f"first action run (installs pachhook, builds all {len(images)}, creates "
            f"{len(images)} pipelines): {first:6.1f} s (its install step: {install.seconds:.1f} s)"
        )
        print(
            f"rounds: {args.rounds}; one commit touches one image; empty engine each time; "
            f"dependency step waits {args.install_seconds} s"
        )
        print(
            f"(a) the action (decides by state; builds 1 of {len(images)}, updates 1 pipeline): "
            f"{med_ours:6.1f} s  ({min(ours):.1f}-{max(ours):.1f})"
        )
        print(
            f"(b) the seed (builds and pushes all {len(images)}, re-submits {len(images)} specs): "
            f"{med_seed:6.1f} s  ({min(seeds):.1f}-{max(seeds):.1f})"
        )
        print(f"(b) / (a) = {med_seed / med_ours:.1f}x   target: >= 5x")
        print(
            f"images built per commit: action 1, seed {len(images)}: "
            f"{(1 - 1 / len(images)) * 100:.0f}% of builds avoided   target: >= 90%"
        )
    finally:
        double.stop()
        seeds_double.stop()
        if registry is not None:
            registry.stop()
        if engine is not None:
            engine.stop()
        services.remove_tree(root)


if __name__ == "__main__":
    main()
