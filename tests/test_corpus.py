"""From `init` to a first correct `run`, on small repositories laid out as real ones are
(tests/corpus.py): `init`, commit, `plan --all` exits 0 and names the right images, and
`run --all` against the real Docker engine, registry and the cluster under test deploys
what it should. Also: Git LFS content in a built image, ADD <url> as a moving input, and
the README's Quick start, run as written on a fresh copy of the example.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import corpus, services
from tests.cluster import Target
from tests.e2e import PACHHOOK
from tests.helpers import GIT_ENV, commit, git, init_repo, unavailable, write

ROOT = Path(__file__).resolve().parent.parent
FAKE_REGISTRY = "127.0.0.1:5999"  # for plans: nothing is pushed


def make(tmp_path: Path, layout: corpus.Layout) -> Path:
    root = init_repo(tmp_path / layout.name)
    if layout.lfs:
        if shutil.which("git-lfs") is None:
            unavailable("git-lfs is not installed (Debian's git-lfs package)")
        git(root, "lfs", "install", "--local")
        for pattern in layout.lfs:
            git(root, "lfs", "track", pattern)
    write(root, layout.files)  # type: ignore[arg-type]
    commit(root, "the project as it is")
    return root


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # no docker or pachctl config of the machine's user
        **GIT_ENV,
        **extra,
    }


def pachhook(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PACHHOOK, *args], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def init_and_commit(root: Path, env: dict[str, str], project: str | None = None) -> str:
    out = ok(pachhook(root, env, "init"))
    last = out.stdout.strip().splitlines()[-1]
    assert last == (
        'next: git add pachhook.toml && git commit -m "pachhook configuration", '
        "then pachhook plan --all"
    )
    text = (root / "pachhook.toml").read_text()
    if project:
        # The test's own project, so that a real cluster is left as it was found.
        (root / "pachhook.toml").write_text(
            text.replace('project = "default"', f'project = "{project}"')
        )
    # Before the commit, every command says that the configuration is not committed yet.
    plan = pachhook(root, env, "plan", "--all")
    assert "pachhook: note: pachhook.toml is not committed yet" in plan.stderr
    git(root, "add", "pachhook.toml")
    git(root, "commit", "-q", "-m", "pachhook configuration")
    return text


def planned_images(plan: dict) -> dict[str, tuple[str, str, str]]:
    """label (name[:variant]) -> (context, dockerfile, action)."""
    out = {}
    for image in plan["images"]:
        label = image["name"] + (f":{image['variant']}" if image["variant"] else "")
        if image["variant"]:
            assert image["tag"].startswith(f"{image['variant']}-ph-")
        out[label] = (image["context"], image["dockerfile"], image["action"])
    return out


def expected_dockerfile(context: str, dockerfile: str) -> str:
    return dockerfile if context == "." else f"{context}/{dockerfile}"


# -- init, commit, plan --all: every layout ---------------------------------------------------


@pytest.mark.parametrize("layout", corpus.LAYOUTS, ids=lambda f: f.__name__)
def test_init_then_plan_names_the_right_images(
    tmp_path: Path, layout: Callable[[str, str], corpus.Layout]
) -> None:
    case = layout(FAKE_REGISTRY, "busybox:1")
    root = make(tmp_path, case)
    env = environment(tmp_path)
    init_and_commit(root, env)
    plan = json.loads(ok(pachhook(root, env, "plan", "--all", "--json")).stdout)
    images = planned_images(plan)
    broken = {k for k, v in images.items() if v[2] == "broken"}
    wanted = {
        label: (context, expected_dockerfile(context, dockerfile))
        for label, (context, dockerfile) in case.images.items()
    }
    assert {k: v[:2] for k, v in images.items()} == wanted
    assert (case.run_exit != 0) == bool(broken)
    pipelines = {p["name"] for p in plan["pipelines"]}
    assert set(case.deployed) <= pipelines


def test_init_writes_what_it_checked(tmp_path: Path) -> None:
    """The comments and choices init writes, on the layouts that need them."""
    env = environment(tmp_path)
    root = make(tmp_path, corpus.iris(FAKE_REGISTRY, "busybox:1"))
    text = init_and_commit(root, env)
    assert text.count('name = "127.0.0.1:5999/pachyderm/iris-train"') == 2
    assert 'variant = "python-svm"' in text and 'variant = "julia-tree"' in text
    assert "# pipeline default/model is defined in julia_train.json:1, python_train.json:1" in text
    assert 'include = ["*.json"]' in text and 'exclude = ["python_train.json"]' in text

    root = make(tmp_path, corpus.tfdemo(FAKE_REGISTRY, "busybox:1"))
    text = init_and_commit(root, env)
    assert "# context: tensorflow/Dockerfile copies files found from here" in text
    assert 'context = "."\ndockerfile = "tensorflow/Dockerfile"' in text

    root = make(tmp_path, corpus.book(FAKE_REGISTRY, "busybox:1"))
    text = init_and_commit(root, env)
    assert 'include = ["specs/*.yaml"]\nexclude = ["specs/params.yaml"]' in text

    root = make(tmp_path, corpus.services(FAKE_REGISTRY, "busybox:1"))
    text = init_and_commit(root, env)
    assert "# cannot be built from git yet: server/Dockerfile:2: COPY source 'bin/server'" in text


def test_init_placeholders_are_valid_and_say_why(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "Odd_Project")
    write(
        root,
        {
            "Dockerfile": "FROM scratch\nCOPY app.py /\n",
            "Dockerfile-dev": "FROM scratch\nCOPY app.py /\n",
            "tools/Build.Dockerfile": "FROM scratch\nCOPY x /\n",
            "tools/x": "x\n",
            "tools/Dockerfile.dockerignore": "*.tmp\n",
            "app.py": "print(1)\n",
            "a/spec.json": corpus.js(corpus.spec("a", "docker.io/one/tools:1", "raw")),
            "b/spec.json": corpus.js(corpus.spec("b", "docker.io/two/tools:1", "raw")),
        },
    )
    commit(root, "start")
    env = environment(tmp_path)
    out = ok(pachhook(root, env, "init"))
    text = (root / "pachhook.toml").read_text()
    names = re.findall(r'^name = "(.*)"$', text, re.M)
    assert len(names) == 3 and len(set(names)) == 3
    for name in names:
        assert re.fullmatch(r"[a-z0-9./_-]+", name), name
    assert 'dockerfile = "Dockerfile-dev"' in text and 'dockerfile = "Build.Dockerfile"' in text
    assert "specs name different images that fit: docker.io/one/tools (a/spec.json)" in text
    assert "no pipeline spec names an image after" in text
    assert "(name to be set)" in out.stdout
    git(root, "add", "pachhook.toml")
    git(root, "commit", "-q", "-m", "config")
    assert ok(pachhook(root, env, "plan", "--all")).stdout


# -- run: the real engine, registry and cluster -------------------------------------------------


@pytest.fixture
def run_env(tmp_path: Path, pachd: Target, docker_engine: services.DockerEngine) -> dict[str, str]:
    env = environment(tmp_path, DOCKER_HOST=docker_engine.host, PACHYDERM_CLUSTER_URL=pachd.address)
    if pachd.token:
        env["PACHYDERM_TOKEN"] = pachd.token
    return env


def deployed_images(pachd: Target, project: str) -> dict[str, str]:
    return {name: p.image for name, p in pachd.pipelines(project).items()}


def runs_image(reference: str, label: str) -> bool:
    """`reference` (what the cluster runs) is pachhook's build of `label` (name[:variant])."""
    head, _, last = label.rpartition("/")
    leaf, _, variant = last.partition(":")
    prefix = f"{variant}-ph-" if variant else "ph-"
    repository, tag = reference.rsplit(":", 1)
    return repository == f"{head}/{leaf}" and tag.startswith(prefix)


