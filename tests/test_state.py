"""Plans that read state: the registry and the cluster decide the actions, drift is found
and restored, `diff` shows it field by field, `--offline` contacts nothing, and `--prune`
deletes only what pachhook applied from this repository.

Against the pachd double over real gRPC (or the cluster named by PACHHOOK_TEST_PACHD),
the real registry and Docker engine where images are built, and real git repositories.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import python_pachyderm
from python_pachyderm.proto.v2.pfs import pfs_pb2
from python_pachyderm.proto.v2.pps import pps_pb2

from pachhook.pachyderm import listing
from pachhook.pachyderm.cluster import requested_spec, to_request
from pachhook.pachyderm.specs import ANNOTATION_REPOSITORY, parse_file, rewritten
from pachhook.pachyderm.stored import as_stored, repository_key, same_repository, spec_of
from pachhook.plan.diff import is_secret, unified
from tests.cluster import DoubleTarget, Target, closed_port
from tests.e2e import Repo, first_run
from tests.helpers import commit, git, init_repo, spec, write
from tests.pachd_double import PachdDouble

WRITES = ("CreatePipeline", "StartTransaction", "FinishTransaction", "DeletePipeline")


def client_of(pachd: Target) -> python_pachyderm.Client:
    """python-pachyderm itself, as someone working behind pachhook's back would use it."""
    if isinstance(pachd, DoubleTarget):
        return pachd.double.client()
    return pachd.client


def plan_json(repo: Repo, *args: str, **env: str) -> dict[str, Any]:
    proc = repo.ok("plan", "--all", "--json", *args, **env)
    return json.loads(proc.stdout)


