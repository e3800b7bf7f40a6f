"""The GitHub Action (action.yml), run as a GitHub runner runs a composite action
(tests/actions_runner.py): each `run:` step written to a script and run with
`bash --noprofile --norc -e -o pipefail`, fresh GITHUB_OUTPUT / GITHUB_ENV / GITHUB_PATH /
GITHUB_STEP_SUMMARY files per step, GITHUB_EVENT_PATH holding a push payload, and the
inputs reaching the steps only through `${{ inputs.x }}` in the action's own `env:` (the
runner sets no INPUT_* variables for a composite action's steps). The workspace is a
`git clone --depth 1` made with the commands actions/checkout runs, so HEAD is its own
upstream. pachhook is installed by the action's own step, from this checkout, into a tool
cache the module's tests share (as a self-hosted runner keeps it). The engine, the
registries and pachd (the double, or PACHHOOK_TEST_PACHD) are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import e2e, services
from tests.actions_runner import ZERO_SHA, ActionRun, checkout, load_action, push_event, run_action
from tests.cluster import DoubleTarget, Target
from tests.helpers import GIT_ENV, commit, git, init_repo, write

ROOT = Path(__file__).resolve().parent.parent
ACTION = load_action(ROOT)


@pytest.fixture(scope="module")
def tool_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUNNER_TOOL_CACHE for the module: the first run of the action installs pachhook."""
    return tmp_path_factory.mktemp("toolcache")


@dataclass
class Job:
    """A repository on a remote, and the jobs a push to it starts."""

    root: Path  # where commits are made
    origin: Path  # the bare remote that actions/checkout fetches from
    home: Path
    tool_cache: Path
    env: dict[str, str]  # the job's env: (workflow and job `env:`)
    secrets: list[str]
    runs: int = 0
    workspaces: list[Path] = field(default_factory=list)

    def push(self, message: str, files: dict[str, Any]) -> tuple[str, str]:
        before = git(self.root, "rev-parse", "HEAD")
        after = commit(self.root, message, files)
        git(self.root, "push", "-q", "origin", "main")
        return before, after

    def run(self, before: str, after: str, **inputs: str) -> ActionRun:
        """The workflow's job for a push: actions/checkout (depth 1), then the action."""
        self.runs += 1
        workspace = self.root.parent / f"workspace-{self.runs}"
        checkout(f"file://{self.origin}", workspace, sha=after, ref="refs/heads/main")
        self.workspaces.append(workspace)
        assert git(workspace, "rev-parse", "--is-shallow-repository") == "true"
        assert git(workspace, "rev-parse", "@{upstream}") == after  # the trap
        return run_action(
            ACTION,
            inputs=inputs,
            workspace=workspace,
            event=push_event(before=before, after=after, repository="acme/data"),
            env=self.env,
            base_env={
                "PATH": os.environ["PATH"],
                "HOME": str(self.home),
                "LANG": "C.UTF-8",
                **GIT_ENV,
            },
            secrets=self.secrets,
            runner_temp=self.root.parent / f"runner-temp-{self.runs}",
            tool_cache=self.tool_cache,
        )

    def places(self, result: ActionRun) -> list[Path]:
        """Every file a secret must not be in: the runner's temp (scripts, file commands,
        the summary), the workspaces (with pachhook's ledger and logs under .git)."""
        return [result.runner_temp, *self.workspaces]


def make_job(
    tmp_path: Path, files: dict[str, Any], env: dict[str, str], secrets: list[str], cache: Path
) -> Job:
    root = init_repo(tmp_path / "src")
    write(root, files)
    commit(root, "initial")
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(root), str(origin)], check=True)
    git(root, "remote", "add", "origin", str(origin))
    git(root, "fetch", "-q", "origin")
    home = tmp_path / "runner-home"
    home.mkdir()
    return Job(root, origin, home, cache, env, secrets)


def as_list(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list)
    return value


def assert_no_secret(job: Job, result: ActionRun) -> None:
    for secret in job.secrets:
        leaks = result.find_secret(secret, *job.places(result))
        assert leaks == [], leaks


def log_of(result: ActionRun) -> str:
    return "\n".join(result.log)


# -- a repository with a pachhook config: two images, four pipelines ----------------------------


@pytest.fixture
def job(
    tmp_path: Path,
    pachd: Target,
    project: str,
    docker_engine: services.DockerEngine,
    base_image: str,
    auth_registry: Callable[[str, str], services.Registry],
    tool_cache: Path,
) -> Iterator[tuple[Job, services.Registry]]:
    password = "pw-" + uuid.uuid4().hex
    registry = auth_registry("ci-bot", password)
    pachd.create_repo("raw", project)
    made = e2e.make_repo(
        tmp_path / "seedless",
        pachd,
        project,
        f"{registry.address}/{project}/app",
        f"{registry.address}/{project}/tools",
        base_image,
        docker_engine.host,
    )
    files = {
        str(p.relative_to(made.root)): p.read_bytes()
        for p in made.root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(made.root).parts
    }
    secrets = [password] + ([pachd.token] if pachd.token else [])
    env = {"DOCKER_HOST": docker_engine.host}  # the job's env: where its engine is
    yield make_job(tmp_path, files, env, secrets, tool_cache), registry


