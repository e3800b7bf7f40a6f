"""The Docker half of `pachhook run`, against the real engine and registry (tests/services.py).

Every repository is a real git repository in a temporary folder, driven through the
real command line (`python -m pachhook`), so what is checked is what a user sees.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from pachhook.config import ImageConfig
from pachhook.docker.cache import LABEL_DIGEST
from pachhook.docker.context import write_context
from pachhook.docker.credentials import host_variable
from pachhook.docker.digest import ImageState, checked_tag
from pachhook.docker.engine import (
    DISK_HINT,
    LABEL_REVISION,
    LABEL_SOURCE,
    ImageResult,
    build_failure,
    push_failure,
)
from pachhook.docker.images import DockerImages
from pachhook.errors import PachhookError
from pachhook.plan.load import plan_selection
from pachhook.repo.git import Repo
from pachhook.repo.selection import Selection
from pachhook.repo.source import CommitFiles, WorkingTreeFiles, WorkingTreeSource
from pachhook.run.progress import BuildProgress
from tests import helpers, services

BASE = services.BASE_IMAGE
APP_DOCKERFILE = f"FROM {BASE}\nCOPY . /ctx/\nRUN cat /ctx/app.txt > /built.txt\n"


# -- set-up -------------------------------------------------------------------------------------


@pytest.fixture
def docker_env(
    docker_engine: services.DockerEngine,
    base_image: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> dict[str, str]:
    """The environment of the code under test: this engine, an empty Docker config
    (no credentials from the machine), none of the seed's variables."""
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    for name in ("DOCKERHUB_USERNAME", "DOCKERHUB_TOKEN", "DOCKER_IMAGE_TAG", "PACHHOOK_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return dict(os.environ)


@pytest.fixture
def docker_client(docker_engine: services.DockerEngine) -> Iterator[docker.DockerClient]:
    c = docker_engine.client()
    try:
        yield c
    finally:
        c.close()


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def image_repo(
    root: Path,
    images: dict[str, str],
    *,
    files: dict[str, Any] | None = None,
    extra_config: str = "",
) -> Path:
    """A repository with one folder per image (name -> context folder), each holding a
    Dockerfile that copies its context, an app.txt, and a file its .dockerignore drops."""
    helpers.init_repo(root)
    config = [extra_config] if extra_config else []
    content: dict[str, Any] = {}
    for name, folder in images.items():
        config.append(f'[[image]]\nname = "{name}"\ncontext = "{folder}"\n')
        content[f"{folder}/Dockerfile"] = APP_DOCKERFILE
        content[f"{folder}/app.txt"] = f"committed {name} {uuid.uuid4().hex}\n"
        content[f"{folder}/.dockerignore"] = "secret.txt\n"
        content[f"{folder}/secret.txt"] = "never in the image\n"
    content["pachhook.toml"] = "\n".join(config)
    content.update(files or {})
    helpers.commit(root, "init", content)
    return root


def app_repo(root: Path, registry: str, prefix: str, **options: Any) -> tuple[str, Path]:
    """The image `{registry}/{prefix}<unique>/app` (context folder app) and an
    image_repo(root, ...) that builds it."""
    name = f"{registry}/{unique(prefix)}/app"
    return name, image_repo(root, {name: "app"}, **options)


@dataclass
class Builds:
    """The session's registry and engine, with the environment of the code under test set
    (docker_env), for a test's repositories under `tmp_path`."""

    registry: services.Registry
    client: docker.DockerClient
    tmp_path: Path

    def app_repo(self, prefix: str, **options: Any) -> tuple[str, Path]:
        """One image in the session's registry, in the repository `tmp_path / "repo"`."""
        return app_repo(self.tmp_path / "repo", self.registry.address, prefix, **options)

    def in_image(self, reference: str, script: str) -> str:
        return in_image(self.client, reference, script)


@pytest.fixture
def builds(
    registry: services.Registry,
    docker_env: dict[str, str],
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> Builds:
    return Builds(registry, docker_client, tmp_path)


@dataclass
class AuthBuild:
    """One image in a registry with basic auth (user `pachhook`, password `token`), in the
    repository `root`; `env` is the environment of the code under test, without credentials."""

    registry: services.Registry
    token: str
    name: str
    root: Path
    env: dict[str, str]


@pytest.fixture
def auth_build(
    auth_registry: Callable[[str, str], services.Registry],
    docker_env: dict[str, str],
    tmp_path: Path,
) -> AuthBuild:
    token = "tok-" + uuid.uuid4().hex
    reg = auth_registry("pachhook", token)
    name, root = app_repo(tmp_path / "repo", reg.address, "auth")
    return AuthBuild(reg, token, name, root, docker_env)


def pachhook(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`pachhook ARGS` in `cwd`; with no `env`, this process's environment."""
    return helpers.pachhook_in(cwd, *args, env=env if env is not None else dict(os.environ))


def build(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`pachhook run --no-deploy ARGS`, which must succeed."""
    proc = pachhook(cwd, "run", "--no-deploy", *args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def build_fails(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`pachhook run --no-deploy ARGS`, which must fail as a user should see it: exit 1,
    no traceback."""
    proc = pachhook(cwd, "run", "--no-deploy", *args, env=env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    return proc


def run_json(cwd: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = pachhook(cwd, "run", "--no-deploy", "--json", *args, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {i["reference"]: i["status"] for i in result["run"]["images"]}


def planned_tags(cwd: Path, *args: str) -> dict[str, str]:
    proc = pachhook(cwd, "plan", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return {i["name"]: i["tag"] for i in json.loads(proc.stdout)["images"]}


def in_image(client: docker.DockerClient, reference: str, script: str) -> str:
    out = client.containers.run(reference, ["sh", "-c", script], remove=True, network_mode="none")
    return out.decode() if isinstance(out, bytes) else str(out)


def registry_path(name: str) -> str:
    return name.split("/", 1)[1]


def image_ids(client: docker.DockerClient) -> set[str]:
    return {i.id for i in client.images.list(all=True)}


# -- building what was committed --------------------------------------------------------------


@pytest.mark.docker
def test_commit_is_built_not_the_dirty_working_tree(builds: Builds) -> None:
    name, root = builds.app_repo("dirty")
    (root / "app" / "run.sh").write_text("#!/bin/sh\necho run\n")
    (root / "app" / "run.sh").chmod(0o755)
    (root / "app" / "link").symlink_to("app.txt")
    head = helpers.commit(root, "exec bit and symlink")
    committed = (root / "app" / "app.txt").read_text()
    (root / "app" / "app.txt").write_text("DIRTY, not committed\n")
    (root / "app" / "untracked.txt").write_text("untracked\n")

    proc = build(root, "--all")
    tag = planned_tags(root, "--all")[name]
    reference = f"{name}:{tag}"
    assert builds.registry.has_manifest(registry_path(name), tag)
    assert f"image {reference}: built" in proc.stdout

    assert builds.in_image(reference, "cat /ctx/app.txt /built.txt") == committed * 2
    listing = builds.in_image(reference, "ls -a /ctx").split()
    assert "secret.txt" not in listing  # dropped by the ignore file
    assert "untracked.txt" not in listing  # not in the commit
    assert builds.in_image(reference, "test -x /ctx/run.sh && readlink /ctx/link") == "app.txt\n"

    labels = builds.client.images.get(reference).labels
    assert labels[LABEL_REVISION] == head
    assert labels[LABEL_SOURCE] == str(root)
    assert labels[LABEL_DIGEST].startswith(tag.removeprefix("ph-"))


@pytest.mark.docker
def test_working_tree_is_built_when_asked(builds: Builds) -> None:
    name, root = builds.app_repo("wt")
    committed_tag = planned_tags(root, "--all")[name]
    (root / "app" / "app.txt").write_text("from the working tree\n")

    build(root, "--all", "--working-tree")
    tag = planned_tags(root, "--all", "--working-tree")[name]
    assert tag != committed_tag
    assert builds.in_image(f"{name}:{tag}", "cat /built.txt") == "from the working tree\n"
    assert builds.registry.tags(registry_path(name)) == [tag]


@pytest.mark.docker
def test_dockerfile_outside_the_context(builds: Builds) -> None:
    name = f"{builds.registry.address}/{unique('outside')}/app"
    root = builds.tmp_path / "repo"
    helpers.init_repo(root)
    helpers.commit(
        root,
        "init",
        {
            "pachhook.toml": f'[[image]]\nname = "{name}"\ncontext = "app"\n'
            'dockerfile = "../docker/app.Dockerfile"\n',
            "docker/app.Dockerfile": APP_DOCKERFILE,
            "app/app.txt": "hello\n",
        },
    )
    build(root, "--all")
    tag = planned_tags(root, "--all")[name]
    # The Dockerfile travels in the context under a hidden name that COPY never sees.
    assert builds.in_image(f"{name}:{tag}", "ls -A /ctx") == "app.txt\n"


# -- tags: stable, skipped when present, never reused ----------------------------------------------


@pytest.mark.docker
def test_digest_tags_are_stable_across_clones_and_a_second_run_builds_nothing(
    builds: Builds,
) -> None:
    tmp_path, registry = builds.tmp_path, builds.registry
    prefix = unique("clones")
    names = {f"{registry.address}/{prefix}/one": "one", f"{registry.address}/{prefix}/two": "two"}
    origin = image_repo(tmp_path / "origin", names)
    clones = []
    for n in (1, 2):
        clone = tmp_path / f"clone{n}"
        helpers.git(tmp_path, "clone", "-q", str(origin), str(clone))
        clones.append(clone)
    tags = planned_tags(origin, "--all")
    assert planned_tags(clones[0], "--all") == tags == planned_tags(clones[1], "--all")
    assert all(tag.startswith("ph-") and len(tag) == 15 for tag in tags.values())

    first = run_json(clones[0], "--all")
    assert set(statuses(first).values()) == {"built"}
    before = image_ids(builds.client)

    for repo in (clones[0], clones[1]):  # the same clone again, and another clone
        again = run_json(repo, "--all")
        assert set(statuses(again).values()) == {"exists"}, again
        assert again["run"]["error"] is None
    assert image_ids(builds.client) == before  # the engine built nothing
    for name, tag in tags.items():
        assert registry.tags(registry_path(name)) == [tag]


@pytest.mark.docker
def test_end_to_end_run_no_deploy(builds: Builds) -> None:
    """The command a user types, in a repository whose image is `127.0.0.1:PORT/demo/app`:
    once builds, twice builds nothing, a commit that touches one image rebuilds that one."""
    registry = builds.registry
    app = f"{registry.address}/demo/app"
    other = f"{registry.address}/demo/{unique('other')}"
    root = image_repo(
        builds.tmp_path / "repo",
        {app: "app", other: "other"},
        files={"pipelines/app.json": helpers.spec("app", app, "raw")},
        extra_config="jobs = 2",
    )
    first = build(root, "--all")
    assert first.stdout.count(": built in ") == 2
    assert "pipelines not updated (--no-deploy)" in first.stdout

    second = build(root, "--all")
    assert ": built in " not in second.stdout
    assert second.stdout.count(": exists in ") == 2

    old = planned_tags(root, "--all")
    helpers.commit(root, "touch app", {"app/app.txt": "changed\n"})
    third = build(root, "--from", "HEAD~1")
    new = planned_tags(root, "--all")
    assert new[other] == old[other] and new[app] != old[app]
    assert f"image {app}:{new[app]}: built" in third.stdout
    assert other not in third.stdout.split("pipelines (upstream first)")[1]
    assert registry.tags("demo/app") == sorted([old[app], new[app]])
    assert builds.in_image(f"{app}:{new[app]}", "cat /built.txt") == "changed\n"


@pytest.mark.docker
def test_a_tag_that_holds_other_content_is_refused(builds: Builds) -> None:
    tmp_path, registry, client = builds.tmp_path, builds.registry, builds.client
    name, root = builds.app_repo("taken")
    tag = planned_tags(root, "--all")[name]
    # Someone else's image under the very tag pachhook would push.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "Dockerfile").write_text(f"FROM {BASE}\nRUN echo other > /other\n")
    client.images.build(path=str(tmp_path / "other"), tag=f"{name}:{tag}", rm=True)
    for chunk in client.api.push(name, tag=tag, stream=True, decode=True):
        assert "error" not in chunk, chunk
    digest = registry.manifest_digest(registry_path(name), tag)

    # The plan, reading the registry, already says so.
    plan = pachhook(root, "plan", "--all", "--json")
    (image,) = json.loads(plan.stdout)["images"]
    assert image["action"] == "build"
    assert any(f"already has tag {tag} for other content" in r["why"] for r in image["reasons"])
    proc = build_fails(root, "--all")
    assert f"already has tag {tag} for other content" in proc.stdout
    assert registry.manifest_digest(registry_path(name), tag) == digest  # not overwritten


@pytest.mark.docker
def test_git_sha_policy_tags_with_the_last_commit_touching_the_image(builds: Builds) -> None:
    name, root = builds.app_repo("sha", extra_config='tag_policy = "git-sha"')
    touching = helpers.git(root, "rev-parse", "HEAD")
    helpers.commit(root, "docs only", {"README.md": "not an input\n"})
    assert planned_tags(root, "--all")[name] == touching

    build(root, "--all")
    assert builds.registry.tags(registry_path(name)) == [touching]


# -- failures: one line, a hint, exit 1, nothing unverified pushed ---------------------------------


# What each builder says of the same failing RUN step: the classic builder counts the
# labels pachhook adds as steps.
FAILING_STEP = {
    "classic": ("step 3/6", "returned a non-zero code: 1"),
    "buildkit": ("step 3/3", "exit code: 1"),
}


def builder_config(builder: str) -> str:
    return f'[build]\nbuilder = "{builder}"\n'


@pytest.mark.docker
@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_failing_step_is_named_and_its_log_kept(builds: Builds, builder: str) -> None:
    name, root = builds.app_repo(
        "fails",
        files={
            "app/Dockerfile": f"FROM {BASE}\nCOPY app.txt /\nRUN echo marker-before-failure && false\n"
        },
        extra_config=builder_config(builder),
    )
    proc = build_fails(root, "--all")
    failure = next(line for line in proc.stdout.splitlines() if ": failed in " in line)
    step, said = FAILING_STEP[builder]
    assert f"build failed at {step} (RUN echo marker-before-failure && false)" in failure
    assert said in failure
    # The end of the log is shown, and the whole log kept in the ledger's folder.
    assert "  marker-before-failure" in proc.stderr
    logs = list((root / ".git" / "pachhook" / "logs").glob("*.log"))
    assert len(logs) == 1 and "marker-before-failure" in logs[0].read_text()
    assert f"full build log: {logs[0]}" in proc.stdout
    entry = json.loads((root / ".git" / "pachhook" / "runs.jsonl").read_text().splitlines()[-1])
    assert entry["images"][0]["status"] == "failed"
    assert entry["images"][0]["log_path"] == str(logs[0])
    assert builds.registry.tags(registry_path(name)) == []


@pytest.mark.docker
def test_registry_on_a_closed_port(docker_env: dict[str, str], tmp_path: Path) -> None:
    name = f"127.0.0.1:{services.free_port()}/demo/app"
    root = image_repo(tmp_path / "repo", {name: "app"})
    proc = build_fails(root, "--all")
    assert "unreachable (connection refused); check that it is running" in proc.stdout


@pytest.mark.docker
def test_engine_unreachable(
    registry: services.Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _, root = app_repo(tmp_path / "repo", registry.address, "noengine")
    proc = build_fails(root, "--all")
    assert (
        f"Docker engine at unix://{tmp_path}/no-engine.sock unreachable (no socket there); "
        "is dockerd running? check DOCKER_HOST" in proc.stdout
    )


@pytest.mark.docker
def test_htpasswd_registry_wrong_then_right_credentials_and_no_token_anywhere(
    auth_build: AuthBuild,
) -> None:
    reg, token, name, root = auth_build.registry, auth_build.token, auth_build.name, auth_build.root
    wrong = "wrong-" + uuid.uuid4().hex
    outputs = []

    anonymous = build_fails(root, "--all")
    assert f"registry {reg.address} asks for credentials" in anonymous.stdout
    # Docker Hub's variables are Docker Hub's: this registry never gets them.
    hub = {**auth_build.env, "DOCKERHUB_USERNAME": "pachhook", "DOCKERHUB_TOKEN": token}
    assert (
        f"registry {reg.address} asks for credentials" in build_fails(root, "--all", env=hub).stdout
    )

    variable = host_variable(reg.address)
    env = {**auth_build.env, variable: f"pachhook:{wrong}"}
    refused = build_fails(root, "--all", env=env)
    assert f"registry {reg.address} refused the credentials" in refused.stdout
    assert f"{variable}=USERNAME:TOKEN" in refused.stdout
    outputs += [refused.stdout, refused.stderr]

    env[variable] = f"pachhook:{token}"
    accepted = build(root, "--all", env=env)
    tag = planned_tags(root, "--all")[name]
    assert reg.has_manifest(registry_path(name), tag)
    again = build(root, "--all", "--json", env=env)
    assert {i["status"] for i in json.loads(again.stdout)["run"]["images"]} == {"exists"}
    outputs += [accepted.stdout, accepted.stderr, again.stdout, again.stderr]

    state = root / ".git" / "pachhook"
    outputs += [p.read_text(errors="replace") for p in state.rglob("*") if p.is_file()]
    for secret in (token, wrong):
        assert not any(secret in text for text in outputs)


@pytest.mark.docker
def test_push_errors_inside_the_stream_are_caught(auth_build: AuthBuild, tmp_path: Path) -> None:
    """`exists` is skipped here, so the engine itself meets the refusal, in the middle of
    a push stream whose HTTP status is 200."""
    reg, token, name, root = auth_build.registry, auth_build.token, auth_build.name, auth_build.root
    env = {**auth_build.env, host_variable(reg.address): f"pachhook:not-{token}"}
    repo = Repo.discover(root)
    planned = plan_selection(repo, Selection(everything=True), env)
    assert planned.workspace is not None
    lines: list[str] = []
    images = DockerImages.from_environment(
        repo, planned.workspace.config, env, BuildProgress(lines.append), tmp_path / "logs"
    )
    state = planned.plan.images[0].state
    assert state is not None
    result = images.build(state, planned.resolved.source, push=True)
    assert result.status == "failed"
    assert result.error is not None and result.error.startswith(
        f"push refused: registry {reg.address} refused the credentials"
    )
    assert not reg.has_manifest(registry_path(name), planned.plan.images[0].tag or "")
    assert not any(token in line for line in [*lines, result.error])


# -- pieces without the engine ---------------------------------------------------------------------


def test_context_tar_from_a_commit(tmp_path: Path) -> None:
    root = helpers.init_repo(tmp_path / "repo")
    helpers.commit(
        root,
        "init",
        {
            "ctx/Dockerfile": "FROM scratch\n",
            "ctx/.dockerignore": "Dockerfile\n*.log\n!keep.log\n",
            "ctx/a/b.txt": "b\n",
            "ctx/drop.log": "x\n",
            "ctx/keep.log": "k\n",
            "ctx/tool.sh": "#!/bin/sh\n",
            "elsewhere.txt": "not in the context\n",
        },
    )
    (root / "ctx" / "tool.sh").chmod(0o755)
    (root / "ctx" / "ln").symlink_to("a/b.txt")
    head = helpers.commit(root, "mode and link")
    (root / "ctx" / "a" / "b.txt").write_text("dirty\n")

    files = CommitFiles(root, head, "ctx")
    out = io.BytesIO()
    try:
        context = write_context(files, ImageConfig(name="x/y", context="ctx"), out)
    finally:
        files.close()
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == [
            ".dockerignore",
            "Dockerfile",  # sent even though the ignore file names it
            "a",
            "a/b.txt",
            "keep.log",
            "ln",
            "tool.sh",
        ]
        reader = tar.extractfile(members["a/b.txt"])
        assert reader is not None and reader.read() == b"b\n"  # the commit, not the dirty file
        assert members["tool.sh"].mode == 0o755 and members["a/b.txt"].mode == 0o644
        assert members["ln"].issym() and members["ln"].linkname == "a/b.txt"
        assert {m.uid for m in members.values()} == {0}
    assert context.dockerfile == "Dockerfile"


def test_disk_full_and_push_errors_are_one_line_with_a_hint() -> None:
    full = build_failure(
        ("4/6", "RUN make"),
        "The command '/bin/sh -c make' returned a non-zero code: 1",
        ["dd: write error: No space left on device"],
    )
    assert (
        full
        == f"build ran out of disk space at step 4/6 (RUN make) (no space left on device); {DISK_HINT}"
    )
    engine = build_failure(None, "write /var/lib/docker/tmp/x: no space left on device")
    assert "no space left on device" in engine and DISK_HINT in engine
    multi = build_failure(("2/2", "RUN x"), "line one\nline two")
    assert "\n" not in multi and "line one line two" in multi
    cases = {
        "unauthorized: authentication required": "push refused: registry r:5000 refused the credentials",
        "denied: requested access to the resource is denied": "push refused",
        'Get "https://r:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused': "registry r:5000 unreachable",
        "http: server gave HTTP response to HTTPS client": "insecure-registries",
        "blob upload unknown": "push failed: blob upload unknown; check registry r:5000",
        "write: no space left on device": "out of disk space",
    }
    for error, expected in cases.items():
        message = push_failure("r:5000", error, True).message
        assert expected in message and "\n" not in message


def test_floating_tag_latest_is_refused() -> None:
    state = ImageState(ImageConfig(name="x/y"), (), (), "0" * 64, "latest")
    with pytest.raises(PachhookError, match="refusing the floating tag 'latest'"):
        checked_tag(state)


def test_plain_progress_is_timestamped_lines() -> None:
    lines: list[str] = []
    progress = BuildProgress(lines.append, clock=lambda: 0.0)
    progress.stage("r/x:ph-1", "sending context")
    progress.stage("r/x:ph-1", "building")
    progress.step("r/x:ph-1", 3, 7, "RUN   pip install\n -r requirements.txt")
    progress.output("r/x:ph-1", "Collecting things")  # build output stays in the log
    progress.finished(ImageResult("r/x", "r/x:ph-1", "built", 1.25))
    progress.finished(
        ImageResult("r/x", "r/x:ph-2", "failed", 2.0, "build failed at step 1/1", "/l.log"),
        ["line a", "line b"],
    )
    progress.close()
    stamp = lines[0].split()[0]
    assert len(stamp) == 8 and stamp.count(":") == 2
    assert [line[9:] if line[:2].isdigit() else line for line in lines] == [
        "r/x:ph-1 sending context",
        "r/x:ph-1 step 3/7 RUN pip install -r requirements.txt",
        "r/x:ph-1 built in 1.2s",
        "r/x:ph-2 failed in 2.0s: build failed at step 1/1",
        "--- last 2 lines of the build log of r/x:ph-2 ---",
        "  line a",
        "  line b",
        "--- full log: /l.log ---",
    ]


def test_live_progress_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    progress = BuildProgress.for_run(lambda line: None, interactive=True, stream=screen)
    assert progress.live
    progress.step("reg/app:ph-1", 2, 5, "COPY . /app")
    progress.message("a line above the live rows")
    result = ImageResult("reg/app", "reg/app:ph-1", "built", 3.0)
    progress.finished(result)
    progress.close()
    progress.summary([result])
    shown = screen.getvalue()
    assert "a line above the live rows" in shown
    assert "reg/app:ph-1" in shown and "built" in shown and "3.0s" in shown
    assert not BuildProgress.for_run(lambda line: None, interactive=False, stream=screen).live
    assert not BuildProgress.for_run(lambda line: None, interactive=True, stream=io.StringIO()).live


@pytest.mark.docker
@pytest.mark.parametrize("builder", ["classic", "buildkit"])
def test_disk_full_is_one_line_with_a_hint(
    registry: services.Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, builder: str
) -> None:
    """An engine whose data root is a 48 MB tmpfs: a context that does not fit, then a RUN
    step that fills the disk."""
    if os.geteuid() != 0:
        helpers.unavailable("mounting a small tmpfs for the engine needs root")
    root = services.short_tempdir("full-")
    small = root / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        services.remove_tree(root)
        helpers.unavailable(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    engine = None
    try:
        engine = services.start_docker_engine(small / "engine")
        services.ensure_base_image(engine)
        monkeypatch.setenv("DOCKER_HOST", engine.host)
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
        name, repo = app_repo(
            tmp_path / "repo",
            registry.address,
            "full",
            files={
                "app/Dockerfile": f"FROM {BASE}\nCOPY big.bin /\n",
                "app/big.bin": os.urandom(60 << 20),
            },
            extra_config=builder_config(builder),
        )
        too_big = build_fails(repo, "--all")
        assert (
            f"build ran out of disk space (no space left on device); {DISK_HINT}" in too_big.stdout
        )

        if builder == "buildkit":
            # BuildKit keeps what it received of the context in its cache: free it, as the
            # hint says (it lets go of the snapshots in its own time: wait for the room).
            client = engine.client()
            try:
                deadline = time.monotonic() + 30
                while True:
                    client.api.prune_builds()
                    free = os.statvfs(small)
                    if free.f_bavail * free.f_frsize > 40 << 20 or time.monotonic() > deadline:
                        break
                    time.sleep(0.5)
            finally:
                client.close()
        helpers.git(repo, "rm", "-q", "app/big.bin")
        helpers.commit(
            repo,
            "fill the disk in a RUN step",
            {"app/Dockerfile": f"FROM {BASE}\nRUN dd if=/dev/zero of=/fill bs=1M count=80\n"},
        )
        filled = build_fails(repo, "--all")
        step = "2/5" if builder == "classic" else "2/2"
        assert (
            f"build ran out of disk space at step {step} (RUN dd if=/dev/zero" in filled.stdout
        ), filled.stdout
        assert "no space left on device" in filled.stderr.lower()  # the end of the log is shown
        assert registry.tags(registry_path(name)) == []
    finally:
        if engine is not None:
            engine.stop()
        services.remove_tree(root)  # unmounts the tmpfs first


def test_a_save_while_the_context_is_written_is_caught(tmp_path: Path) -> None:
    """The working tree can change between planning and packing: what was packed must
    be what the input digest describes, or the image would carry the wrong tag."""
    root = helpers.init_repo(tmp_path / "wt")
    helpers.commit(
        root, "start", {"app/Dockerfile": "FROM scratch\nCOPY . /\n", "app/a.txt": "v1\n"}
    )
    image = ImageConfig(name="127.0.0.1:1/app", context="app")
    source = WorkingTreeSource(Repo.discover(root))
    inputs = ["app/Dockerfile", "app/a.txt"]
    for path in inputs:
        source.entry(path)  # as when the digest was computed

    unchanged = WorkingTreeFiles(source, image.context)
    write_context(unchanged, image, io.BytesIO())
    assert unchanged.changed_since_planned(inputs) == []

    (root / "app/a.txt").write_text("v2, saved after planning\n")
    saved = WorkingTreeFiles(source, image.context)
    write_context(saved, image, io.BytesIO())
    assert saved.changed_since_planned(inputs) == ["app/a.txt"]