@pytest.mark.parametrize("layout", corpus.LAYOUTS, ids=lambda f: f.__name__)
def test_init_then_run_deploys_what_it_should(
    tmp_path: Path,
    layout: Callable[[str, str], corpus.Layout],
    pachd: Target,
    project: str,
    registry: services.Registry,
    base_image: str,
    run_env: dict[str, str],
    docker_engine: services.DockerEngine,
) -> None:
    case = layout(registry.address, base_image)
    root = make(tmp_path, case)
    init_and_commit(root, run_env, project)
    for repo in case.input_repos:
        pachd.create_repo(repo, project)
    ok(pachhook(root, run_env, "plan", "--all"))
    run = pachhook(root, run_env, "run", "--all")
    assert run.returncode == case.run_exit, f"stdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    deployed = deployed_images(pachd, project)
    assert set(deployed) == set(case.deployed), run.stdout + run.stderr
    for name, label in case.deployed.items():
        reference = deployed[name]
        if label.startswith(registry.address) and label in case.images:
            assert runs_image(reference, label), (name, reference, label)
            assert registry_has(registry, reference)
        else:
            assert reference == label  # an image pachhook does not build runs as written
    if case.name == "weights":
        (reference,) = set(deployed.values())
        size = docker_run(docker_engine, reference, "wc", "-c", "/model/weights.bin")
        assert size.split()[0] == str(corpus.LFS_SIZE)
    if case.name == "services":
        # The build output is reported with its file and line, and how to handle it.
        assert "server/Dockerfile:2: COPY source 'bin/server' does not exist" in run.stderr
        assert "pachhook run --working-tree" in run.stderr
        assert f"held: {project}/serve, {project}/report" in run.stderr
        # Built first (as `make` would), the git-ignored output is read from the working tree.
        write(root, {"server/bin/server": "#!/bin/sh\necho serving\n"})
        again = pachhook(root, run_env, "run", "--all", "--working-tree")
        assert again.returncode == 0, again.stdout + again.stderr
        assert set(deployed_images(pachd, project)) == {"web", "serve", "report"}