def versions(pachd: Target, project: str) -> dict[str, int]:
    return {name: p.version for name, p in pachd.pipelines(project).items()}


@pytest.mark.docker
def test_push_jobs_build_and_deploy_only_what_each_commit_needs(
    job: tuple[Job, services.Registry], pachd: Target, project: str
) -> None:
    ci, registry = job
    inputs = {
        "pachyderm-cluster-url": pachd.address,
        "pachyderm-token": pachd.token or "",
        "registry": registry.address,
        "registry-username": "ci-bot",
        "registry-password": ci.secrets[0],
    }
    app, tools = f"{registry.address}/{project}/app", f"{registry.address}/{project}/tools"
    names = [f"{project}/{n}" for n in ("clean", "features", "stats", "report")]

    # 1. The first push: the clone holds one commit and the cluster nothing.
    head = git(ci.root, "rev-parse", "HEAD")
    first = ci.run(ZERO_SHA, head, **inputs)
    assert first.ok, log_of(first)
    assert sorted(r.rsplit(":", 1)[0] for r in as_list(first.outputs["images"])) == [app, tools]
    assert as_list(first.outputs["pipelines"]) == names  # upstream first
    assert first.outputs["changed"] == "true"
    assert first.outputs["exit-code"] == "0"
    assert versions(pachd, project) == {"clean": 1, "features": 1, "stats": 1, "report": 1}
    if isinstance(pachd, DoubleTarget):
        (applied,) = pachd.double.applied_transactions()
        assert first.outputs["transaction"] == applied.id
    assert first.summary.count("| built in ") == 2
    assert first.summary.count("| created |") == 4
    # GitHub's log: one collapsed group per built image; inputs only as env, no INPUT_*.
    assert sum(line.startswith(f"##[group]{app}:") for line in first.log) == 1
    step = first.step("pachhook")
    assert not [k for k in step.env if k.startswith("INPUT_")]
    assert f"::add-mask::{ci.secrets[0]}" in step.stderr.splitlines()  # pachhook masks too
    # The login lives in the action's own Docker config, removed at the end.
    assert not (Path(first.step("prepare").outputs["dir"]) / "docker").exists()
    assert_no_secret(ci, first)

    # 2. A commit that touches one image: that image is built, its two pipelines updated.
    before, after = ci.push("tune the cleaner", {"app/main.sh": "echo clean v2\n"})
    second = ci.run(before, after, **inputs)
    assert second.ok, log_of(second)
    assert [r.rsplit(":", 1)[0] for r in as_list(second.outputs["images"])] == [app]
    assert as_list(second.outputs["pipelines"]) == names[:2]
    assert second.outputs["changed"] == "true" and second.outputs["transaction"]
    assert versions(pachd, project) == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    summary = second.summary
    assert summary.count("| built in ") == 1 and summary.count("| found in the registry |") == 1
    assert summary.count("| updated |") == 2 and summary.count("| unchanged |") == 2
    assert "the cluster already runs this spec" in summary
    assert_no_secret(ci, second)

    # 3. A commit that touches nothing an image or a spec reads: nothing, and it says so.
    before, after = ci.push("docs", {"README.md": "# data project\n\nMore words.\n"})
    third = ci.run(before, after, **inputs)
    assert third.ok, log_of(third)
    assert third.outputs["images"] == "[]" and third.outputs["pipelines"] == "[]"
    assert third.outputs["changed"] == "false" and third.outputs["transaction"] == ""
    assert versions(pachd, project) == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    assert "nothing to do" in third.summary.splitlines()[0]
    assert "| built in" not in third.summary and "| updated |" not in third.summary
    assert third.summary.count("| found in the registry |") == 2
    assert_no_secret(ci, third)


@pytest.mark.docker
def test_a_failing_build_is_an_annotation_on_its_dockerfile_line(
    job: tuple[Job, services.Registry], pachd: Target, project: str
) -> None:
    ci, registry = job
    inputs = {
        "pachyderm-cluster-url": pachd.address,
        "pachyderm-token": pachd.token or "",
        "registry": registry.address,
        "registry-username": "ci-bot",
        "registry-password": ci.secrets[0],
    }
    dockerfile = (ci.root / "tools" / "Dockerfile").read_text()
    before, after = ci.push("break tools", {"tools/Dockerfile": dockerfile + "RUN exit 3\n"})
    result = ci.run(before, after, **inputs)
    assert result.conclusion == "failure"
    assert result.outputs["exit-code"] == "1"
    assert result.outputs["pipelines"] == "[]" and result.outputs["transaction"] == ""
    errors = [a for a in result.errors() if a.properties.get("title") == "image failed"]
    assert len(errors) == 1, result.annotations
    assert errors[0].properties["file"] == "tools/Dockerfile"
    assert errors[0].properties["line"] == str(len(dockerfile.splitlines()) + 1)
    assert "pachhook run failed" in result.summary
    assert versions(pachd, project) == {}  # nothing deployed: one image failed
    assert result.steps[-1].outcome == "success"  # the login is removed all the same
    assert_no_secret(ci, result)


