"""BuildKit through the Docker CLI: which CLI, its progress and errors, and real builds.

The first half needs no engine: finding a CLI (Debian's docker.io 20.10 builds with
BuildKit; a Docker 28 CLI without the buildx plugin refuses), the command line, and
the plain progress of captured builds. The second half builds for real, with the
engine and registry of tests/conftest.py, through the real command: ignore files and
mounts as BuildKit reads them, build secrets, the registry cache on a fresh engine
for both builders, and `pachhook run` with `builder = "auto"` deploying to the pachd
double, then the same image refused at plan time under `builder = "classic"`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pachhook.config import BuildSecret, ImageConfig, load
from pachhook.docker import buildkit
from pachhook.docker.digest import ImageState
from pachhook.docker.engine import build_failure
from pachhook.pachyderm.cluster import PachydermCluster
from pachhook.run.previous import PreviousImages
from tests import helpers, services
from tests.e2e import Repo as E2ERepo

# -- finding a CLI ------------------------------------------------------------------------------


def debian_cli() -> str:
    if not os.access("/usr/bin/docker", os.X_OK):
        helpers.unavailable("/usr/bin/docker (Debian's docker.io) is not installed")
    return "/usr/bin/docker"


def test_a_cli_that_refuses_buildkit_is_passed_over() -> None:
    debian_cli()
    env = {**os.environ, "PATH": "/usr/local/bin:/usr/bin:/bin"}
    env.pop(buildkit.CLI_VARIABLE, None)
    found, rejected = buildkit.find_cli(env)
    assert found is not None
    if found.path != "/usr/bin/docker":  # a CLI with buildx comes first on this machine
        return
    for passed in rejected:  # e.g. Docker 28 without buildx: "the buildx component is missing"
        assert passed.path == "/usr/local/bin/docker" and passed.reason
    assert buildkit.resolve(ImageConfig(name="a/b"), env) == "buildkit"
    assert "Docker CLI 20.10" in "\n".join(buildkit.describe([state("buildkit")], env))


def test_an_explicit_cli_is_the_only_one_tried() -> None:
    env = {**os.environ, buildkit.CLI_VARIABLE: "/bin/false"}
    found, rejected = buildkit.find_cli(env)
    assert found is None and [r.path for r in rejected] == ["/bin/false"]
    auto = ImageConfig(name="a/b")
    assert buildkit.resolve(auto, env) == "classic"
    assert buildkit.resolve(auto._replace(builder="buildkit"), env) == "buildkit"
    line = buildkit.describe([state("buildkit")], env)[0]
    assert "no Docker CLI here builds with it" in line and "/bin/false" in line


def test_docker_buildkit_0_asks_for_the_classic_builder() -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    assert buildkit.resolve(ImageConfig(name="a/b"), env) == "classic"


def state(builder: str) -> ImageState:
    return ImageState(ImageConfig(name="a/b"), (), (), "0" * 64, "ph-0", builder)


def test_the_cli_gets_the_engine_of_docker_py_and_no_credentials() -> None:
    env = {
        "PATH": "/usr/bin",
        "PACHYDERM_TOKEN": "p",
        "DOCKERHUB_TOKEN": "d",
        "DOCKERHUB_USERNAME": "u",
        "DOCKER_CONTEXT": "remote",
        "PIP_TOKEN": "kept: a build secret may name it",
    }
    child = buildkit.cli_environment(env)
    assert child == {
        "PATH": "/usr/bin",
        "DOCKER_HOST": "unix:///var/run/docker.sock",
        "PIP_TOKEN": "kept: a build secret may name it",
    }
    assert (
        buildkit.cli_environment({"DOCKER_HOST": "tcp://h:2375"})["DOCKER_HOST"] == "tcp://h:2375"
    )


def test_command_line_names_secrets_never_their_values() -> None:
    request = buildkit.BuildRequest(
        dockerfile="/t/df/Dockerfile",
        context_dir="/t/ctx",
        reference="reg/app:ph-1",
        target="run",
        build_args={"PY": "3.11"},
        labels={"io.x": "1"},
        network="none",
        secrets=(BuildSecret("pip", "PIP_TOKEN"),),
        cache_from=("reg/app:ph-0",),
        inline_cache=True,
    )
    argv = buildkit.build_argv(buildkit.Cli("/usr/bin/docker"), request, "/t/iid")
    assert argv[:2] == ["/usr/bin/docker", "build"] and argv[-1] == "/t/ctx"
    pairs = list(zip(argv, argv[1:], strict=False))
    for pair in [
        ("-f", "/t/df/Dockerfile"),
        ("-t", "reg/app:ph-1"),
        ("--iidfile", "/t/iid"),
        ("--network", "none"),
        ("--target", "run"),
        ("--build-arg", "PY=3.11"),
        ("--build-arg", "BUILDKIT_INLINE_CACHE=1"),
        ("--label", "io.x=1"),
        ("--cache-from", "reg/app:ph-0"),
        ("--secret", "id=pip,env=PIP_TOKEN"),
    ]:
        assert pair in pairs


# -- plain progress, as the 20.10 CLI prints it ------------------------------------------------

SUCCESS = """\
#1 [internal] load build definition from Dockerfile
#1 sha256:0c1b
#1 transferring dockerfile: 180B done
#1 DONE 0.0s
#4 importing cache manifest from 127.0.0.1:5000/app:ph-0
#4 ERROR: 127.0.0.1:5000/app:ph-0: not found
#5 [base 1/3] FROM docker.io/local/busybox:1
#5 CACHED
#6 [base 2/3] RUN echo "bonjour" && mkdir -p /app
#6 0.263 bonjour
#6 DONE 0.5s
#7 [3/3] COPY app.txt /app/
#7 DONE 0.1s
#8 exporting to image
#8 writing image sha256:aee7 done
"""

FAILED_RUN = """\
#6 [3/4] RUN echo about to fail; exit 3
#6 0.084 about to fail
#6 ERROR: executor failed running [/bin/sh -c echo about to fail; exit 3]: exit code: 3
------
 > [3/4] RUN echo about to fail; exit 3:
#6 0.084 about to fail
------
executor failed running [/bin/sh -c echo about to fail; exit 3]: exit code: 3
"""

DISK_FULL_RUN = """\
#5 [2/3] RUN dd if=/dev/zero of=/big bs=1M count=300
#5 0.205 dd: error writing '/big': No space left on device
#5 ERROR: executor failed running [/bin/sh -c dd if=/dev/zero of=/big bs=1M count=300]: exit code: 1
------
 > [2/3] RUN dd if=/dev/zero of=/big bs=1M count=300:
------
executor failed running [/bin/sh -c dd if=/dev/zero of=/big bs=1M count=300]: exit code: 1
"""

DISK_FULL_CONTEXT = """\
#1 [internal] load remote build context
#1 ERROR: write /d/overlay2/9i16/diff/context: no space left on device
------
 > [internal] load remote build context:
------
failed to solve with frontend dockerfile.v0: failed to read downloaded context: write /d/overlay2/9i16/diff/context: no space left on device
"""

SYNTAX = """\
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s
failed to solve with frontend dockerfile.v0: failed to create LLB definition: dockerfile parse error line 3: unknown instruction: FROBNICATE
"""

ENGINE_DOWN = (
    "Cannot connect to the Docker daemon at unix:///nope.sock. Is the docker daemon running?\n"
)


def parsed(text: str) -> tuple[buildkit.PlainProgress, list[Any]]:
    events: list[Any] = []
    progress = buildkit.PlainProgress(on_step=events.append, on_output=events.append)
    for line in text.splitlines():
        progress.feed(line)
    return progress, events


def message(text: str) -> str:
    progress, _ = parsed(text)
    failed = progress.failure(1)
    step = (failed.step.label, failed.step.instruction) if failed.step else None
    return build_failure(step, failed.message, list(progress.tail))


def test_steps_and_output_of_a_build() -> None:
    _, events = parsed(SUCCESS)
    assert events == [
        buildkit.Step("base", 1, 3, "FROM docker.io/local/busybox:1"),
        "CACHED",
        buildkit.Step("base", 2, 3, 'RUN echo "bonjour" && mkdir -p /app'),
        "bonjour",
        buildkit.Step(None, 3, 3, "COPY app.txt /app/"),
    ]
    assert [s.label for s in events if isinstance(s, buildkit.Step)] == [
        "base 1/3",
        "base 2/3",
        "3/3",
    ]


def test_failures_are_one_line_naming_the_step() -> None:
    assert message(FAILED_RUN) == (
        "build failed at step 3/4 (RUN echo about to fail; exit 3): executor failed running "
        "[/bin/sh -c echo about to fail; exit 3]: exit code: 3; fix the Dockerfile or its inputs"
    )
    progress, _ = parsed(FAILED_RUN)
    assert list(progress.tail) == [
        "about to fail",
        "executor failed running [/bin/sh -c echo about to fail; exit 3]: exit code: 3",
    ]
    assert message(DISK_FULL_RUN).startswith(
        "build ran out of disk space at step 2/3 (RUN dd if=/dev/zero of=/big bs=1M count=300)"
    )
    assert message(DISK_FULL_CONTEXT).startswith("build ran out of disk space (no space left")
    assert message(SYNTAX) == (
        "build failed: failed to solve with frontend dockerfile.v0: failed to create LLB "
        "definition: dockerfile parse error line 3: unknown instruction: FROBNICATE; fix the "
        "Dockerfile or its inputs"
    )
    down = parsed(ENGINE_DOWN)[0].failure(1)
    assert down.engine and "unix:///nope.sock" in down.message


# -- the build cache's sources ------------------------------------------------------------------


class Running:
    def __init__(self, images: dict[tuple[str, str], str] | None) -> None:
        self.images = images
        self.asked = 0

    def pipeline_images(self) -> dict[tuple[str, str], str]:
        self.asked += 1
        if self.images is None:
            from pachhook.errors import PachhookError

            raise PachhookError("cluster unreachable")
        return self.images


def test_cache_sources_the_cluster_first_then_the_ledger(tmp_path: Path) -> None:
    from pachhook.run import ledger

    ledger.append(tmp_path, {"kind": "run", "images": [
        {"name": "reg:5000/a", "reference": "reg:5000/a:ph-old", "status": "built", "manifest": "sha256:1"},
        {"name": "reg:5000/a", "reference": "reg:5000/a:ph-local", "status": "built", "manifest": None},
    ]})  # fmt: skip
    ledger.append(tmp_path, {"kind": "run", "images": [
        {"name": "reg:5000/a", "reference": "reg:5000/a:ph-new", "status": "exists"},
        {"name": "reg:5000/b", "reference": "reg:5000/b:ph-b", "status": "built", "manifest": "sha256:2"},
    ]})  # fmt: skip
    cluster = Running({("default", "p"): "reg:5000/a:ph-run", ("default", "q"): "other/x:1"})
    said: list[str] = []
    previous = PreviousImages(tmp_path, lambda: cluster, said.append)
    image = ImageConfig(name="reg:5000/a")
    wanted = ImageState(image, (), (), "0" * 64, "ph-1")
    assert previous(wanted) == ["reg:5000/a:ph-run", "reg:5000/a:ph-new", "reg:5000/a:ph-old"]
    previous(wanted)
    assert cluster.asked == 1 and not said
    down = PreviousImages(tmp_path, lambda: Running(None), said.append)
    assert down(wanted) == ["reg:5000/a:ph-new", "reg:5000/a:ph-old"]
    assert said == ["build cache: cannot read the images the cluster runs (cluster unreachable)"]


# -- real builds ---------------------------------------------------------------------------------

PACHHOOK = [sys.executable, "-m", "pachhook"]


@pytest.fixture
def bk_env(docker_engine: services.DockerEngine, base_image: str, tmp_path: Path) -> dict[str, str]:
    """The environment of the commands under test: this engine, an empty Docker config,
    none of the seed's variables, and no CI (which would turn the registry cache on)."""
    debian_cli()
    config = tmp_path / "docker-config"
    config.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKERHUB_", "PACHHOOK_"))}
    for name in ("DOCKER_IMAGE_TAG", "CI", "DOCKER_BUILDKIT"):
        env.pop(name, None)
    return {**env, "DOCKER_HOST": docker_engine.host, "DOCKER_CONFIG": str(config)}