def actions(data: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    images = {i["name"].rsplit("/", 1)[-1]: i["action"] for i in data["images"]}
    pipelines = {p["name"]: p["action"] for p in data["pipelines"]}
    return images, pipelines


def writes(pachd: Target) -> int | None:
    if not isinstance(pachd, DoubleTarget):
        return None
    return sum(pachd.double.call_count(method) for method in WRITES)


def reset_calls(pachd: Target) -> None:
    if isinstance(pachd, DoubleTarget):
        pachd.double.reset_calls()


# -- the listing a plan reads ------------------------------------------------------------------


def test_the_listing_reads_what_python_pachyderm_reads(pachd_double: PachdDouble) -> None:
    """The few fields decoded off the wire, against the client's full decoding of the same
    answers: names, projects, versions and every annotation."""
    client = pachd_double.client()
    pachd_double.create_project("ml")
    pachd_double.create_repo("raw")
    pachd_double.create_repo("raw", "ml")
    notes = {"pachhook.io/spec-digest": "é" * 70, "team": "data", "empty": ""}
    for project, name in (("default", "clean"), ("ml", "clean"), ("ml", "train")):
        client.create_pipeline(
            name,
            transform=pps_pb2.Transform(image="busybox", cmd=["true"], env={"A": "b"}),
            input=pps_pb2.Input(pfs=pps_pb2.PFSInput(repo="raw", glob="/*")),
            metadata=pps_pb2.Metadata(annotations=notes, labels={"x": "y"}),
            parallelism_spec=pps_pb2.ParallelismSpec(constant=2),
            project_name=project,
        )
    client.create_pipeline(
        "clean",
        transform=pps_pb2.Transform(image="busybox:2"),
        input=pps_pb2.Input(pfs=pps_pb2.PFSInput(repo="raw", glob="/*")),
        update=True,
    )
    expected = {
        (i.pipeline.project.name, i.pipeline.name): (
            i.version,
            dict(i.details.metadata.annotations),
        )
        for i in client.list_pipeline(details=True)
    }
    found = listing.list_pipelines(
        f"127.0.0.1:{pachd_double.port}", token=pachd_double.token, root_certs=None
    )
    assert {s.key: (s.version, dict(s.annotations)) for s in found} == expected
    assert expected[("default", "clean")] == (2, {})
    assert expected[("ml", "train")] == (1, notes)


def test_the_listings_field_numbers_are_pps_protos() -> None:
    info = pps_pb2.PipelineInfo.DESCRIPTOR.fields_by_name
    assert (info["pipeline"].number, info["version"].number, info["details"].number) == (
        listing.INFO_PIPELINE,
        listing.INFO_VERSION,
        listing.INFO_DETAILS,
    )
    pipeline = pps_pb2.Pipeline.DESCRIPTOR.fields_by_name
    assert (pipeline["name"].number, pipeline["project"].number) == (
        listing.PIPELINE_NAME,
        listing.PIPELINE_PROJECT,
    )
    assert pfs_pb2.Project.DESCRIPTOR.fields_by_name["name"].number == listing.PROJECT_NAME
    details = pps_pb2.PipelineInfo.Details.DESCRIPTOR.fields_by_name
    assert details["metadata"].number == listing.DETAILS_METADATA
    metadata = pps_pb2.Metadata.DESCRIPTOR.fields_by_name
    assert metadata["annotations"].number == listing.METADATA_ANNOTATIONS
    assert pps_pb2.ListPipelineRequest(details=True).SerializeToString() == listing.REQUEST


# -- the repository's side of `diff` -----------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        {
            "input": {
                "cross": [
                    {"pfs": {"repo": "raw", "glob": "*"}},
                    {"pfs": {"repo": "aux", "glob": "/a/"}},
                ]
            }
        },
        {
            "input": {
                "union": [
                    {"pfs": {"repo": "aux", "glob": "/*", "name": "b"}},
                    {"pfs": {"repo": "raw", "glob": "/*", "name": "a"}},
                ]
            }
        },
        {"input": {"cron": {"name": "tick", "spec": "@every 60s"}}, "datumTries": 5},
        {
            "input": {"pfs": {"repo": "raw", "glob": "/*", "branch": "dev"}},
            "outputBranch": "out",
            "reprocessSpec": "every_job",
        },
        {
            "input": {"pfs": {"repo": "raw", "glob": "/*"}},
            "service": {"internalPort": 80, "externalPort": 30080},
            "parallelismSpec": {"constant": 1},
        },
    ],
)
def test_the_repository_side_of_diff_is_what_pachd_stores(
    pachd_double: PachdDouble, extra: dict[str, Any]
) -> None:
    """pachd fills in defaults and sorts inputs: `diff` does the same to the repository's
    spec, so a spec just applied shows no difference."""
    pachd_double.create_repo("raw")
    pachd_double.create_repo("aux")
    doc = {"pipeline": {"name": "p"}, "transform": {"image": "busybox:1", "cmd": ["true"]}, **extra}
    (pipeline,) = parse_file("p.json", json.dumps(doc).encode(), "default", strict=True)
    sent = rewritten(pipeline, pipeline.image, {"pachhook.io/spec-digest": "x"})
    requested = requested_spec(pipeline, sent)
    client = pachd_double.client()
    client.create_pipeline_from_request(to_request(pipeline, sent, False))
    stored = next(client.inspect_pipeline("p", details=True)).details
    assert as_stored(requested, "default", "p") == spec_of(stored)
    assert unified(spec_of(stored), as_stored(requested, "default", "p"), "a", "b") == []


def test_secrets_are_masked_and_marked_where_they_differ() -> None:
    cluster = {"transform": {"env": {"TOKEN": "hunter2", "MODE": "x"}, "cmd": ["a"]}}
    ours = {"transform": {"env": {"TOKEN": "s3cret", "MODE": "x"}, "cmd": ["a"]}}
    lines = unified(cluster, ours, "cluster", "repository")
    text = "\n".join(lines)
    assert "hunter2" not in text and "s3cret" not in text
    assert "-transform.env.TOKEN: *** (the cluster's value)" in lines
    assert "+transform.env.TOKEN: *** (the repository's value)" in lines
    assert not any(
        line.startswith(("-transform.env.MODE", "+transform.env.MODE")) for line in lines
    )
    egress = unified({"egress": {"URL": "s3://key:secret@bucket/x"}}, {}, "a", "b")
    assert '-egress.URL: "s3://***@bucket/x"' in egress
    assert is_secret("pod_patch[0].value.containers[0].env[1].value")
    assert is_secret("transform.env.PASSWORD") and is_secret("egress.sql_database.password")
    assert not is_secret("transform.cmd") and not is_secret("transform.secrets[0].name")