# -- the seed's own layout: one Dockerfile, regression.json, the seed's env, no config --------


@pytest.mark.docker
def test_the_seeds_layout_and_env_work_unchanged(
    tmp_path: Path,
    pachd: Target,
    project: str,
    docker_engine: services.DockerEngine,
    base_image: str,
    registry: services.Registry,
    tool_cache: Path,
) -> None:
    pachd.create_repo("housing_data", project)
    image = f"{registry.address}/acme/housing-prices"
    spec = {
        "pipeline": {"name": "regression", "project": {"name": project}},
        "description": "A pipeline that fits a linear regression to housing prices.",
        "input": {"pfs": {"glob": "/*", "repo": "housing_data"}},
        "transform": {
            "cmd": ["python3", "/code/regression.py"],
            "image": f"{image}:1.0.0",
        },
    }
    files = {
        "Dockerfile": f"FROM {base_image}\nWORKDIR /code\nCOPY src/ /code/\n",
        "src/regression.py": "print('fit')\n",
        "regression.json": spec,
        "README.md": "# housing prices\n",
    }
    token = "dckr_pat_" + uuid.uuid4().hex
    seed_env = {  # the seed's workflow, as it is: a job-level env: and nothing else
        "PACHYDERM_CLUSTER_URL": pachd.address,
        "DOCKER_IMAGE_TAG": image,
        "PACHYDERM_PIPELINE_FILES": "regression.json",
        "DOCKERHUB_USERNAME": "acme",
        "DOCKERHUB_TOKEN": token,
        "DOCKER_HOST": docker_engine.host,
    }
    if pachd.token:
        seed_env["PACHYDERM_TOKEN"] = pachd.token
    secrets = [token] + ([pachd.token] if pachd.token else [])
    ci = make_job(tmp_path, files, seed_env, secrets, tool_cache)

    first = ci.run(ZERO_SHA, git(ci.root, "rev-parse", "HEAD"))
    assert first.ok, log_of(first)
    (pushed,) = as_list(first.outputs["images"])
    assert pushed.startswith(f"{image}:ph-")
    assert as_list(first.outputs["pipelines"]) == [f"{project}/regression"]
    deployed = pachd.pipelines(project)["regression"]
    assert deployed.image == pushed and deployed.version == 1
    assert registry.has_manifest("acme/housing-prices", pushed.rsplit(":", 1)[1])
    assert_no_secret(ci, first)

    before, after = ci.push("code", {"src/regression.py": "print('fit better')\n"})
    second = ci.run(before, after)
    assert second.ok, log_of(second)
    assert as_list(second.outputs["pipelines"]) == [f"{project}/regression"]
    assert pachd.pipelines(project)["regression"].version == 2
    assert_no_secret(ci, second)


def test_the_action_file_passes_the_emulators_checks() -> None:
    assert ACTION.warnings == ()  # no ${{ }} inserted into a script's text
    assert [s.id for s in ACTION.steps] == ["prepare", "install", "login", "pachhook", None]
    for step in ACTION.steps:
        assert "${{" not in step.run, step.label


def test_the_constraints_hold_every_dependency_at_one_version() -> None:
    pinned = {}
    for line in (ROOT / "action-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, line
            pinned[name.lower().replace("_", "-")] = version
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in declared:
        name = requirement.split(">")[0].split("<")[0].split("=")[0].strip().lower()
        assert name.replace("_", "-") in pinned, requirement


@pytest.mark.parametrize("name", ["push.yaml", "pull-request.yaml"])
def test_the_examples_use_the_actions_own_inputs_and_outputs(name: str) -> None:
    import re

    import yaml

    text = (ROOT / "examples" / "github-actions" / name).read_text()
    workflow = yaml.safe_load(text)
    uses = [
        (job_id, step)
        for job_id, job in workflow["jobs"].items()
        for step in job["steps"]
        if str(step.get("uses", "")).endswith("/pachhook@v1")
    ]
    assert uses, name
    inputs = {i.name for i in ACTION.inputs.values()}
    outputs = {o.name for o in ACTION.outputs.values()}
    for _, step in uses:
        assert set(step.get("with", {})) <= inputs, step
        for referred in re.findall(rf"steps\.{step['id']}\.outputs\.([\w-]+)", text):
            assert referred in outputs, referred