def registry_has(registry: services.Registry, reference: str) -> bool:
    repository, tag = reference.rsplit(":", 1)
    path = repository.split("/", 1)[1]
    return services.RegistryClient(f"http://{registry.address}").has_manifest(path, tag)


def docker_run(engine: services.DockerEngine, reference: str, *command: str) -> str:
    client = engine.client()
    try:
        out = client.containers.run(reference, list(command), remove=True, network_mode="none")
    finally:
        client.close()
    return out.decode() if isinstance(out, bytes) else str(out)


# -- Git LFS and checkout filters, without an engine -------------------------------------------


def lfs_repo(tmp_path: Path) -> Path:
    return make(tmp_path, corpus.weights(FAKE_REGISTRY, "busybox:1"))


def context_of(root: Path, image: str = "model") -> dict[str, bytes]:
    import io
    import tarfile

    from pachhook.config import ImageConfig
    from pachhook.docker.context import write_context
    from pachhook.repo.git import Repo
    from pachhook.repo.source import CommitSource

    repo = Repo.discover(root)
    source = CommitSource(repo, repo.head() or "")
    out = io.BytesIO()
    write_context(source.folder(image), ImageConfig("x/y", image), out)
    with tarfile.open(fileobj=out) as tar:
        return {
            m.name: (tar.extractfile(m) or io.BytesIO()).read()
            for m in tar.getmembers()
            if m.isfile()
        }


def test_lfs_content_goes_into_the_context_and_the_digest_follows_it(tmp_path: Path) -> None:
    root = lfs_repo(tmp_path)
    stored = git(root, "cat-file", "-p", "HEAD:model/weights.bin")
    assert stored.startswith("version https://git-lfs.github.com/spec/v1")
    files = context_of(root)
    assert files["weights.bin"] == (root / "model" / "weights.bin").read_bytes()
    assert len(files["weights.bin"]) == corpus.LFS_SIZE
    env = environment(tmp_path)
    init_and_commit(root, env)

    def tag() -> str:
        plan = json.loads(ok(pachhook(root, env, "plan", "--all", "--json")).stdout)
        return plan["images"][0]["tag"]

    first = tag()
    assert (
        json.loads(ok(pachhook(root, env, "plan", "--all", "--json", "--working-tree")).stdout)[
            "images"
        ][0]["tag"]
        == first
    )  # the same content, the same tag, committed or on disk
    commit(root, "new weights", {"model/weights.bin": os.urandom(corpus.LFS_SIZE)})
    assert tag() != first


