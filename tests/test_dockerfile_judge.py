"""Docker is the judge of `image_inputs`.

For each case: write a small repository into a temporary folder, build the image
with the real engine (Docker 20.10's classic builder through docker-py, as
pachhook builds), then change each file of the context in turn (and add a few
new files), rebuild, and compare image IDs with the first build.

- Every file whose change changes the image must be among the inputs (recall
  100%, in every case).
- Inputs whose change never changes the image must be few: precision over all
  cases, not counting the Dockerfile and the ignore file, at least 90%.

Each change writes new content (a fresh token), so no build can reuse a cached
step for it; a file whose change leaves the image ID unchanged therefore left
every cache key of the build unchanged. Run with `pytest -s` to see the figures.

docker-py's own ignore-file matching decides what each build sends, so the
judge does not lean on pachhook.dockerignore. One thing it sends that git (and
pachhook's context tar, which holds files and their parent directories only)
cannot have: a directory whose files are all ignored, as an empty directory. A
new file is therefore never added where it alone would create such a directory.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest

from pachhook.config import ImageConfig
from pachhook.docker.inputs import image_inputs

pytestmark = pytest.mark.docker

PRECISION_FLOOR = 0.90


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


class Judge:
    def __init__(self, client: docker.DockerClient, base: str, root: Path) -> None:
        self.client = client
        self.base = base
        self.root = root

    def build(self, case: Case, repo: Path) -> str:
        context = repo / case.context
        kwargs: dict[str, Any] = {
            "path": str(context),
            "dockerfile": case.dockerfile_name,
            "rm": True,
            "forcerm": True,
        }
        if case.target:
            kwargs["target"] = case.target
        if case.build_args:
            kwargs["buildargs"] = dict(case.build_args)
        image, _ = self.client.images.build(**kwargs)
        return str(image.id)


def _write(repo: Path, path: str, content: str) -> None:
    full = repo / path
    full.parent.mkdir(parents=True, exist_ok=True)
    if content.startswith("->"):
        os.symlink(content[2:], full)
    else:
        full.write_text(content)


def _inputs(case: Case, repo: Path, paths: list[str]) -> set[str]:
    image = ImageConfig(
        name=f"judge/{case.name}",
        context=case.context,
        dockerfile=case.dockerfile_name,
        target=case.target,
        build_args=dict(case.build_args),
    )

    def read(path: str) -> bytes | None:
        # What the working-tree source gives: a symlink's target, else the bytes.
        full = repo / path
        if full.is_symlink():
            return os.fsencode(os.readlink(full))
        return full.read_bytes() if full.is_file() else None

    return set(image_inputs(image, sorted(paths), read))


@dataclass
class Score:
    name: str
    changed: set[str] = field(default_factory=set)  # changes that changed the image
    listed: set[str] = field(default_factory=set)  # changes listed among the inputs
    tried: int = 0

    @property
    def missed(self) -> set[str]:
        return self.changed - self.listed

    @property
    def useless(self) -> set[str]:
        return self.listed - self.changed

    def line(self) -> str:
        hits = len(self.changed & self.listed)
        recall = hits / len(self.changed) if self.changed else 1.0
        precision = hits / len(self.listed) if self.listed else 1.0
        return (
            f"{self.name:30} tried {self.tried:2}  changed {len(self.changed):2}  "
            f"listed {len(self.listed):2}  recall {recall:6.1%}  precision {precision:6.1%}"
            + (f"  listed-but-inert {sorted(self.useless)}" if self.useless else "")
        )


def judge_case(judge: Judge, case: Case, repo: Path) -> Score:
    files = {path: content.replace("{BASE}", judge.base) for path, content in case.files.items()}
    image = ImageConfig(name="judge", context=case.context, dockerfile=case.dockerfile_name)
    files[image.dockerfile_path] = case.dockerfile.replace("{BASE}", judge.base)
    for path, content in files.items():
        _write(repo, path, content)
    paths = sorted(files)
    inputs = _inputs(case, repo, paths)
    always = {image.dockerfile_path, _join(case.context, ".dockerignore")}
    baseline = judge.build(case, repo)
    score = Score(case.name)
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
            if path in _inputs(case, repo, [*paths, path]):
                score.listed.add(path)
        finally:
            (repo / path).unlink()
    return score


def _join(context: str, name: str) -> str:
    return name if context == "." else f"{context}/{name}"


def test_docker_judges_image_inputs(docker_engine: Any, base_image: str, tmp_path: Path) -> None:
    client = docker.DockerClient(base_url=docker_engine.host, timeout=120)
    judge = Judge(client, base_image, tmp_path)
    scores = []
    try:
        for case in CASES:
            repo = tmp_path / case.name
            repo.mkdir()
            scores.append(judge_case(judge, case, repo))
    finally:
        client.close()

    hits = sum(len(s.changed & s.listed) for s in scores)
    listed = sum(len(s.listed) for s in scores)
    changed = sum(len(s.changed) for s in scores)
    precision = hits / listed if listed else 1.0
    print()
    for score in scores:
        print(score.line())
    print(
        f"{'total':30} tried {sum(s.tried for s in scores):2}  changed {changed:2}  "
        f"listed {listed:2}  recall {hits / changed if changed else 1.0:6.1%}  "
        f"precision {precision:6.1%}"
    )

    missed = {s.name: sorted(s.missed) for s in scores if s.missed}
    assert not missed, f"files that change the image but are not inputs: {missed}"
    assert len(CASES) >= 12
    assert precision >= PRECISION_FLOOR
    # The judge must have seen both outcomes, or it judged nothing.
    assert changed > 0 and sum(s.tried for s in scores) > changed