def test_a_repository_is_the_same_whichever_way_it_is_cloned() -> None:
    assert repository_key("git@github.com:acme/data.git") == "github.com/acme/data"
    assert repository_key("https://github.com/acme/data") == "github.com/acme/data"
    assert repository_key("ssh://git@GitHub.com/acme/data.git/") == "github.com/acme/data"
    assert same_repository("https://gitlab.example:8443/x/y.git", "https://gitlab.example:8443/x/y")
    assert not same_repository("https://github.com/acme/other", "https://github.com/acme/data")
    assert not same_repository(None, "https://github.com/acme/data")


# -- state decides: create, then unchanged and exists --------------------------------------


@pytest.mark.docker
def test_a_fresh_cluster_plans_create_then_unchanged_and_exists(repo: Repo) -> None:
    data = plan_json(repo)
    assert data["state"] == {"registry": "read", "cluster": "read"}
    assert actions(data) == (
        {"app": "build", "tools": "build"},
        {"clean": "create", "features": "create", "stats": "create", "report": "create"},
    )
    app = next(i for i in data["images"] if i["name"] == repo.app)
    assert {"path": None, "why": f"tag {app['tag']} not in the registry"} in app["reasons"]
    assert {"path": None, "why": "not on the cluster"} in data["pipelines"][0]["reasons"]

    first_run(repo)
    reset_calls(repo.pachd)
    data = plan_json(repo)
    assert actions(data) == (
        {"app": "exists", "tools": "exists"},
        {
            "clean": "unchanged",
            "features": "unchanged",
            "stats": "unchanged",
            "report": "unchanged",
        },
    )
    text = repo.ok("plan", "--all").stdout
    assert "state: registry read, cluster read\n" in text
    assert "images: 0 to build, 2 in the registry" in text
    assert "pipelines (upstream first): 0 to apply, 4 unchanged" in text

    reset_calls(repo.pachd)
    proc = repo.ok("run", "--all")
    assert "nothing to do" in proc.stdout
    assert writes(repo.pachd) in (0, None)
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}


# -- drift -------------------------------------------------------------------------------


def hand_edit(pachd: Target, project: str, name: str, **changes: Any) -> None:
    """What `pachctl edit pipeline` does: the stored spec, changed, sent back with every
    annotation it had (pachhook's among them, now stale)."""
    client = client_of(pachd)
    info = next(client.inspect_pipeline(name, details=True, project_name=project))
    details = info.details
    request = pps_pb2.CreatePipelineRequest(
        pipeline=info.pipeline,
        transform=details.transform,
        input=details.input,
        metadata=details.metadata,
        update=True,
    )
    for field, value in changes.items():
        if field == "cmd":
            del request.transform.cmd[:]
            request.transform.cmd.extend(value)
        elif field == "parallelism":
            request.parallelism_spec.constant = value
    client.create_pipeline_from_request(request)


def hand_update(pachd: Target, project: str, name: str, repo: str, cmd: list[str]) -> None:
    """A spec of someone's own, sent with python-pachyderm: no annotation at all."""
    client_of(pachd).create_pipeline(
        name,
        transform=pps_pb2.Transform(image="docker.io/library/busybox:1.36", cmd=cmd),
        input=pps_pb2.Input(pfs=pps_pb2.PFSInput(repo=repo, glob="/*")),
        update=True,
        project_name=project,
    )


