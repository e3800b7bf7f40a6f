"""`pachhook run` end to end: the real command on a real git repository, with the real
Docker engine and registry (tests/conftest.py) and the pachd double, or the cluster
named by PACHHOOK_TEST_PACHD (see tests/test_deploy.py).

The repository (tests/e2e.py) has two images and four pipelines in a DAG, in JSON and in
a multi-document YAML file:

    raw -> clean (app) -> features (app) -> report (tools)
                       -> stats (tools)  ->

Run with -s to see the wall times of a one-image, two-pipeline change and of a no-op.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import services
from tests.cluster import DoubleTarget, Target, closed_port
from tests.e2e import Repo, first_run
from tests.helpers import unavailable

# -- a registry of the test's own, that can be stopped or made read-only --------------------


@dataclass
class OwnRegistry:
    root: Path
    port: int = field(default_factory=services.free_port)
    process: services.ManagedProcess | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, readonly: bool = False) -> OwnRegistry:
        storage: dict[str, Any] = {"filesystem": {"rootdirectory": str(self.root / "data")}}
        if readonly:
            # distribution's read-only mode: pulls work, every push is refused.
            storage["maintenance"] = {"readonly": {"enabled": True}}
        config = {
            "version": "0.1",
            "log": {"level": "info"},
            "storage": storage,
            "http": {"addr": self.address, "secret": uuid.uuid4().hex},
        }
        path = self.root / "config.yml"
        path.write_text(json.dumps(config))
        binary = services.require_binary("docker-registry")
        self.process = services.ManagedProcess(
            "docker-registry", [binary, "serve", str(path)], self.root / "registry.log"
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=2):
                    return self
            except OSError:
                if time.monotonic() > deadline or not self.process.running():
                    raise services.ServiceError(self.process.log_tail()) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def has(self, repository: str, tag: str) -> bool:
        return services.RegistryClient(f"http://{self.address}").has_manifest(repository, tag)


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[OwnRegistry]:
    try:
        registry = OwnRegistry(Path(services.short_tempdir("reg-"))).start()
    except (services.ServiceError, OSError) as exc:
        unavailable(f"could not start a registry: {exc}")
    try:
        yield registry
    finally:
        registry.stop()
        services.remove_tree(registry.root)


# -- the repository (tests/e2e.py) -------------------------------------------------------------


def reset_calls(pachd: Target) -> None:
    if isinstance(pachd, DoubleTarget):
        pachd.double.reset_calls()


def calls(pachd: Target) -> int | None:
    return pachd.double.call_count() if isinstance(pachd, DoubleTarget) else None


# -- the scenarios ------------------------------------------------------------------------------


@pytest.mark.docker
def test_first_run_creates_everything_in_dag_order_then_does_nothing(repo: Repo) -> None:
    proc = repo.ok("run", "--all")
    deployed = repo.pachd.pipelines(repo.project)
    assert {name: p.version for name, p in deployed.items()} == {
        "clean": 1,
        "features": 1,
        "stats": 1,
        "report": 1,
    }
    record = first = repo.last_run()
    assert record["error"] is None
    assert sorted(i["status"] for i in record["images"]) == ["built", "built"]
    app_ref = next(i["reference"] for i in record["images"] if i["name"] == repo.app)
    assert deployed["clean"].image == deployed["features"].image == app_ref
    assert deployed["clean"].annotations["pachhook.io/source-commit"] == record["commit"]
    assert record["transaction"] and record["started"] <= record["finished"]
    assert f"transaction {record['transaction']}" in proc.stdout
    if isinstance(repo.pachd, DoubleTarget):
        (applied,) = repo.pachd.double.applied_transactions()
        assert applied.id == record["transaction"]
        order = [r.create_pipeline.pipeline.name for r in applied.requests]
        assert order == ["clean", "features", "stats", "report"]

    # Decided by state: the images are in the registry, the cluster runs these specs.
    reset_calls(repo.pachd)
    repo.ok("run", "--all")
    print(f"\n[timing] run --all, nothing to do (registry, cluster asked): {repo.seconds:.2f}s")
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}
    record = repo.last_run()
    assert sorted(i["status"] for i in record["images"]) == ["exists", "exists"]
    assert record["transaction"] is None
    if isinstance(repo.pachd, DoubleTarget):
        assert repo.pachd.double.call_count("StartTransaction") == 0
        assert repo.pachd.double.call_count("CreatePipeline") == 0
        assert repo.pachd.double.call_count("ListPipeline") == 1

    status = repo.ok("status")
    assert f"in transaction {first['transaction']}" in status.stdout


@pytest.mark.docker
def test_a_code_change_updates_only_the_pipelines_of_that_image(repo: Repo) -> None:
    first_run(repo)
    before = repo.images()
    repo.change({"app/main.sh": "echo clean v2\n"})
    reset_calls(repo.pachd)
    repo.ok("run", "--from", "HEAD~1")
    print(f"\n[timing] one-image, two-pipeline change: {repo.seconds:.2f}s wall")
    assert repo.versions() == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    after = repo.images()
    assert after["clean"] == after["features"] != before["clean"]
    assert after["stats"] == before["stats"] and after["report"] == before["report"]
    record = repo.last_run()
    assert [(i["name"], i["status"]) for i in record["images"]] == [(repo.app, "built")]
    if isinstance(repo.pachd, DoubleTarget):
        applied = repo.pachd.double.applied_transactions()[-1]
        assert [r.create_pipeline.pipeline.name for r in applied.requests] == ["clean", "features"]
        assert repo.pachd.double.call_count("StartTransaction") == 1


@pytest.mark.docker
def test_a_spec_change_updates_only_that_pipeline(repo: Repo) -> None:
    first_run(repo)
    stages = (repo.root / "pipelines" / "stages.yaml").read_text()
    docs = stages.split("\n---\n")
    stats = json.loads(docs[1])
    stats["description"] = "summary statistics"
    repo.change({"pipelines/stages.yaml": docs[0] + "\n---\n" + json.dumps(stats, indent=2) + "\n"})
    proc = repo.ok("run", "--from", "HEAD~1")
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 2, "report": 1}
    record = repo.last_run()
    assert all(i["status"] != "built" for i in record["images"]), record["images"]
    assert "stats" in proc.stdout


@pytest.mark.docker
def test_a_change_outside_every_context_contacts_nothing(
    tmp_path: Path, pachd: Target, own_registry: OwnRegistry, e2e_repo: Callable[..., Repo]
) -> None:
    repo = e2e_repo(own_registry.address)
    first_run(repo)
    repo.change({"README.md": "# data project\n\nMore words.\n", "docs/notes.md": "notes\n"})
    # Anything contacted would now fail the run: no registry, no engine; and the
    # double counts calls (a real cluster is replaced by a closed port).
    own_registry.stop()
    cluster = (
        pachd.address if isinstance(pachd, DoubleTarget) else f"grpc://127.0.0.1:{closed_port()}"
    )
    reset_calls(pachd)
    proc = repo.ok(
        "run",
        "--from",
        "HEAD~1",
        DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock",
        PACHYDERM_CLUSTER_URL=cluster,
    )
    print(f"\n[timing] no-op run (change outside every context): {repo.seconds:.2f}s wall")
    assert "nothing to do" in proc.stdout
    assert calls(pachd) in (0, None)
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}


@pytest.mark.docker
def test_a_failure_on_one_pipeline_leaves_every_pipeline_at_its_old_version(repo: Repo) -> None:
    if not isinstance(repo.pachd, DoubleTarget):
        pytest.skip("needs the pachd double's fault injection")
    first_run(repo)
    before = repo.pachd.pipelines(repo.project)
    repo.pachd.double.fail_pipeline(
        "features", "admission webhook denied the pod", project=repo.project, at="finish"
    )
    repo.change({"app/main.sh": "echo clean v2\n"})
    proc = repo.run("run", "--from", "HEAD~1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"pipeline {repo.project}/features (pipelines/stages.yaml:" in proc.stderr
    assert "admission webhook denied the pod; nothing was applied" in proc.stderr
    assert repo.pachd.pipelines(repo.project) == before
    assert repo.pachd.double.open_transactions() == {}
    record = repo.last_run()
    assert "admission webhook denied the pod" in record["error"]
    assert record["transaction"] is None
    assert {p["status"] for p in record["pipelines"]} <= {"not applied", "unchanged"}

    # Fixed: the same run again applies, and the pushed image is not rebuilt.
    repo.pachd.double.clear_failures()
    repo.ok("run", "--from", "HEAD~1")
    assert repo.versions() == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    assert [i["status"] for i in repo.last_run()["images"]] == ["exists"]


@pytest.mark.docker
def test_a_push_failure_updates_no_pipeline(
    pachd: Target,
    project: str,
    own_registry: OwnRegistry,
    registry: services.Registry,
    e2e_repo: Callable[..., Repo],
) -> None:
    # app goes to a registry that will refuse pushes; tools to one that works.
    repo = e2e_repo(own_registry.address, registry.address)
    first_run(repo)
    before = repo.pachd.pipelines(project)
    own_registry.stop()
    own_registry.start(readonly=True)
    repo.change({"app/main.sh": "echo clean v2\n", "tools/tool.sh": "echo tools v2\n"})
    reset_calls(pachd)
    proc = repo.run("run", "--from", "HEAD~1")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    record = repo.last_run()
    statuses = {i["name"]: i["status"] for i in record["images"]}
    assert statuses == {repo.app: "failed", repo.tools: "built"}
    tools_ref = next(i["reference"] for i in record["images"] if i["name"] == repo.tools)
    assert registry.has_manifest(f"{project}/tools", tools_ref.rsplit(":", 1)[1])
    assert "no pipeline was updated" in record["error"]
    # Not even the pipelines of the image that was pushed: the cluster was read for the
    # plan, and never written.
    assert repo.pachd.pipelines(project) == before
    if isinstance(pachd, DoubleTarget):
        assert pachd.double.calls() == {"pps_v2.API/ListPipeline": 1}


@pytest.mark.docker
def test_a_spec_change_never_points_at_a_tag_the_registry_lost(
    project: str, own_registry: OwnRegistry, e2e_repo: Callable[..., Repo]
) -> None:
    repo = e2e_repo(own_registry.address)
    first_run(repo)
    tag = repo.images()["stats"].rsplit(":", 1)[1]
    # The registry is wiped (say, garbage-collected): the unchanged image is gone.
    own_registry.stop()
    shutil.rmtree(own_registry.root / "data")
    own_registry.start()
    assert not own_registry.has(f"{project}/tools", tag)
    report = json.loads((repo.root / "pipelines" / "report.json").read_text())
    report["description"] = "weekly report"
    repo.change({"pipelines/report.json": report})
    repo.ok("run", "--from", "HEAD~1")
    assert [(i["name"], i["status"]) for i in repo.last_run()["images"]] == [(repo.tools, "built")]
    assert own_registry.has(f"{project}/tools", tag)
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 2}


@pytest.mark.docker
def test_a_wrong_token_fails_clearly_without_printing_it(repo: Repo) -> None:
    first_run(repo)
    repo.change({"app/main.sh": "echo clean v2\n"})
    secret = "wrong-" + uuid.uuid4().hex
    proc = repo.run("run", "--from", "HEAD~1", PACHYDERM_TOKEN=secret)
    assert proc.returncode == 1
    assert "refused the token from PACHYDERM_TOKEN" in proc.stderr
    assert "Traceback" not in proc.stderr
    ledger = (repo.root / ".git" / "pachhook" / "runs.jsonl").read_text()
    for text in (proc.stdout, proc.stderr, ledger):
        assert secret not in text
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}


@pytest.mark.docker
def test_a_missing_input_repo_is_named(
    project: str, registry: services.Registry, e2e_repo: Callable[..., Repo]
) -> None:
    repo = e2e_repo(registry.address, raw=False)
    proc = repo.run("run", "--all")
    assert proc.returncode == 1
    assert f"input repo {project}/raw does not exist (needed by clean)" in proc.stderr
    assert repo.versions() == {}


# -- deploy only: pipelines of images pachhook does not build (no Docker needed) -----------


def test_deploy_only_first_run_then_nothing_then_one_spec(spec_repo: Repo) -> None:
    repo = spec_repo
    first_run(repo)
    if isinstance(repo.pachd, DoubleTarget):
        (applied,) = repo.pachd.double.applied_transactions()
        order = [r.create_pipeline.pipeline.name for r in applied.requests]
        assert order == ["clean", "features", "stats", "report"]
    repo.ok("run", "--all")
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}

    report = json.loads((repo.root / "pipelines" / "report.json").read_text())
    report["parallelism_spec"] = {"constant": 2}
    repo.change({"pipelines/report.json": report})
    repo.ok("run", "--from", "HEAD~1")
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 2}


def test_deploy_only_injected_failure_and_wrong_token(spec_repo: Repo) -> None:
    repo = spec_repo
    if not isinstance(repo.pachd, DoubleTarget):
        pytest.skip("needs the pachd double's fault injection")
    first_run(repo)
    stages = (repo.root / "pipelines" / "stages.yaml").read_text()
    clean = json.loads((repo.root / "pipelines" / "clean.json").read_text())
    clean["description"] = "cleaned"
    repo.change({"pipelines/clean.json": clean, "pipelines/stages.yaml": stages + "\n"})
    repo.pachd.double.fail_pipeline("clean", "etcd is down", project=repo.project, at="queue")
    proc = repo.run("run", "--from", "HEAD~1")
    assert proc.returncode == 1
    assert f"pipeline {repo.project}/clean (pipelines/clean.json:1)" in proc.stderr
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}

    secret = "wrong-" + uuid.uuid4().hex
    proc = repo.run("run", "--from", "HEAD~1", PACHYDERM_TOKEN=secret)
    assert proc.returncode == 1
    assert "refused the token" in proc.stderr
    assert secret not in proc.stdout + proc.stderr
