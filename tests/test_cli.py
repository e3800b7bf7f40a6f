"""The command line as users run it: a real process, real repositories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import commit, git, init_repo, spec

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "housing-prices"


def pachhook(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("PACHYDERM_", "DOCKER_IMAGE"))
    }
    return subprocess.run(
        [sys.executable, "-m", "pachhook", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
    )


@pytest.fixture
def example(tmp_path: Path) -> Path:
    root = init_repo(tmp_path / "housing")
    subprocess.run(["cp", "-R", f"{EXAMPLE}/.", str(root)], check=True)
    commit(root, "example")
    return root


def test_plan_json_contract(example: Path):
    base = git(example, "rev-parse", "HEAD")
    commit(
        example, "tune", {"src/utils.py": (example / "src/utils.py").read_text() + "\n# tuned\n"}
    )
    out = pachhook(example, "plan", "--from", base, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["changed_files"] == ["src/utils.py"]
    (image,) = data["images"]
    assert set(image) >= {"name", "context", "dockerfile", "target", "tag", "action", "reasons"}
    assert image["name"] == "docker.io/acme/housing-prices" and image["action"] == "build"
    assert image["tag"].startswith("ph-") and len(image["tag"]) == 15
    assert image["reasons"] == [{"path": "src/utils.py", "why": "input changed"}]
    (pipeline,) = data["pipelines"]
    assert pipeline == {
        "name": "regression",
        "project": "default",
        "spec_file": "regression.json",
        "image": f"docker.io/acme/housing-prices:{image['tag']}",
        "action": "update",
        "reasons": [{"path": "src/utils.py", "why": "image docker.io/acme/housing-prices changed"}],
    }


def test_plan_human_lines(example: Path):
    out = pachhook(example, "plan", "--all")
    assert out.returncode == 0
    assert "build  docker.io/acme/housing-prices:ph-" in out.stdout
    assert "update default/regression  regression.json:1" in out.stdout


def test_change_no_image_copies_is_nothing_to_do(example: Path):
    base = git(example, "rev-parse", "HEAD")
    commit(
        example, "more data", {"data/housing-simplified-1.csv": "RM\n1\n", "README.md": "changed\n"}
    )
    out = pachhook(example, "plan", "--from", base, "--json")
    data = json.loads(out.stdout)
    assert out.returncode == 0
    assert [i["action"] for i in data["images"]] == ["skip"]
    assert [p["action"] for p in data["pipelines"]] == ["skip"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (
            {"pachhook.toml": "jobs = 0\n"},
            "pachhook: pachhook.toml:1: jobs: got 0; expected a whole number",
        ),
        (
            {"regression.json": '{"pipeline": {"name": "regression"},\n "transform": {'},
            "pachhook: regression.json:2: not valid JSON",
        ),
        (
            {"Dockerfile": None},
            "pachhook: pachhook.toml: image[0].dockerfile: 'Dockerfile' of image docker.io/acme/housing-prices does not exist",
        ),
    ],
)
def test_bad_input_one_line_exit_2_no_traceback(
    example: Path, files: dict[str, str | None], message: str
):
    for name, text in files.items():
        if text is None:
            (example / name).unlink()
        else:
            (example / name).write_text(text)
    out = pachhook(example, "plan", "--all", "--working-tree")
    assert out.returncode == 2
    # One line: --working-tree reads the changed pachhook.toml, so no note about it.
    errors = out.stderr.splitlines()
    assert errors and errors[0].startswith(message), out.stderr
    assert len(errors) == 1 and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_usage_errors_exit_2(example: Path, tmp_path: Path):
    assert pachhook(example, "plan", "--bogus").returncode == 2
    assert pachhook(example, "nope").returncode == 2
    out = pachhook(tmp_path, "plan", "--all")
    assert out.returncode == 2 and "not inside a git work tree" in out.stderr
    out = pachhook(example, "plan", "--to", "HEAD")
    assert out.returncode == 2 and "--to needs --from" in out.stderr


@pytest.mark.parametrize("command", ["plan", "run", "deps", "explain", "init"])
def test_help_for_each_command(example: Path, command: str):
    out = pachhook(example, command, "--help")
    assert out.returncode == 0 and "usage: pachhook " + command in out.stdout


def test_deps_and_explain(example: Path):
    out = pachhook(example, "deps", "docker.io/acme/housing-prices", "--json")
    data = json.loads(out.stdout)
    assert data["image"] == "docker.io/acme/housing-prices"
    assert {"Dockerfile", ".dockerignore", "src/regression.py", "src/utils.py"} <= set(
        data["inputs"]
    )
    plain = pachhook(example, "deps", "acme/housing-prices").stdout.split()
    assert plain == data["inputs"]
    out = pachhook(example, "deps", "nope/nope")
    assert out.returncode == 2 and "no image named 'nope/nope'" in out.stderr
    out = pachhook(example / "src", "explain", "utils.py", "../regression.json")
    assert "src/utils.py:" in out.stdout and "image docker.io/acme/housing-prices" in out.stdout
    assert "spec of pipeline default/regression (regression.json:1)" in out.stdout


def test_init_discovers_and_never_overwrites(tmp_path: Path):
    root = init_repo(tmp_path / "fresh")
    commit(
        root,
        "start",
        {
            "app/Dockerfile": "FROM scratch\nCOPY . /\n",
            "app/main.py": "x\n",
            "specs/a.json": spec("a", "docker.io/team/app:1", "raw"),
            "specs/b.yaml": "pipeline: {name: b}\ntransform: {image: 'docker.io/team/app:1'}\ninput: {pfs: {repo: a}}\n",
        },
    )
    out = pachhook(root, "init")
    assert out.returncode == 0, out.stderr
    text = (root / "pachhook.toml").read_text()
    assert 'name = "docker.io/team/app"' in text and 'context = "app"' in text
    assert 'include = ["specs/*.json", "specs/*.yaml"]' in text
    again = pachhook(root, "init")
    assert again.returncode == 2 and "already exists" in again.stderr
    (root / "pachhook.toml").write_text("# mine\n")
    assert (
        pachhook(root, "init").returncode == 2
        and (root / "pachhook.toml").read_text() == "# mine\n"
    )
    assert pachhook(root, "init", "--force").returncode == 0
    assert (root / "pachhook.toml").read_text() == text
    plan = pachhook(root, "plan", "--all", "--working-tree", "--json")
    assert plan.returncode == 0, plan.stderr
    assert [p["image"].split(":")[0] for p in json.loads(plan.stdout)["pipelines"]] == [
        "docker.io/team/app"
    ] * 2


def test_seed_variables_plan_without_config(tmp_path: Path):
    root = init_repo(tmp_path / "seed")
    commit(
        root,
        "seed",
        {
            "Dockerfile": "FROM scratch\nCOPY regression.py /\n",
            "regression.py": "x\n",
            "regression.json": spec("regression", "pachyderm/housing-prices:abc", "housing_data"),
        },
    )
    env = {
        "DOCKER_IMAGE_TAG": "pachyderm/housing-prices",
        "PACHYDERM_PIPELINE_FILES": "regression.json",
    }
    data = json.loads(pachhook(root, "plan", "--all", "--json", env=env).stdout)
    assert data["images"][0]["name"] == "pachyderm/housing-prices"
    assert data["pipelines"][0]["image"] == "pachyderm/housing-prices:" + data["images"][0]["tag"]


def test_init_respects_a_pyproject_table(tmp_path: Path):
    root = init_repo(tmp_path / "py")
    table = '[project]\nname = "x"\n\n[[tool.pachhook.image]]\nname = "docker.io/team/app"\ncontext = "app"\n'
    commit(root, "start", {"pyproject.toml": table, "app/Dockerfile": "FROM scratch\nCOPY . /\n"})
    out = pachhook(root, "init")
    assert out.returncode == 2 and "already holds [tool.pachhook]" in out.stderr
    assert not (root / "pachhook.toml").exists()
    assert pachhook(root, "init", "--force").returncode == 0
    assert (root / "pachhook.toml").exists()