def test_a_pipeline_changed_behind_pachhooks_back_is_drifted_diffed_and_restored(
    spec_repo: Repo,
) -> None:
    repo = spec_repo
    first_run(repo)
    hand_edit(repo.pachd, repo.project, "clean", cmd=["sh", "-c", "rm -rf /"], parallelism=2)
    hand_update(repo.pachd, repo.project, "stats", "clean", ["sh", "-c", "false"])
    assert repo.versions() == {"clean": 2, "features": 1, "stats": 2, "report": 1}

    data = plan_json(repo)
    drifted = {p["name"]: p.get("drift") for p in data["pipelines"] if p["action"] == "drifted"}
    assert drifted == {
        "clean": ["parallelism_spec.constant", "transform.cmd"],
        "stats": ["transform.cmd"],
    }
    assert actions(data)[1] == {
        "clean": "drifted",
        "features": "unchanged",
        "stats": "drifted",
        "report": "unchanged",
    }
    text = repo.ok("plan", "--all").stdout
    assert (
        f"drifted {repo.project}/clean  pipelines/clean.json:1  -> docker.io/library/busybox:1.36"
        in text
    )
    assert (
        "changed outside pachhook since pachhook applied version 1: parallelism_spec.constant, transform.cmd"
        in text
    )

    diff = repo.run("diff")
    assert diff.returncode == 1, diff.stderr
    lines = diff.stdout.splitlines()
    assert (
        f"# {repo.project}/clean: changed outside pachhook: a run restores the repository's spec"
        in lines
    )
    assert f"--- cluster: {repo.project}/clean (version 2)" in lines
    assert '-transform.cmd: ["sh", "-c", "rm -rf /"]' in lines
    assert '+transform.cmd: ["sh", "/app/main.sh"]' in lines
    assert '-parallelism_spec.constant: "2"' in lines
    assert repo.run("diff", "features", f"{repo.project}/report").returncode == 0
    assert repo.run("diff", "features").stdout == ""
    unknown = repo.run("diff", "nope")
    assert unknown.returncode == 2
    assert (
        "pipeline " in unknown.stderr
        and "nope is neither in the repository nor on the cluster" in unknown.stderr
    )

    # Left alone on request: a CI job fails, the cluster is as it was.
    left = repo.run("run", "--all", "--no-restore-drift", CI="true")
    assert left.returncode == 1, left.stdout + left.stderr
    assert (
        f"changed outside pachhook and left as they are: {repo.project}/clean, {repo.project}/stats"
        in left.stderr
    )
    assert repo.versions() == {"clean": 2, "features": 1, "stats": 2, "report": 1}

    reset_calls(repo.pachd)
    restored = repo.ok("run", "--all")
    assert (
        f"pipeline {repo.project}/clean: restored (it was changed outside pachhook)"
        in restored.stdout
    )
    assert (
        f"pipeline {repo.project}/stats: restored (it was changed outside pachhook)"
        in restored.stdout
    )
    assert repo.versions() == {"clean": 3, "features": 1, "stats": 3, "report": 1}
    assert actions(plan_json(repo))[1] == dict.fromkeys(
        ("clean", "features", "stats", "report"), "unchanged"
    )
    assert repo.run("diff").returncode == 0


def test_diff_of_a_changed_spec_shows_its_fields_and_masks_env_values(spec_repo: Repo) -> None:
    repo = spec_repo
    clean = json.loads((repo.root / "pipelines" / "clean.json").read_text())
    clean["transform"]["env"] = {"API_TOKEN": "tok-123456", "LEVEL": "info"}
    repo.change({"pipelines/clean.json": clean})
    first_run(repo)
    clean["transform"]["env"]["API_TOKEN"] = "tok-abcdef"
    clean["description"] = "cleaner"
    repo.change({"pipelines/clean.json": clean})
    assert actions(plan_json(repo))[1]["clean"] == "update"
    diff = repo.run("diff", "clean")
    assert diff.returncode == 1
    assert "tok-" not in diff.stdout
    lines = diff.stdout.splitlines()
    assert f"# {repo.project}/clean: a run updates it" in lines
    assert '+description: "cleaner"' in lines
    assert "-transform.env.API_TOKEN: *** (the cluster's value)" in lines
    assert "+transform.env.API_TOKEN: *** (the repository's value)" in lines
    assert " transform.env.LEVEL: ***" in lines or "transform.env.LEVEL" not in diff.stdout