def pachhook(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PACHHOOK, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


def ok(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = pachhook(root, env, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def last_run(root: Path) -> dict[str, Any]:
    lines = (root / ".git" / "pachhook" / "runs.jsonl").read_text().splitlines()
    return dict(json.loads(lines[-1]))


def in_image(engine: services.DockerEngine, reference: str, script: str) -> str:
    client = engine.client()
    try:
        out = client.containers.run(
            reference, ["sh", "-c", script], remove=True, network_mode="none"
        )
    finally:
        client.close()
    return out.decode() if isinstance(out, bytes) else str(out)


def repo_with(root: Path, name: str, files: dict[str, Any], config: str = "") -> Path:
    helpers.init_repo(root)
    helpers.commit(
        root,
        "init",
        {"pachhook.toml": f'{config}[[image]]\nname = "{name}"\ncontext = "app"\n', **files},
    )
    return root


@pytest.mark.docker
def test_buildkit_build_reads_its_ignore_file_mounts_and_only_needed_stages(
    bk_env: dict[str, str],
    docker_engine: services.DockerEngine,
    registry: services.Registry,
    base_image: str,
    tmp_path: Path,
) -> None:
    name = f"{registry.address}/bk{uuid.uuid4().hex[:8]}/app"
    dockerfile = (
        f"FROM {base_image} AS tests\nCOPY tests/ /tests/\n"  # no tests/: never built
        f"FROM {base_image}\n"
        "RUN --mount=type=cache,target=/cache echo run >> /cache/runs\n"
        "RUN --mount=type=bind,source=req.txt,target=/req cp /req /req.copy\n"
        "COPY --chmod=750 . /ctx/\n"
    )
    root = repo_with(
        tmp_path / "repo",
        name,
        {
            "app/Dockerfile": dockerfile,
            "app/Dockerfile.dockerignore": "secret.txt\n",
            "app/.dockerignore": "req.txt\nmain.sh\n",  # not in force under BuildKit
            "app/req.txt": "numpy==1.26\n",
            "app/main.sh": "echo main\n",
            "app/secret.txt": "never in the image\n",
        },
    )
    deps = ok(root, bk_env, "deps", name).stdout.split()
    assert deps == [
        "app/.dockerignore",
        "app/Dockerfile",
        "app/Dockerfile.dockerignore",
        "app/main.sh",
        "app/req.txt",
    ]
    plan = ok(root, bk_env, "plan", "--all", "-v").stdout
    assert "builder: BuildKit, through " in plan and "Docker CLI" in plan
    planned = json.loads(ok(root, bk_env, "plan", "--all", "--json").stdout)
    assert planned["images"][0]["builder"] == "buildkit"
    explained = ok(root, bk_env, "explain", "app/Dockerfile.dockerignore").stdout
    assert "its ignore file (BuildKit's, beside the Dockerfile)" in explained

    proc = ok(root, bk_env, "run", "--all", "--no-deploy")
    assert "builder: BuildKit, through" in proc.stderr
    assert "step stage-1 4/4 COPY --chmod=750 . /ctx/" in proc.stderr
    image = last_run(root)["images"][0]
    assert image["builder"] == "buildkit" and image["status"] == "built"
    assert registry.tags(name.split("/", 1)[1]) == [image["reference"].rsplit(":", 1)[1]]
    listed = in_image(
        docker_engine,
        image["reference"],
        "ls -A /ctx; stat -c %a /ctx/main.sh; cat /req.copy; ls /tests 2>&1 || true",
    ).split("\n")
    assert listed[:5] == [
        ".dockerignore",
        "Dockerfile",
        "Dockerfile.dockerignore",
        "main.sh",
        "req.txt",
    ]
    assert listed[5:7] == ["750", "numpy==1.26"]
    assert "No such file or directory" in listed[7]


@pytest.mark.docker
def test_a_build_secret_reaches_its_run_step_and_nothing_else(
    bk_env: dict[str, str],
    docker_engine: services.DockerEngine,
    registry: services.Registry,
    base_image: str,
    tmp_path: Path,
) -> None:
    name = f"{registry.address}/secret{uuid.uuid4().hex[:8]}/app"
    value = "s3cr3t-" + uuid.uuid4().hex
    root = repo_with(
        tmp_path / "repo",
        name,
        {
            "app/Dockerfile": f"FROM {base_image}\n"
            "RUN --mount=type=secret,id=pip,required=true wc -c < /run/secrets/pip > /len\n",
        },
        '[build]\nbuilder = "buildkit"\n',
    )
    (root / "pachhook.toml").write_text(
        (root / "pachhook.toml").read_text() + 'secrets = ["id=pip,env=PIP_TOKEN"]\n'
    )
    helpers.commit(root, "a secret")

    without = pachhook(root, bk_env, "run", "--all", "--no-deploy")
    assert without.returncode == 1 and "Traceback" not in without.stderr
    assert (
        "build secret 'pip': the environment variable PIP_TOKEN is not set; set it where "
        "pachhook runs" in without.stdout
    )

    proc = ok(root, {**bk_env, "PIP_TOKEN": value}, "run", "--all", "--no-deploy")
    reference = last_run(root)["images"][0]["reference"]
    assert in_image(docker_engine, reference, "cat /len").strip() == str(len(value))
    assert value not in proc.stdout + proc.stderr
    state = root / ".git" / "pachhook"
    for path in state.rglob("*"):
        if path.is_file():
            assert value.encode() not in path.read_bytes(), path
    client = docker_engine.client()
    try:
        saved = b"".join(client.images.get(reference).save())
    finally:
        client.close()
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        for member in outer.getmembers():
            data = outer.extractfile(member)
            if data is None:
                continue
            blob = data.read()
            assert value.encode() not in blob
            if member.name.endswith("layer.tar"):
                with tarfile.open(fileobj=io.BytesIO(blob)) as layer:
                    for inner in layer.getmembers():
                        content = layer.extractfile(inner)
                        assert content is None or value.encode() not in content.read()

    classic = (root / "pachhook.toml").read_text().replace('"buildkit"', '"classic"')
    helpers.commit(root, "classic", {"pachhook.toml": classic})
    refused = pachhook(root, {**bk_env, "PIP_TOKEN": value}, "plan", "--all")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "image[0].secrets: build secrets need BuildKit" in refused.stderr


# -- the registry cache on a fresh engine ------------------------------------------------------

SLOW_DEPENDENCIES = "RUN dd if=/dev/urandom of=/deps bs=1k count=256 2>/dev/null && sleep 1\n"


@pytest.fixture
def registry_base(
    docker_engine: services.DockerEngine, registry: services.Registry, base_image: str
) -> str:
    """The base image in the registry: an engine that pulls it has the very same image
    (one imported on each engine would differ, and no layer above it could be reused)."""
    reference = f"{registry.address}/base/busybox:1"
    client = docker_engine.client()
    try:
        client.images.get(base_image).tag(reference)
        for chunk in client.api.push(reference, stream=True, decode=True):
            assert "error" not in chunk, chunk
    finally:
        client.close()
    return reference


@pytest.fixture
def fresh_engine() -> Iterator[services.DockerEngine]:
    """An engine with an empty store and build cache, as on a new CI runner."""
    root = services.short_tempdir("fresh-")
    try:
        engine = services.start_docker_engine(root / "engine")
    except (services.ServiceError, OSError) as exc:
        services.remove_tree(root)
        helpers.unavailable(f"a second Docker engine cannot be started: {exc}")
    try:
        yield engine
    finally:
        engine.stop()
        services.remove_tree(root)


def layers(engine: services.DockerEngine, reference: str) -> list[str]:
    client = engine.client()
    try:
        return list(client.images.get(reference).attrs["RootFS"]["Layers"])
    finally:
        client.close()


@pytest.mark.docker
@pytest.mark.parametrize("builder", ["buildkit", "classic"])
def test_registry_cache_reuses_the_dependency_layer_on_a_fresh_engine(
    builder: str,
    bk_env: dict[str, str],
    docker_engine: services.DockerEngine,
    fresh_engine: services.DockerEngine,
    registry: services.Registry,
    registry_base: str,
    tmp_path: Path,
) -> None:
    name = f"{registry.address}/cache{uuid.uuid4().hex[:8]}/app"
    root = repo_with(
        tmp_path / "repo",
        name,
        {
            "app/Dockerfile": f"FROM {registry_base}\n{SLOW_DEPENDENCIES}COPY app.txt /app.txt\n",
            "app/app.txt": "v1\n",
        },
        f'[build]\nbuilder = "{builder}"\ncache_from = "registry"\n',
    )
    ok(root, bk_env, "run", "--all", "--no-deploy")
    first = last_run(root)["images"][0]
    assert first["cache_from"] == []  # nothing pushed before: a cold build

    helpers.commit(root, "change the app only", {"app/app.txt": "v2\n"})
    ok(root, {**bk_env, "DOCKER_HOST": fresh_engine.host}, "run", "--no-deploy", "--from", "HEAD~1")
    second = last_run(root)["images"][0]
    assert second["status"] == "built" and second["cache_from"] == [first["reference"]]
    old, new = layers(docker_engine, first["reference"]), layers(fresh_engine, second["reference"])
    # The random dependency layer came from the registry; the app's layer is new.
    assert new[:-1] == old[:-1] and new[-1] != old[-1]


# -- end to end, through the pachd double -----------------------------------------------------

CACHE_MOUNT_DOCKERFILE = (
    "FROM {base}\n"
    "RUN --mount=type=cache,target=/var/cache/deps echo installed >> /var/cache/deps/log "
    "&& cp /var/cache/deps/log /deps.log\n"
    "COPY main.sh /app/main.sh\n"
)


@pytest.mark.docker
def test_run_auto_builds_a_cache_mount_image_with_buildkit_and_deploys_it(
    repo: E2ERepo, registry: services.Registry, base_image: str
) -> None:
    debian_cli()
    helpers.commit(
        repo.root,
        "a pip-style cache mount",
        {"app/Dockerfile": CACHE_MOUNT_DOCKERFILE.format(base=base_image)},
    )
    proc = repo.ok("run", "--all")
    assert "builder: BuildKit, through" in proc.stderr
    record = repo.last_run()
    assert {i["builder"] for i in record["images"]} == {"buildkit"}
    app = next(i for i in record["images"] if i["name"] == repo.app)
    assert app["status"] == "built" and app["manifest"]
    assert registry.has_manifest(repo.app.split("/", 1)[1], app["reference"].rsplit(":", 1)[1])
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}
    assert repo.images()["clean"] == app["reference"]
    config = load(
        lambda p: (repo.root / p).read_bytes() if (repo.root / p).exists() else None, repo.env
    )
    running = PachydermCluster.connect(config, repo.env).pipeline_images()
    assert running[(repo.project, "clean")] == app["reference"]

    classic = (repo.root / "pachhook.toml").read_text() + '\n[build]\nbuilder = "classic"\n'
    helpers.commit(repo.root, "classic builder", {"pachhook.toml": classic})
    # A Dockerfile its builder cannot build is bad input: refused before any work, exit 2,
    # one line naming the file, the line and the builder to use.
    for command in (["plan"], ["run"]):
        refused = repo.run(*command, "--all")
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.startswith("pachhook: app/Dockerfile:2: RUN --mount needs BuildKit")
        assert 'set builder = "buildkit"' in refused.stderr
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}