def test_missing_lfs_object_or_git_lfs_fails_with_one_line(tmp_path: Path) -> None:
    from pachhook.errors import PachhookError

    root = lfs_repo(tmp_path)
    # Without git-lfs on PATH: a PATH that has git alone.
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    saved = os.environ["PATH"]
    os.environ["PATH"] = str(bare)
    try:
        from pachhook.repo import checkout

        checkout._lfs_checked.clear()
        with pytest.raises(
            PachhookError,
            match=r"^model/weights.bin is stored with Git LFS and git-lfs is not installed",
        ):
            context_of(root)
    finally:
        os.environ["PATH"] = saved
        checkout._lfs_checked.clear()
    shutil.rmtree(root / ".git" / "lfs" / "objects")
    with pytest.raises(
        PachhookError,
        match=r"^model/weights.bin: its Git LFS object [0-9a-f]{12} is not in this clone; run git lfs pull",
    ):
        context_of(root)


def test_eol_and_filter_attributes_give_what_a_checkout_gives(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "attrs")
    git(root, "config", "filter.upper.smudge", "tr a-z A-Z")
    git(root, "config", "filter.upper.clean", "tr A-Z a-z")
    write(
        root,
        {
            "app/Dockerfile": "FROM scratch\nCOPY . /\n",
            "app/run.bat": "echo one\necho two\n",
            "app/shout.txt": "hello\n",
            "app/plain.txt": "a\nb\n",
            ".gitattributes": "*.bat text eol=crlf\n*.txt filter=upper\napp/plain.txt -filter\n",
        },
    )
    commit(root, "start")
    files = context_of(root, "app")
    assert files["run.bat"] == b"echo one\r\necho two\r\n"
    assert files["shout.txt"] == b"HELLO\n"
    assert files["plain.txt"] == b"a\nb\n"
    # A checkout gives the same bytes: the context is what docker build in a clone sees.
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", str(root), str(clone)], check=True, env={**os.environ, **GIT_ENV}
    )
    git(clone, "config", "filter.upper.smudge", "tr a-z A-Z")
    git(clone, "rm", "-q", "--cached", "-r", ".")
    git(clone, "reset", "-q", "--hard")
    assert (clone / "app" / "run.bat").read_bytes() == files["run.bat"]
    assert (clone / "app" / "shout.txt").read_bytes() == files["shout.txt"]

    # The digest follows the attributes: the same blobs with another eol give another tag.
    env = environment(tmp_path)
    (root / "pachhook.toml").write_text('[[image]]\nname = "x/app"\ncontext = "app"\n')
    commit(root, "config")

    def tag() -> str:
        plan = json.loads(ok(pachhook(root, env, "plan", "--all", "--json")).stdout)
        return plan["images"][0]["tag"]

    before = tag()
    first = git(root, "rev-parse", "HEAD")
    commit(root, "lf", {".gitattributes": "*.txt filter=upper\napp/plain.txt -filter\n"})
    assert tag() != before
    # An older commit's rules come from its own .gitattributes, not from the index's.
    from pachhook.repo.git import Repo
    from pachhook.repo.source import CommitSource

    old = CommitSource(Repo.discover(root), first).checkout_rules(["app/run.bat", "app/plain.txt"])
    assert old["app/run.bat"].crlf and "app/plain.txt" not in old


# -- ADD <url>: a moving input -------------------------------------------------------------------