# -- offline and unreachable ---------------------------------------------------------------


class Listener:
    """A loopback TCP port that counts who connects (and hangs up on them)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    try:
        yield found
    finally:
        found.close()


def test_offline_makes_no_rpc_and_no_registry_request(spec_repo: Repo, listener: Listener) -> None:
    """A registry that counts connections, and the double's call counts."""
    repo = spec_repo
    if not isinstance(repo.pachd, DoubleTarget):
        pytest.skip("needs the pachd double's call counts")
    image = f"127.0.0.1:{listener.port}/{repo.project}/app"
    config = (repo.root / "pachhook.toml").read_text()
    clean = json.loads((repo.root / "pipelines" / "clean.json").read_text())
    clean["transform"]["image"] = f"{image}:v1"
    repo.change(
        {
            "pachhook.toml": config + f'\n[[image]]\nname = "{image}"\ncontext = "app"\n',
            "app/Dockerfile": "FROM scratch\nCOPY main.sh /main.sh\n",
            "app/main.sh": "echo\n",
            "pipelines/clean.json": clean,
        }
    )
    repo.pachd.double.reset_calls()
    offline = repo.ok("plan", "--all", "--offline")
    assert repo.pachd.double.call_count() == 0 and listener.accepted == 0
    assert (
        "state: registry offline, cluster offline; actions where not read are what a run does "
        "if the cluster and registry differ" in offline.stdout
    )
    assert offline.stderr == ""
    data = plan_json(repo, "--offline")
    assert data["state"] == {"registry": "offline", "cluster": "offline"}
    assert actions(data) == (
        {"app": "build"},
        dict.fromkeys(("clean", "features", "stats", "report"), "update"),
    )
    assert repo.pachd.double.call_count() == 0 and listener.accepted == 0

    # The same plan reading state asks both (so the counts above could have seen it).
    data = plan_json(repo)
    assert listener.accepted > 0
    assert repo.pachd.double.calls() == {"pps_v2.API/ListPipeline": 1}
    assert data["state"] == {"registry": "unreachable", "cluster": "read"}


def test_an_unreachable_cluster_falls_back_to_the_offline_plan_with_one_line(
    spec_repo: Repo,
) -> None:
    repo = spec_repo
    address = f"grpc://127.0.0.1:{closed_port()}"
    proc = repo.ok("plan", "--all", PACHYDERM_CLUSTER_URL=address)
    (line,) = proc.stderr.splitlines()
    assert line.startswith("pachhook: the cluster could not be read: pachd at")
    assert "127.0.0.1" in line and line.endswith("the plan below does not know it")
    assert "state: registry read, cluster unreachable" in proc.stdout
    data = plan_json(repo, PACHYDERM_CLUSTER_URL=address)
    assert data["state"] == {"registry": "read", "cluster": "unreachable"}
    assert set(actions(data)[1].values()) == {"update"}  # the offline plan's actions
    # A run fails as it always has: once it needs the cluster, with the same line.
    run = repo.run("run", "--all", PACHYDERM_CLUSTER_URL=address)
    assert run.returncode == 1
    assert "is unreachable while listing pipelines" in run.stderr


# -- prune -----------------------------------------------------------------------------------


