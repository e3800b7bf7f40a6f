"""Docker is the judge of `image_inputs`, under both builders.

For each case and builder: write a small repository into a temporary folder, build the
image with the real engine as users build it (the classic builder through docker-py;
BuildKit through the Docker CLI, `DOCKER_BUILDKIT=1 docker build -f DOCKERFILE CONTEXT`,
from the folder), then change each file of the context in turn (and add a few new
files), rebuild, and compare image IDs with the first build.

- Every file whose change changes the image must be among the inputs (recall 100%,
  in every case, under each builder).
- Inputs whose change never changes the image must be few: precision over all cases,
  not counting the Dockerfile and the ignore file in force, at least 95% per builder.
- Where the builder fails on the first build (a BuildKit feature under the classic
  builder, a missing source in a stage only the classic builder builds), the analysis
  fails too, and where it builds, the analysis does not fail.

Each change writes new content (a fresh token), so no build can reuse a cached step
for it; a file whose change leaves the image ID unchanged therefore left every cache
key of the build unchanged. Run with `pytest -s` to see the figures.

The builders' own ignore-file matching decides what each build sends, so the judge
does not lean on pachhook's. One thing a folder can hold that git (and pachhook's
context, which holds files and their parent directories only) cannot: a directory
whose files are all ignored, as an empty directory. A new file is therefore never
added where it alone would create such a directory.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import docker
import pytest

from pachhook.config import ImageConfig
from pachhook.docker import buildkit
from pachhook.docker.ignore import ignore_file
from pachhook.docker.inputs import image_inputs
from pachhook.errors import InputError
from tests import services
from tests.helpers import unavailable

pytestmark = pytest.mark.docker

PRECISION_FLOOR = 0.95
CLASSIC, BUILDKIT = "classic", "buildkit"


@dataclass(frozen=True)
class Case:
    name: str
    files: Mapping[str, str]  # repository path -> content; "->target" makes a symlink
    dockerfile: str  # its text; {BASE} is the busybox base image
    context: str = "."
    dockerfile_name: str = "Dockerfile"  # relative to the context, as in the config
    target: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    new_files: tuple[str, ...] = ()  # repository paths added one at a time
    builders: tuple[str, ...] = ("classic", "buildkit")  # judged under these


CASES = [
    Case(
        "copy-dot-with-ignore",
        {
            ".dockerignore": "*.log\ntmp/\n!tmp/keep.txt\n",
            "main.py": "print(1)\n",
            "util/helpers.py": "X = 1\n",
            "debug.log": "noise\n",
            "tmp/scratch.txt": "scratch\n",
            "tmp/keep.txt": "keep\n",
        },
        "FROM scratch\nCOPY . /app/\n",
        new_files=("util/new.py", "new.log", "tmp/other.txt"),
    ),
    Case(
        "multi-stage-no-target",
        {
            "src/app.py": "app\n",
            "src/helper.py": "helper\n",
            "tests/test_app.py": "test\n",
            "config.yml": "a: 1\n",
            "README.md": "readme\n",
        },
        "FROM scratch AS build\nCOPY src/ /src/\n"
        "FROM build AS test\nCOPY tests/ /tests/\n"
        "FROM scratch\nCOPY --from=build /src/app.py /app/app.py\nCOPY config.yml /app/\n",
    ),
    Case(
        "multi-stage-target",
        {
            "src/app.py": "app\n",
            "tests/test_app.py": "test\n",
            "tests/data/sample.csv": "1,2\n",
            "config.yml": "a: 1\n",
            "README.md": "readme\n",
        },
        "FROM scratch AS build\nCOPY src/ /src/\n"
        "FROM build AS test\nCOPY tests/ /tests/\n"
        "FROM scratch AS runtime\nCOPY --from=build /src /app\nCOPY config.yml /app/\n",
        target="test",
        new_files=("tests/test_new.py", "src/new.py"),
    ),
    Case(
        "arg-driven-sources",
        {
            "svc_a/main.py": "a\n",
            "svc_b/main.py": "b\n",
            "defaults.cfg": "d\n",
            "custom.cfg": "c\n",
        },
        "ARG SERVICE=svc_a\nFROM scratch\nARG SERVICE\nARG CFG\n"
        "COPY ${SERVICE}/ /app/\nCOPY ${CFG:-defaults}.cfg /etc/app.cfg\n",
    ),
    Case(
        "build-args-override",
        {
            "svc_a/main.py": "a\n",
            "svc_b/main.py": "b\n",
            "svc_b/extra.py": "e\n",
            "defaults.cfg": "d\n",
            "custom.cfg": "c\n",
        },
        "ARG SERVICE=svc_a\nFROM scratch\nARG SERVICE\nARG CFG\n"
        "COPY ${SERVICE}/ /app/\nCOPY ${CFG:-defaults}.cfg /etc/app.cfg\n",
        build_args={"SERVICE": "svc_b", "CFG": "custom"},
    ),
    Case(
        "ignore-negation-double-star",
        {
            ".dockerignore": "**/*.tmp\ndocs\n!docs/keep.md\n**/cache\n",
            "a.tmp": "t\n",
            "sub/b.tmp": "t\n",
            "docs/guide.md": "g\n",
            "docs/keep.md": "k\n",
            "sub/cache/blob": "c\n",
            "src/s.py": "s\n",
        },
        "FROM scratch\nCOPY . /x/\n",
        # src/cache/x: a new file under a new directory that the ignore file hides.
        new_files=("docs/new.md", "src/cache/x", "sub/cache/more", "src/new.py"),
    ),
    Case(
        "dockerfile-outside-context",
        {
            "app/main.py": "m\n",
            "app/data/d.csv": "1\n",
            "app/unused.txt": "u\n",
            "docker/notes.txt": "n\n",
        },
        "FROM scratch\nCOPY main.py /app/\nCOPY data /app/data\n",
        context="app",
        dockerfile_name="../docker/app.Dockerfile",
        new_files=("app/data/e.csv", "app/other.txt"),
    ),
    Case(
        "copy-dot-dot",
        {
            "pkg/__init__.py": "",
            "pkg/core.py": "core\n",
            "setup.cfg": "[x]\n",
        },
        "FROM scratch\nWORKDIR /src\nCOPY . .\n",
        new_files=("pkg/extra.py",),
    ),
    Case(
        "globs",
        {
            "src/a.py": "a\n",
            "src/b.txt": "b\n",
            "src/sub/c.py": "c\n",
            "conf/a.yml": "a\n",
            "conf/c.yml": "c\n",
            "data/1.csv": "1\n",
            "data/10.csv": "10\n",
        },
        "FROM scratch\nCOPY src/*.py conf/[ab].yml /app/\nCOPY data/?.csv /data/\n",
        new_files=("src/new.py", "src/new.txt", "data/2.csv"),
    ),
    Case(
        "directories",
        {
            "lib/a.py": "a\n",
            "lib/deep/b.py": "b\n",
            "web/static/s.css": "s\n",
            "web/templates/t.html": "t\n",
        },
        "FROM scratch\nCOPY lib /lib\nCOPY web/static/ /static/\n",
        new_files=("lib/deep/new.py", "web/new.html"),
    ),
    Case(
        "copy-from-stage-with-run",
        {
            "gen/input.txt": "in\n",
            "gen/unused.txt": "unused\n",
            "app/run.sh": "echo run\n",
        },
        "FROM {BASE} AS gen\nCOPY gen/input.txt /work/\nRUN cat /work/input.txt > /work/out.txt\n"
        "FROM scratch\nCOPY --from=0 /work/out.txt /out.txt\nCOPY app/run.sh /run.sh\n",
    ),
    Case(
        "never-copied",
        {
            "only.txt": "o\n",
            "README.md": "r\n",
            "notes/a.md": "a\n",
            "scripts/build.sh": "b\n",
        },
        "FROM {BASE}\nRUN echo building > /built\nCOPY only.txt /only.txt\n",
        new_files=("notes/b.md",),
    ),
    Case(
        "env-in-source",
        {
            "conf/prod/app.ini": "p\n",
            "conf/dev/app.ini": "d\n",
            "bin/tool": "t\n",
        },
        "FROM scratch AS base\nENV CONF=conf/prod\nFROM base\nENV BIN=bin\n"
        "COPY $CONF/ /etc/app/\nCOPY ${BIN}/tool /usr/bin/tool\n",
    ),
    Case(
        "symlink-and-onbuild",
        {
            "releases/v2.conf": "v2\n",
            "releases/v1.conf": "v1\n",
            "current.conf": "->releases/v2.conf",
            "assets/logo.svg": "svg\n",
        },
        "FROM scratch AS base\nONBUILD COPY assets/ /assets/\n"
        "FROM base\nCOPY current.conf /etc/app.conf\n",
    ),
]

# Cases for what BuildKit reads differently: its ignore files, RUN --mount, the stages it
# builds, --chmod. Judged under both builders too: under the classic builder most of them
# fail, and so must the analysis.
CASES += [
    Case(
        "bk-dockerfile-ignore-replaces-root",
        {
            ".dockerignore": "a.txt\n",
            "Dockerfile.dockerignore": "b.txt\n",
            "a.txt": "a\n",
            "b.txt": "b\n",
            "c.txt": "c\n",
        },
        "FROM scratch\nCOPY . /c/\n",
        new_files=("d.txt",),
    ),
    Case(
        "bk-subdir-dockerfile-ignore",
        {
            ".dockerignore": "keep.txt\n",
            "docker/app.Dockerfile.dockerignore": "secret.txt\ndocker\n",
            "docker/notes.md": "n\n",
            "keep.txt": "k\n",
            "secret.txt": "s\n",
            "main.py": "m\n",
        },
        "FROM scratch\nCOPY . /c/\n",
        dockerfile_name="docker/app.Dockerfile",
        new_files=("docker/new.md", "new.py"),
    ),
    Case(
        "bk-dockerfile-outside-context-ignore",
        {
            "app/.dockerignore": "a.txt\n",
            "docker/app.Dockerfile.dockerignore": "b.txt\n",
            "app/a.txt": "a\n",
            "app/b.txt": "b\n",
            "app/c.txt": "c\n",
        },
        "FROM scratch\nCOPY . /c/\n",
        context="app",
        dockerfile_name="../docker/app.Dockerfile",
        # docker-py sends a Dockerfile from outside the context under a random name that
        # `COPY .` then copies: every classic build of it differs (pachhook's does not).
        builders=(BUILDKIT,),
    ),
    Case(
        "bk-ignore-names-dockerfile",
        {".dockerignore": "Dockerfile\n.dockerignore\n*.md\n", "a.py": "a\n", "README.md": "r\n"},
        "FROM scratch\nCOPY . /c/\n",
    ),
    Case(
        "bk-run-mount-bind-source",
        {"requirements.txt": "a==1\n", "other.txt": "o\n", "src/app.py": "print(1)\n"},
        "FROM {BASE}\n"
        "RUN --mount=type=bind,source=requirements.txt,target=/tmp/req.txt wc -l /tmp/req.txt > /n\n"
        "COPY src/ /app/\n",
        new_files=("src/new.py", "new.txt"),
    ),
    Case(
        "bk-run-mount-bind-output-ignores-content",
        {"req.txt": "r\n", "other.txt": "o\n"},
        "FROM {BASE}\nRUN --mount=type=bind,source=req.txt,target=/r true\n",
    ),
    Case(
        "bk-run-mount-bind-whole-context",
        {".dockerignore": "*.log\n", "a.py": "a\n", "b.py": "b\n", "x.log": "x\n"},
        "FROM {BASE}\nRUN --mount=type=bind,target=/ctx ls /ctx > /list\n",
        new_files=("c.py", "y.log"),
    ),
    Case(
        "bk-run-mount-bind-dir-source",
        {"src/a.py": "a\n", "src/b/c.py": "c\n", "other.py": "o\n"},
        'FROM {BASE}\nRUN --mount="type=bind,src=src,dst=/s" cat /s/a.py > /a\n',
        new_files=("src/b/new.py",),
    ),
    Case(
        "bk-run-mount-bind-from-stage",
        {"gen/input.txt": "in\n", "gen/unused.txt": "unused\n", "app/run.sh": "echo run\n"},
        "FROM {BASE} AS gen\nCOPY gen/input.txt /work/\nRUN cat /work/input.txt > /work/out.txt\n"
        "FROM {BASE}\nRUN --mount=type=bind,from=gen,source=/work/out.txt,target=/o cp /o /out.txt\n"
        "COPY app/run.sh /run.sh\n",
    ),
    Case(
        "bk-non-input-mounts",
        {"app.py": "a\n", "data.txt": "d\n", "cache-seed/x": "x\n"},
        "FROM {BASE}\n"
        "RUN --mount=type=cache,target=/root/.cache --mount=type=tmpfs,target=/t "
        "--mount=type=secret,id=tok --mount=type=ssh echo ok > /ok\n"
        "COPY app.py /app.py\n",
        new_files=("new.txt",),
    ),
    Case(
        "bk-cache-mount-from-stage",
        {"seed/a": "a\n", "app.py": "p\n", "unused.txt": "u\n"},
        "FROM {BASE} AS seed\nCOPY seed/ /seed/\n"
        "FROM {BASE}\nRUN --mount=type=cache,id=seeded,from=seed,source=/seed,target=/c ls /c > /x\n"
        "COPY app.py /app.py\n",
    ),
    Case(
        "bk-copy-chmod",
        {"run.sh": "#!/bin/sh\necho\n", "lib.txt": "l\n", "other.txt": "o\n"},
        "FROM scratch\nCOPY --chmod=755 run.sh /run.sh\nADD --chmod=600 lib.txt /lib.txt\n",
    ),
    Case(
        "bk-unneeded-stage-not-input",
        {
            "src/app.py": "app\n",
            "tests/test_app.py": "test\n",
            "config.yml": "a: 1\n",
            "README.md": "readme\n",
        },
        "FROM {BASE} AS build\nCOPY src/ /src/\n"
        "FROM {BASE} AS test\nCOPY tests/ /tests/\nRUN ls /tests > /t\n"
        "FROM scratch\nCOPY --from=build /src/app.py /app/app.py\nCOPY config.yml /app/\n",
        new_files=("tests/test_new.py",),
    ),
    Case(
        "bk-unneeded-stage-missing-source",
        {"src/app.py": "app\n", "config.yml": "a: 1\n"},
        "FROM {BASE} AS test\nCOPY tests/ /tests/\n"
        "FROM scratch\nCOPY src/ /app/\nCOPY config.yml /app/\n",
    ),
    Case(
        "bk-wildcard-matching-nothing",
        {"a.txt": "a\n", "sub/x.py": "x\n", "sub/y.py": "y\n"},
        "FROM scratch\nCOPY *.nope a.txt /c/\nCOPY sub/*.py /py\n",
        new_files=("b.nope", "sub/z.py"),
    ),
    Case(
        "bk-onbuild-run-mount",
        {"b.txt": "b\n", "c.txt": "c\n"},
        "FROM {BASE} AS first\n"
        "ONBUILD RUN --mount=type=bind,source=b.txt,target=/b cat /b > /bb\n"
        "FROM first\nRUN cat /bb > /copy\n",
    ),
]


class Judge(Protocol):
    builder: str

    def build(self, case: Case, repo: Path) -> str | None:
        """The image ID, or None when the builder fails on this case."""


class ClassicJudge:
    builder = CLASSIC

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client

    def build(self, case: Case, repo: Path) -> str | None:
        kwargs: dict[str, Any] = {
            "path": str(repo / case.context),
            "dockerfile": case.dockerfile_name,
            "rm": True,
            "forcerm": True,
        }
        if case.target:
            kwargs["target"] = case.target
        if case.build_args:
            kwargs["buildargs"] = dict(case.build_args)
        try:
            image, _ = self.client.images.build(**kwargs)
        except docker.errors.BuildError:
            return None
        return str(image.id)


class BuildKitJudge:
    """`DOCKER_BUILDKIT=1 docker build` from the folder, as a user types it (the engine of
    the tests has no bridge network, so its RUN steps need `--network none`)."""

    builder = BUILDKIT

    def __init__(self, cli: buildkit.Cli, host: str) -> None:
        self.cli = cli
        self.env = {**os.environ, "DOCKER_HOST": host, "DOCKER_BUILDKIT": "1"}

    def build(self, case: Case, repo: Path) -> str | None:
        image = ImageConfig(name="judge", context=case.context, dockerfile=case.dockerfile_name)
        with tempfile.TemporaryDirectory(prefix="judge-") as tmp:
            iid = os.path.join(tmp, "iid")
            argv = [self.cli.path, "build", "--network", "none", "-q", "--iidfile", iid]
            argv += ["-f", str(repo / image.dockerfile_path)]
            if case.target:
                argv += ["--target", case.target]
            for key, value in case.build_args.items():
                argv += ["--build-arg", f"{key}={value}"]
            argv.append(str(repo / case.context))
            done = subprocess.run(argv, env=self.env, capture_output=True, timeout=300)
            if done.returncode != 0:
                return None
            return Path(iid).read_text().strip()


def _write(repo: Path, path: str, content: str) -> None:
    full = repo / path
    full.parent.mkdir(parents=True, exist_ok=True)
    if content.startswith("->"):
        os.symlink(content[2:], full)
    else:
        full.write_text(content)


def _config(case: Case) -> ImageConfig:
    return ImageConfig(
        name=f"judge/{case.name}",
        context=case.context,
        dockerfile=case.dockerfile_name,
        target=case.target,
        build_args=dict(case.build_args),
    )


def _inputs(case: Case, repo: Path, paths: list[str], builder: str) -> set[str]:
    def read(path: str) -> bytes | None:
        # What the working-tree source gives: a symlink's target, else the bytes.
        full = repo / path
        if full.is_symlink():
            return os.fsencode(os.readlink(full))
        return full.read_bytes() if full.is_file() else None

    return set(image_inputs(_config(case), sorted(paths), read, builder=builder))


@dataclass
class Score:
    name: str
    changed: set[str] = field(default_factory=set)  # changes that changed the image
    listed: set[str] = field(default_factory=set)  # changes listed among the inputs
    tried: int = 0
    fails: bool = False  # the builder fails on the case (and so does the analysis)

    @property
    def missed(self) -> set[str]:
        return self.changed - self.listed

    @property
    def useless(self) -> set[str]:
        return self.listed - self.changed

    def line(self) -> str:
        if self.fails:
            return f"{self.name:40} the builder fails, and so does the analysis"
        hits = len(self.changed & self.listed)
        recall = hits / len(self.changed) if self.changed else 1.0
        precision = hits / len(self.listed) if self.listed else 1.0
        return (
            f"{self.name:40} tried {self.tried:2}  changed {len(self.changed):2}  "
            f"listed {len(self.listed):2}  recall {recall:6.1%}  precision {precision:6.1%}"
            + (f"  listed-but-inert {sorted(self.useless)}" if self.useless else "")
        )


def judge_case(judge: Judge, base: str, case: Case, repo: Path) -> Score:
    files = {path: content.replace("{BASE}", base) for path, content in case.files.items()}
    image = _config(case)
    files[image.dockerfile_path] = case.dockerfile.replace("{BASE}", base)
    for path, content in files.items():
        _write(repo, path, content)
    paths = sorted(files)
    score = Score(case.name)
    baseline = judge.build(case, repo)
    if baseline is None:
        with pytest.raises(InputError):
            _inputs(case, repo, paths, judge.builder)
        score.fails = True
        return score
    inputs = _inputs(case, repo, paths, judge.builder)
    in_force = ignore_file(image, judge.builder, lambda path: path in files)
    always = {image.dockerfile_path, *([in_force] if in_force else [])}
    prefix = "" if case.context == "." else case.context + "/"

    for path in paths:
        if not path.startswith(prefix) or path in always or files[path].startswith("->"):
            continue
        score.tried += 1
        full = repo / path
        full.write_text(files[path] + f"changed {secrets.token_hex(8)}\n")
        try:
            if judge.build(case, repo) != baseline:
                score.changed.add(path)
        finally:
            full.write_text(files[path])
        if path in inputs:
            score.listed.add(path)

    for path in case.new_files:
        score.tried += 1
        _write(repo, path, f"new {secrets.token_hex(8)}\n")
        try:
            if judge.build(case, repo) != baseline:
                score.changed.add(path)
            if path in _inputs(case, repo, [*paths, path], judge.builder):
                score.listed.add(path)
        finally:
            (repo / path).unlink()
    return score


def _judge(builder: str, engine: services.DockerEngine) -> Judge:
    if builder == CLASSIC:
        return ClassicJudge(docker.DockerClient(base_url=engine.host, timeout=120))
    cli, rejected = buildkit.find_cli({**os.environ, "DOCKER_HOST": engine.host})
    if cli is None:
        unavailable(f"no Docker CLI here builds with BuildKit: {rejected}")
    return BuildKitJudge(cli, engine.host)


@pytest.mark.parametrize("builder", [CLASSIC, BUILDKIT])
def test_docker_judges_image_inputs(
    builder: str, docker_engine: services.DockerEngine, base_image: str, tmp_path: Path
) -> None:
    judge = _judge(builder, docker_engine)
    scores = []
    try:
        for case in (c for c in CASES if builder in c.builders):
            repo = tmp_path / case.name
            repo.mkdir()
            scores.append(judge_case(judge, base_image, case, repo))
    finally:
        if isinstance(judge, ClassicJudge):
            judge.client.close()

    judged = [s for s in scores if not s.fails]
    hits = sum(len(s.changed & s.listed) for s in judged)
    listed = sum(len(s.listed) for s in judged)
    changed = sum(len(s.changed) for s in judged)
    precision = hits / listed if listed else 1.0
    print(f"\n{builder}:")
    for score in scores:
        print(score.line())
    print(
        f"{'total':40} tried {sum(s.tried for s in judged):2}  changed {changed:2}  "
        f"listed {listed:2}  recall {hits / changed if changed else 1.0:6.1%}  "
        f"precision {precision:6.1%}"
    )

    missed = {s.name: sorted(s.missed) for s in judged if s.missed}
    assert not missed, f"files that change the image but are not inputs: {missed}"
    assert len(judged) >= 14
    assert precision >= PRECISION_FLOOR
    # The judge must have seen both outcomes, or it judged nothing.
    assert changed > 0 and sum(s.tried for s in judged) > changed