@pytest.fixture
def web_file(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    (served / "model.txt").write_text("v1\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/model.txt", served / "model.txt"
    finally:
        server.shutdown()
        server.server_close()


def test_add_url_is_a_moving_input_said_by_plan_deps_and_explain(
    tmp_path: Path, web_file: tuple[str, Path]
) -> None:
    url, served = web_file
    root = init_repo(tmp_path / "urls")
    commit(
        root,
        "start",
        {
            "pachhook.toml": '[[image]]\nname = "x/app"\ncontext = "app"\n',
            "app/Dockerfile": f"FROM scratch\nADD {url} /model.txt\nCOPY run.sh /\n",
            "app/run.sh": "true\n",
        },
    )
    env = environment(tmp_path)
    plan = ok(pachhook(root, env, "plan", "--all"))
    assert f"note: image x/app: ADD {url} (app/Dockerfile): downloaded at build time" in plan.stdout
    deps = ok(pachhook(root, env, "deps", "x/app", "--json"))
    assert json.loads(deps.stdout)["urls"] == [url]
    explain = ok(pachhook(root, env, "explain", "app/Dockerfile"))
    assert f"ADD {url}: an input no file holds" in explain.stdout

    def tag() -> str:
        return json.loads(ok(pachhook(root, env, "plan", "--all", "--json")).stdout)["images"][0][
            "tag"
        ]

    fixed = tag()
    served.write_text("v2, longer\n")
    assert tag() == fixed  # by default the tag follows the Dockerfile, not the server
    commit(
        root,
        "check",
        {"pachhook.toml": '[[image]]\nname = "x/app"\ncontext = "app"\nadd_urls = "check"\n'},
    )
    checked = tag()
    served.write_text("v3, longer still\n")
    assert tag() != checked
    served.unlink()
    out = pachhook(root, env, "plan", "--all")
    assert out.returncode == 0 and "cannot ask the server" in out.stdout


# -- the README's Quick start, as written ---------------------------------------------------------


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_quick_start_runs_as_written(
    tmp_path: Path,
    pachd: Target,
    registry: services.Registry,
    base_image: str,
    run_env: dict[str, str],
) -> None:
    """On a fresh copy of the example (its own pachhook.toml left out: the Quick start makes
    one), with the two things this machine cannot reach replaced: the base image (no Docker
    Hub) and the registry the spec names (the test's own)."""
    work = tmp_path / "your-repo"
    shutil.copytree(ROOT / "examples" / "housing-prices", work)
    (work / "pachhook.toml").unlink()
    dockerfile = (work / "Dockerfile").read_text()
    (work / "Dockerfile").write_text(
        re.sub(r"^FROM .*$", f"FROM {base_image}", dockerfile, count=1, flags=re.M)
    )
    spec = (work / "regression.json").read_text()
    (work / "regression.json").write_text(
        spec.replace("docker.io/acme/housing-prices", f"{registry.address}/acme/housing-prices")
    )
    init_repo(work)
    commit(work, "the example")
    pachd.create_repo("housing_data", "default")
    commands = quick_start_commands()
    assert commands[0] == "cd your-repo" and any(c.startswith("pachhook init") for c in commands)
    for command in commands[1:]:
        proc = subprocess.run(
            command,
            shell=True,
            cwd=work,
            env={**run_env, "PATH": f"{Path(PACHHOOK).parent}:{run_env['PATH']}"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{command}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        assert "pachhook: note:" not in proc.stderr, (command, proc.stderr)
        if command.startswith("pachhook plan"):
            assert "build  " in proc.stdout and "default/regression" in proc.stdout
    deployed = pachd.pipelines("default")
    assert deployed["regression"].image.startswith(f"{registry.address}/acme/housing-prices:ph-")


@pytest.mark.parametrize(
    ("path", "stem"),
    [
        ("Dockerfile", None),
        ("a/Dockerfile.gpu", "gpu"),
        ("Dockerfile-dev", "dev"),
        ("R_Dockerfile", "r"),
        ("py/train.dockerfile", "train"),
        ("Build.Dockerfile", "build"),
    ],
)
def test_dockerfile_names_as_projects_write_them(path: str, stem: str | None) -> None:
    from pachhook.plan.discover import dockerfile_stem, is_dockerfile

    assert is_dockerfile(path) and dockerfile_stem(path) == stem


@pytest.mark.parametrize(
    "path", ["Dockerfile.dockerignore", "docs/Dockerfile.md", "dockerfiles/README", "a.docker"]
)
def test_not_dockerfiles(path: str) -> None:
    from pachhook.plan.discover import is_dockerfile

    assert not is_dockerfile(path)


def test_a_pipeline_without_an_image_runs_pachds_default_and_is_said_so(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "noimage")
    doc = corpus.spec("plain", "x", "raw")
    del doc["transform"]["image"]
    commit(
        root,
        "start",
        {"pachhook.toml": '[pipelines]\ninclude = ["*.json"]\n', "p.json": corpus.js(doc)},
    )
    env = environment(tmp_path)
    out = ok(pachhook(root, env, "plan", "--all"))
    assert "-> pachd's default image (the spec names no transform.image)" in out.stdout
    assert "None" not in out.stdout
    (pipeline,) = json.loads(ok(pachhook(root, env, "plan", "--all", "--json")).stdout)["pipelines"]
    assert pipeline["image"] is None