def test_prune_deletes_only_what_pachhook_applied_from_here_downstream_first(
    spec_repo: Repo,
) -> None:
    repo = spec_repo
    first_run(repo)
    client = client_of(repo.pachd)
    # Someone's own pipeline, and one pachhook applied from another repository.
    hand_update(repo.pachd, repo.project, "manual", "clean", ["true"])
    client.create_pipeline(
        "foreign",
        transform=pps_pb2.Transform(image="busybox", cmd=["true"]),
        input=pps_pb2.Input(pfs=pps_pb2.PFSInput(repo="raw", glob="/*")),
        metadata=pps_pb2.Metadata(
            annotations={
                "pachhook.io/spec-digest": "0" * 64,
                "pachhook.io/version": "1",
                ANNOTATION_REPOSITORY: "https://example.com/someone/else.git",
            }
        ),
        project_name=repo.project,
    )
    stages = (repo.root / "pipelines" / "stages.yaml").read_text()
    only_stats = "---".join(part for part in stages.split("---") if "stats" in part)
    (repo.root / "pipelines" / "report.json").unlink()
    repo.change({"pipelines/stages.yaml": only_stats}, "features and report are gone")

    data = plan_json(repo)
    removed = [(r["name"], r["on_cluster"], r["managed"]) for r in data["removed_pipelines"]]
    assert removed == [("report", True, True), ("features", True, True)]  # downstream first
    text = repo.ok("plan", "--all").stdout
    assert (
        f"removed {repo.project}/report  (its spec is gone from pipelines/report.json; still on "
        "the cluster: pachhook run --prune deletes it, keeping its output repo)" in text
    )

    diff = repo.run("diff")
    assert diff.returncode == 1
    lines = diff.stdout.splitlines()
    assert (
        f"# {repo.project}/report: its spec is gone: pachhook run --prune deletes it "
        "(keeping its output repo)" in lines
    )
    assert "+++ /dev/null" in lines
    assert not any("manual" in line or "foreign" in line for line in lines)
    assert "on the cluster only" in repo.run("diff", "manual").stdout

    repo.ok("run", "--all")  # without --prune: reported, never deleted
    assert set(repo.versions()) == {"clean", "features", "stats", "report", "manual", "foreign"}

    proc = repo.ok("run", "--all", "--prune")
    assert f"pipeline {repo.project}/report: deleted" in proc.stdout
    assert set(repo.versions()) == {"clean", "stats", "manual", "foreign"}
    repos = {i.repo.name for i in client.list_repo() if i.repo.project.name == repo.project}
    assert {"features", "report"} <= repos  # output repos kept
    if isinstance(repo.pachd, DoubleTarget):
        deleted = [(d.name, d.keep_repo) for d in repo.pachd.double.deleted_pipelines()]
        assert deleted == [("report", True), ("features", True)]
    assert plan_json(repo)["removed_pipelines"] == []
    again = repo.ok("run", "--all", "--prune")
    assert "deleted" not in again.stdout


def test_a_pipeline_pachhook_applied_keeps_where_it_came_from(spec_repo: Repo) -> None:
    repo = spec_repo
    git(repo.root, "remote", "add", "origin", "https://bot:t0ken@github.com/acme/data.git")
    first_run(repo)
    annotations = repo.pachd.pipelines(repo.project)["features"].annotations
    assert annotations[ANNOTATION_REPOSITORY] == "https://github.com/acme/data.git"
    assert annotations["pachhook.io/spec-file"] == "pipelines/stages.yaml"
    assert annotations["pachhook.io/version"] == "1"
    assert "t0ken" not in json.dumps(annotations)


def test_a_plan_with_no_cluster_configured_still_plans(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo")
    write(root, {"pipelines/a.json": spec("a", "busybox:1", "raw")})
    commit(root, "a")
    proc = subprocess.run(
        [sys.executable, "-m", "pachhook", "plan", "--all"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = proc.stderr.splitlines()
    assert "no Pachyderm cluster is configured" in line
    assert "update default/a  pipelines/a.json:1" in proc.stdout
