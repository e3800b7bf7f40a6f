"""The pachd double must hold the real python_pachyderm.Client to pachd 2.7's rules.

Every test talks to the double over real gRPC through python-pachyderm 7.6's
Client, so what passes here is what the deploy code will see.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import python_pachyderm
from python_pachyderm.proto.v2.pfs import pfs_pb2
from python_pachyderm.proto.v2.pps import pps_pb2
from python_pachyderm.proto.v2.transaction import transaction_pb2

from tests.pachd_double import (
    MSG_BAD_TOKEN,
    MSG_NO_TOKEN,
    PARALLELISM_LIMIT,
    PIPELINE_LIMIT,
    TEST_TOKEN,
    PachdDouble,
)

DOUBLE_SCRIPT = Path(__file__).with_name("pachd_double.py")


def pfs(repo: str, glob: str = "/*", **kwargs: object) -> pps_pb2.Input:
    return pps_pb2.Input(pfs=pps_pb2.PFSInput(repo=repo, glob=glob, **kwargs))


def transform(image: str = "registry.local/edges:1") -> pps_pb2.Transform:
    return pps_pb2.Transform(image=image, cmd=["python3", "/app/main.py"])


def create(
    pachd_client: python_pachyderm.Client,
    name: str,
    input: pps_pb2.Input | None = None,
    *,
    image: str = "registry.local/edges:1",
    **kwargs: object,
) -> None:
    pachd_client.create_pipeline(name, transform=transform(image), input=input, **kwargs)


@pytest.fixture
def pachd_client(pachd_double: PachdDouble) -> Iterator[python_pachyderm.Client]:
    yield pachd_double.client()


def rpc_error(excinfo: pytest.ExceptionInfo[grpc.RpcError]) -> tuple[grpc.StatusCode, str]:
    err = excinfo.value
    return err.code(), err.details()


# ---------------------------------------------------------------- auth


def test_client_constructor_reaches_the_double_over_grpc(pachd_double: PachdDouble) -> None:
    pachd_client = python_pachyderm.Client(
        host="127.0.0.1", port=pachd_double.port, auth_token=TEST_TOKEN, use_default_host=False
    )
    assert pachd_client.who_am_i().username == "pach:root"
    assert pachd_double.address == f"grpc://127.0.0.1:{pachd_double.port}"
    via_address = python_pachyderm.Client.new_from_pachd_address(
        pachd_double.address, auth_token=TEST_TOKEN
    )
    version = via_address.get_remote_version()
    assert (version.major, version.minor) == (2, 7)
    assert pachd_double.call_count("WhoAmI") == 1
    assert pachd_double.call_count("versionpb_v2.API/GetVersion") == 1


def test_wrong_token_is_refused(pachd_double: PachdDouble) -> None:
    pachd_double.create_repo("images")
    bad = pachd_double.client(token="not-the-token")
    with pytest.raises(grpc.RpcError) as excinfo:
        bad.inspect_repo("images")
    assert rpc_error(excinfo) == (grpc.StatusCode.UNAUTHENTICATED, MSG_BAD_TOKEN)
    with pytest.raises(grpc.RpcError) as excinfo:
        create(bad, "edges", pfs("images"))
    assert excinfo.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as excinfo:
        bad.who_am_i()
    assert rpc_error(excinfo) == (grpc.StatusCode.UNAUTHENTICATED, MSG_BAD_TOKEN)
    assert pachd_double.pipelines() == {}
    # Refused calls still reached the cluster and are counted.
    assert pachd_double.call_count("CreatePipeline") == 1


def test_missing_token_is_refused(
    pachd_double: PachdDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PACH_PYTHON_AUTH_TOKEN", raising=False)
    anonymous = pachd_double.client(token=None)
    with pytest.raises(grpc.RpcError) as excinfo:
        list(anonymous.list_pipeline())
    assert rpc_error(excinfo) == (grpc.StatusCode.UNAUTHENTICATED, MSG_NO_TOKEN)
    with pytest.raises(grpc.RpcError) as excinfo:
        anonymous.start_transaction()
    assert excinfo.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert pachd_double.open_transactions() == {}
    # Like pachd, the version endpoint is open (clients call it before logging in).
    assert anonymous.get_remote_version().major == 2


def test_double_without_auth_accepts_anonymous_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACH_PYTHON_AUTH_TOKEN", raising=False)
    with PachdDouble(token=None) as double:
        double.create_repo("images")
        pachd_client = double.client(token=None)
        create(pachd_client, "edges", pfs("images"))
        assert ("default", "edges") in double.pipelines()
        with pytest.raises(grpc.RpcError) as excinfo:
            pachd_client.who_am_i()
        assert rpc_error(excinfo) == (
            grpc.StatusCode.UNIMPLEMENTED,
            "the auth service is not activated",
        )


# ---------------------------------------------------------------- repos and projects


def test_repo_rpcs_and_helper(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images", description="raw images")
    pachd_client.create_repo("labels")
    info = pachd_client.inspect_repo("images")
    assert (info.repo.project.name, info.repo.name, info.description) == (
        "default",
        "images",
        "raw images",
    )
    # Newest first, as pachd lists them.
    assert [r.repo.name for r in pachd_client.list_repo()] == ["labels", "images"]
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.create_repo("images")
    assert rpc_error(excinfo) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "repo default/images already exists",
    )
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.inspect_repo("nope")
    assert rpc_error(excinfo) == (grpc.StatusCode.NOT_FOUND, "repo default/nope not found")
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.create_repo("bad name")
    assert "only alphanumeric characters" in excinfo.value.details()


def test_repos_are_keyed_by_project(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_project("vision")
    pachd_client.create_project("audio")
    assert {"default", "vision", "audio"} <= pachd_double.projects()
    assert {p.project.name for p in pachd_client.list_project()} == {"default", "vision", "audio"}
    pachd_double.create_repo("images", project="vision")
    pachd_client.create_repo("images", project_name="audio")
    assert set(pachd_double.repos()) == {("vision", "images"), ("audio", "images")}
    with pytest.raises(grpc.RpcError):
        pachd_client.inspect_repo("images")  # not in the default project
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.create_repo("x", project_name="missing")
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    assert 'project "missing" not found' in excinfo.value.details()
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.create_project("vision")
    assert excinfo.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_pipeline_in_project_reads_inputs_from_its_project(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_project("vision")
    pachd_double.create_repo("images", project="vision")
    pachd_double.create_repo("shared")
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.create_pipeline(
            "edges", transform=transform(), input=pfs("shared"), project_name="vision"
        )
    assert excinfo.value.details() == "repo vision/shared not found"
    pachd_client.create_pipeline(
        "edges",
        transform=transform(),
        project_name="vision",
        input=pps_pb2.Input(cross=[pfs("images"), pfs("shared", project="default")]),
    )
    assert ("vision", "edges") in pachd_double.pipelines()
    assert ("vision", "edges") in pachd_double.repos()
    info = next(pachd_client.inspect_pipeline("edges", details=True, project_name="vision"))
    assert info.pipeline.project.name == "vision"


# ---------------------------------------------------------------- create / update


def test_create_makes_output_spec_and_meta_repos(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    create(pachd_client, "edges", pfs("images"))
    assert pachd_double.repos()[("default", "edges")].branches == ("master",)
    assert ("default", "edges") in pachd_double.repos("spec")
    assert ("default", "edges") in pachd_double.repos("meta")
    # The input branch is created as provenance of the output branch.
    assert pachd_double.repos()[("default", "images")].branches == ("master",)
    assert {(r.repo.name, r.repo.type) for r in pachd_client.list_repo(type="")} == {
        ("images", "user"),
        ("edges", "user"),
        ("edges", "spec"),
        ("edges", "meta"),
    }


def test_create_without_update_on_existing_pipeline_fails(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    create(pachd_client, "edges", pfs("images"), image="registry.local/edges:1")
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", pfs("images"), image="registry.local/edges:2")
    assert rpc_error(excinfo) == (
        grpc.StatusCode.ALREADY_EXISTS,
        'pipeline "default/edges" already exists',
    )
    record = pachd_double.pipelines()[("default", "edges")]
    assert (record.version, record.image) == (1, "registry.local/edges:1")


def test_update_bumps_version_and_stores_the_spec(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    create(
        pachd_client,
        "edges",
        pfs("images"),
        image="registry.local/edges:1",
        metadata=pps_pb2.Metadata(annotations={"pachhook/digest": "sha256:aaa"}),
    )
    first_salt = pachd_double.pipelines()[("default", "edges")].salt
    create(
        pachd_client,
        "edges",
        pfs("images"),
        image="registry.local/edges:2",
        update=True,
        metadata=pps_pb2.Metadata(annotations={"pachhook/digest": "sha256:bbb"}),
    )
    record = pachd_double.pipelines()[("default", "edges")]
    assert record.version == 2
    assert record.image == "registry.local/edges:2"
    assert record.annotations == {"pachhook/digest": "sha256:bbb"}
    assert record.reprocess is False
    assert record.salt == first_salt  # no reprocess: datums are kept

    create(
        pachd_client,
        "edges",
        pfs("images"),
        image="registry.local/edges:3",
        update=True,
        reprocess=True,
    )
    record = pachd_double.pipelines()[("default", "edges")]
    assert (record.version, record.reprocess) == (3, True)
    assert record.salt != first_salt
    assert pachd_double.applied_order() == [
        ("default", "edges", 1),
        ("default", "edges", 2),
        ("default", "edges", 3),
    ]

    info = next(pachd_client.inspect_pipeline("edges", details=True, project_name="default"))
    assert info.version == 3
    assert info.state == pps_pb2.PipelineState.PIPELINE_RUNNING
    assert info.details.transform.image == "registry.local/edges:3"
    assert info.details.transform.cmd == ["python3", "/app/main.py"]
    assert info.details.input.pfs.repo == "images"
    assert info.details.input.pfs.branch == "master"  # pachd's default
    assert info.details.reprocess_spec == "until_success"

    listed = {p.pipeline.name: p for p in pachd_client.list_pipeline(details=True)}
    assert listed["edges"].version == 3
    assert listed["edges"].details.transform.image == "registry.local/edges:3"
    assert [p.version for p in pachd_client.inspect_pipeline("edges", history=-1)] == [3, 2, 1]
    older = next(pachd_client.inspect_pipeline("edges^", details=True))
    assert (older.version, dict(older.details.metadata.annotations)) == (
        2,
        {"pachhook/digest": "sha256:bbb"},
    )


def test_inspect_without_details_omits_them(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    create(pachd_client, "edges", pfs("images"))
    info = next(pachd_client.inspect_pipeline("edges"))
    assert info.version == 1
    assert not info.HasField("details")
    with pytest.raises(grpc.RpcError) as excinfo:
        next(pachd_client.inspect_pipeline("nope"))
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND


def test_update_of_missing_pipeline_creates_it(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    create(pachd_client, "edges", pfs("images"), update=True)
    assert pachd_double.pipelines()[("default", "edges")].version == 1
    assert ("default", "edges") in pachd_double.repos()


def test_create_pipeline_from_request(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    request = python_pachyderm.parse_dict_pipeline_spec(
        {
            "pipeline": {"name": "edges"},
            "transform": {"image": "registry.local/edges:7", "cmd": ["run"]},
            "input": {"pfs": {"repo": "images", "glob": "/*"}},
            "metadata": {"annotations": {"team": "vision"}},
            "parallelism_spec": {"constant": 2},
        }
    )
    pachd_client.create_pipeline_from_request(request)
    record = pachd_double.pipelines()[("default", "edges")]
    assert (record.image, record.annotations, record.parallelism) == (
        "registry.local/edges:7",
        {"team": "vision"},
        2,
    )


def test_a_repo_named_like_the_pipeline_blocks_creation(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    pachd_double.create_repo("edges")
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", pfs("images"))
    assert excinfo.value.details() == (
        'pipeline "edges" cannot be created because a repo with the same name already exists'
    )
    assert pachd_double.pipelines() == {}


def test_spec_validation(pachd_double: PachdDouble, pachd_client: python_pachyderm.Client) -> None:
    pachd_double.create_repo("images")
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.create_pipeline("edges", transform=None, input=pfs("images"))
    assert excinfo.value.details() == "pipeline must specify a transform"
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "bad.name", pfs("images"))
    assert excinfo.value.details().startswith("invalid pipeline name: name (bad.name) invalid")
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", pps_pb2.Input(pfs=pps_pb2.PFSInput(repo="images")))
    assert excinfo.value.details() == "input must specify a glob"
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", pps_pb2.Input(cross=[pfs("images"), pfs("images")]))
    assert excinfo.value.details() == 'name "images" was used more than once'
    assert pachd_double.pipelines() == {}


# ---------------------------------------------------------------- inputs


def test_missing_input_repo_fails_and_creates_nothing(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", pfs("images"))
    assert rpc_error(excinfo) == (grpc.StatusCode.NOT_FOUND, "repo default/images not found")
    assert pachd_double.pipelines() == {}
    assert pachd_double.repos() == {}
    assert pachd_double.repos("spec") == {}


@pytest.mark.parametrize("kind", ["cross", "union", "join", "group"])
def test_every_input_kind_checks_its_repos(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client, kind: str
) -> None:
    pachd_double.create_repo("images")
    pachd_double.create_repo("labels")
    extra = {"join": {"join_on": "$1"}, "group": {"group_by": "$1"}}.get(kind, {})
    arms = [pfs("images", "/(*)", **extra), pfs("masks", "/(*)", **extra)]
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", pps_pb2.Input(**{kind: arms}))
    assert excinfo.value.details() == "repo default/masks not found"
    assert pachd_double.pipelines() == {}

    # Nested inputs are checked too.
    nested = pps_pb2.Input(
        **{kind: [pfs("images", "/(*)", **extra), pps_pb2.Input(cross=[pfs("labels"), pfs("x")])]}
    )
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", nested)
    assert excinfo.value.details() == "repo default/x not found"

    pachd_double.create_repo("masks")
    create(pachd_client, "edges", pps_pb2.Input(**{kind: arms}))
    stored = pachd_double.pipelines()[("default", "edges")].info.details.input
    assert [arm.pfs.repo for arm in getattr(stored, kind)] == ["images", "masks"]


def test_cron_input_creates_its_own_repo(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    cron = pps_pb2.Input(cron=pps_pb2.CronInput(name="tick", spec="*/10 * * * *"))
    create(pachd_client, "nightly", cron)
    assert ("default", "nightly_tick") in pachd_double.repos()
    assert ("default", "nightly") in pachd_double.repos()
    info = next(pachd_client.inspect_pipeline("nightly", details=True))
    assert info.details.input.cron.repo == "nightly_tick"
    # An update reuses the tick repo instead of failing on it.
    create(pachd_client, "nightly", cron, update=True)
    assert pachd_double.pipelines()[("default", "nightly")].version == 2

    with pytest.raises(grpc.RpcError) as excinfo:
        create(
            pachd_client, "broken", pps_pb2.Input(cron=pps_pb2.CronInput(name="t", spec="often"))
        )
    assert "error parsing cron-spec" in excinfo.value.details()
    assert ("default", "broken_t") not in pachd_double.repos()


def test_a_hand_update_is_stored_as_sent_and_every_version_is_kept(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    """What a deploy tool sees after someone updated a pipeline behind its back: the new
    version carries exactly the annotations it was sent with (none, or a copy of the old
    ones, as `pachctl edit pipeline` sends), the old versions stay readable, and pachd
    2.7 fills in no `details_json` (2.8 and later: the user's spec)."""
    pachd_double.create_repo("images")
    ours = {"pachhook.io/spec-digest": "d1", "pachhook.io/version": "1"}
    create(pachd_client, "edges", pfs("images"), metadata=pps_pb2.Metadata(annotations=ours))
    stored = next(pachd_client.inspect_pipeline("edges", details=True)).details
    edited = pps_pb2.CreatePipelineRequest(
        pipeline=pps_pb2.Pipeline(name="edges"),
        transform=stored.transform,
        input=stored.input,
        metadata=stored.metadata,
        parallelism_spec=pps_pb2.ParallelismSpec(constant=2),
        update=True,
    )
    pachd_client.create_pipeline_from_request(edited)
    create(pachd_client, "edges", pfs("images"), image="registry.local/edges:9", update=True)
    (latest,) = pachd_client.list_pipeline(details=True)
    assert (latest.version, dict(latest.details.metadata.annotations)) == (3, {})
    assert latest.details_json == ""
    versions = list(pachd_client.inspect_pipeline("edges", history=-1, details=True))
    assert [v.version for v in versions] == [3, 2, 1]
    assert dict(versions[1].details.metadata.annotations) == ours  # a stale copy
    assert versions[1].details.parallelism_spec.constant == 2
    assert next(pachd_client.inspect_pipeline("edges~2", details=True)).version == 1


# ---------------------------------------------------------------- deleting


def test_delete_with_keep_repo_keeps_the_output_repo(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    create(pachd_client, "edges", pfs("images"))
    create(pachd_client, "montage", pfs("edges"))
    pachd_client.delete_pipeline("edges", keep_repo=True)
    assert set(pachd_double.pipelines()) == {("default", "montage")}
    assert set(pachd_double.repos()) == {("default", r) for r in ("images", "edges", "montage")}
    assert ("default", "edges") not in pachd_double.repos("spec")
    assert ("default", "edges") not in pachd_double.repos("meta")
    with pytest.raises(grpc.RpcError) as excinfo:
        list(pachd_client.inspect_pipeline("edges", history=-1))
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    # The kept repo is a plain repo now: a pipeline of the same name cannot take it back.
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", pfs("images"))
    assert "a repo with the same name already exists" in excinfo.value.details()
    (deleted,) = pachd_double.deleted_pipelines()
    assert (deleted.name, deleted.keep_repo, deleted.transaction_header) == ("edges", True, None)


def test_delete_without_keep_repo_refuses_an_output_that_is_read(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    create(pachd_client, "edges", pfs("images"))
    create(pachd_client, "montage", pfs("edges"))
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.delete_pipeline("edges")
    assert rpc_error(excinfo) == (
        grpc.StatusCode.UNKNOWN,
        "delete branch default/edges@master: branch master has [default/montage@master] as "
        "subvenance, deleting it would break those branches",
    )
    assert ("default", "edges") in pachd_double.pipelines()
    pachd_client.delete_pipeline("montage")
    assert ("default", "montage") not in pachd_double.repos()
    pachd_client.delete_pipeline("edges", force=True)
    assert set(pachd_double.repos()) == {("default", "images")}
    pachd_client.delete_pipeline("never-was")  # pachd: nothing to delete, no error


def test_delete_inside_a_transaction_is_applied_at_once(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    """pachd 2.7 has no delete_pipeline transaction request: the delete runs in a write of
    its own whatever the pach-transaction header says, and a finish that fails later
    cannot bring the pipeline back."""
    pachd_double.create_repo("images")
    create(pachd_client, "edges", pfs("images"))
    create(pachd_client, "old", pfs("images"))
    pachd_double.fail_pipeline("edges", "boom")
    txn = pachd_client.start_transaction()
    pachd_client.transaction_id = txn.id
    create(pachd_client, "edges", pfs("images"), image="registry.local/edges:2", update=True)
    pachd_client.delete_pipeline("old", keep_repo=True)
    pachd_client.transaction_id = None
    assert ("default", "old") not in pachd_double.pipelines()
    assert len(pachd_client.inspect_transaction(txn).requests) == 1
    with pytest.raises(grpc.RpcError):
        pachd_client.finish_transaction(txn)
    assert ("default", "old") not in pachd_double.pipelines()
    (deleted,) = pachd_double.deleted_pipelines()
    assert deleted.transaction_header == txn.id


def test_appending_sees_what_was_committed_since(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    """Each append dry-runs the queue against the committed state as it is then."""
    pachd_double.create_repo("images")
    txn = pachd_client.start_transaction()
    queue = pachd_double.client()
    queue.transaction_id = txn.id
    create(queue, "edges", pfs("images"))
    create(pachd_client, "edges", pfs("images"))  # committed directly in the meantime
    with pytest.raises(grpc.RpcError) as excinfo:
        create(queue, "montage", pfs("edges"))
    assert rpc_error(excinfo) == (
        grpc.StatusCode.ALREADY_EXISTS,
        'error running request 1 of 2: pipeline "default/edges" already exists',
    )
    # As in pachd, the queued request fails every later append too, and at finish.
    with pytest.raises(grpc.RpcError):
        create(queue, "other", pfs("images"))
    with pytest.raises(grpc.RpcError):
        pachd_client.finish_transaction(txn)
    assert len(pachd_client.inspect_transaction(txn).requests) == 1


# ---------------------------------------------------------------- transactions


def test_transaction_queues_until_finished(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    with pachd_client.transaction() as txn:
        create(pachd_client, "edges", pfs("images"))
        create(pachd_client, "montage", pfs("edges"))  # input created by the queued request
        # Queued, not applied.
        assert pachd_double.pipelines() == {}
        queued = pachd_client.inspect_transaction(txn)
        assert [r.create_pipeline.pipeline.name for r in queued.requests] == ["edges", "montage"]
        assert [t.transaction.id for t in pachd_client.list_transaction()] == [txn.id]
    assert set(pachd_double.pipelines()) == {("default", "edges"), ("default", "montage")}
    assert pachd_double.applied_order() == [("default", "edges", 1), ("default", "montage", 1)]
    assert pachd_double.pipelines()[("default", "montage")].transaction_id == txn.id
    [applied] = pachd_double.applied_transactions()
    assert (applied.id, len(applied.requests), applied.via) == (txn.id, 2, "finish")
    assert pachd_double.open_transactions() == {}


def test_downstream_sent_before_upstream_fails_at_send(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    txn = pachd_client.start_transaction()
    pachd_client.transaction_id = txn.id
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "montage", pfs("edges"))
    assert rpc_error(excinfo) == (
        grpc.StatusCode.NOT_FOUND,
        "error running request 1 of 1: repo default/edges not found",
    )
    # The rejected request was not queued; the right order works.
    assert len(pachd_client.inspect_transaction(txn).requests) == 0
    create(pachd_client, "edges", pfs("images"))
    create(pachd_client, "montage", pfs("edges"))
    pachd_client.transaction_id = None
    pachd_client.finish_transaction(txn)
    assert pachd_double.applied_order() == [("default", "edges", 1), ("default", "montage", 1)]


def test_transaction_is_all_or_nothing(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    create(pachd_client, "edges", pfs("images"), image="registry.local/edges:1")
    pachd_double.fail_pipeline("montage", "image pull backoff")
    txn = pachd_client.start_transaction()
    pachd_client.transaction_id = txn.id
    pachd_client.create_repo("masks")
    create(pachd_client, "edges", pfs("images"), image="registry.local/edges:2", update=True)
    create(pachd_client, "montage", pfs("edges"))  # accepted: the failure fires at finish
    pachd_client.transaction_id = None

    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.finish_transaction(txn)
    assert rpc_error(excinfo) == (
        grpc.StatusCode.UNKNOWN,
        "error running request 3 of 3: image pull backoff",
    )
    # Nothing of the transaction was applied, not even the requests before the failure.
    assert pachd_double.pipelines()[("default", "edges")].version == 1
    assert pachd_double.pipelines()[("default", "edges")].image == "registry.local/edges:1"
    assert ("default", "montage") not in pachd_double.pipelines()
    assert ("default", "masks") not in pachd_double.repos()
    assert pachd_double.applied_transactions() == []
    # As in pachd, the failed transaction is still there to inspect or delete.
    assert len(pachd_client.inspect_transaction(txn).requests) == 3
    pachd_client.delete_transaction(txn)
    assert pachd_double.open_transactions() == {}
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.finish_transaction(txn)
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND


def test_context_manager_failure_applies_nothing(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    pachd_double.fail_pipeline("montage", "boom")
    with pytest.raises(grpc.RpcError), pachd_client.transaction():
        create(pachd_client, "edges", pfs("images"))
        create(pachd_client, "montage", pfs("edges"))
    assert pachd_double.pipelines() == {}
    assert set(pachd_double.repos()) == {("default", "images")}
    assert pachd_client.transaction_id is None
    # The client's context manager does not delete a transaction whose finish
    # failed, and pachd keeps it: it stays open until someone deletes it.
    assert len(pachd_double.open_transactions()) == 1


def test_failure_injected_at_queue_time(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    pachd_double.fail_pipeline("edges", "quota exceeded", at="queue", code=grpc.StatusCode.INTERNAL)
    with pytest.raises(grpc.RpcError) as excinfo, pachd_client.transaction():
        create(pachd_client, "edges", pfs("images"))
    assert rpc_error(excinfo) == (
        grpc.StatusCode.INTERNAL,
        "error running request 1 of 1: quota exceeded",
    )
    assert pachd_double.open_transactions() == {}  # the context manager deleted it
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", pfs("images"))
    assert rpc_error(excinfo) == (grpc.StatusCode.INTERNAL, "quota exceeded")
    pachd_double.clear_failures()
    create(pachd_client, "edges", pfs("images"))
    assert ("default", "edges") in pachd_double.pipelines()


def test_failure_can_be_limited_to_a_number_of_attempts(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    pachd_double.fail_pipeline("edges", "transient", times=1)
    with pytest.raises(grpc.RpcError):
        create(pachd_client, "edges", pfs("images"))
    create(pachd_client, "edges", pfs("images"))
    assert pachd_double.pipelines()[("default", "edges")].version == 1


def test_delete_transaction_discards_queued_requests(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    txn = pachd_client.start_transaction()
    pachd_client.transaction_id = txn.id
    create(pachd_client, "edges", pfs("images"))
    pachd_client.transaction_id = None
    pachd_client.delete_transaction(txn)
    assert pachd_double.pipelines() == {}
    assert list(pachd_client.list_transaction()) == []
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.inspect_transaction(txn)
    assert rpc_error(excinfo) == (grpc.StatusCode.NOT_FOUND, f"transactions {txn.id} not found")


def test_finishing_an_unknown_transaction_fails(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.finish_transaction("0123456789abcdef0123456789abcdef")
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    # Sending a request into an unknown transaction fails the same way.
    pachd_double.create_repo("images")
    pachd_client.transaction_id = "feedfacefeedfacefeedfacefeedface"
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", pfs("images"))
    assert excinfo.value.code() == grpc.StatusCode.NOT_FOUND
    assert pachd_double.pipelines() == {}


def test_batch_transaction(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    # A batch goes straight to the transaction runner, which (unlike the
    # CreatePipeline RPC) does not default the project.
    request = pps_pb2.CreatePipelineRequest(
        pipeline=pps_pb2.Pipeline(name="edges", project=pfs_pb2.Project(name="default")),
        transform=transform(),
        input=pfs("images"),
    )
    info = pachd_client.batch_transaction(
        [transaction_pb2.TransactionRequest(create_pipeline=request)]
    )
    assert len(info.responses) == 1
    assert pachd_double.applied_transactions()[0].via == "batch"
    assert ("default", "edges") in pachd_double.pipelines()


# ---------------------------------------------------------------- limits


def test_community_edition_pipeline_limit(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    for i in range(PIPELINE_LIMIT):
        create(pachd_client, f"p{i}", pfs("images"))
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "one-too-many", pfs("images"))
    assert excinfo.value.details().startswith(
        "Pachyderm Community Edition requires an activation key to create more than 16 total "
        "pipelines (you have 16)."
    )
    assert len(pachd_double.pipelines()) == PIPELINE_LIMIT
    # Existing pipelines can still be updated.
    create(pachd_client, "p0", pfs("images"), image="registry.local/edges:2", update=True)
    assert pachd_double.pipelines()[("default", "p0")].version == 2

    pachd_double.enterprise = True
    create(pachd_client, "one-too-many", pfs("images"))
    assert len(pachd_double.pipelines()) == PIPELINE_LIMIT + 1


def test_community_edition_parallelism_limit(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    too_wide = pps_pb2.ParallelismSpec(constant=PARALLELISM_LIMIT + 1)
    with pytest.raises(grpc.RpcError) as excinfo:
        create(pachd_client, "edges", pfs("images"), parallelism_spec=too_wide)
    assert "parallelism more than 8" in excinfo.value.details()
    create(
        pachd_client,
        "edges",
        pfs("images"),
        parallelism_spec=pps_pb2.ParallelismSpec(constant=PARALLELISM_LIMIT),
    )
    assert pachd_double.pipelines()[("default", "edges")].parallelism == PARALLELISM_LIMIT


def test_limits_off_with_enterprise() -> None:
    with PachdDouble(enterprise=True) as double:
        double.create_repo("images")
        pachd_client = double.client()
        create(
            pachd_client,
            "wide",
            pfs("images"),
            parallelism_spec=pps_pb2.ParallelismSpec(constant=32),
        )
        assert double.pipelines()[("default", "wide")].parallelism == 32


# ---------------------------------------------------------------- bookkeeping


def test_unimplemented_rpcs_name_the_method(
    pachd_double: PachdDouble, pachd_client: python_pachyderm.Client
) -> None:
    pachd_double.create_repo("images")
    with pytest.raises(grpc.RpcError) as excinfo:
        list(pachd_client.list_branch("images"))
    assert rpc_error(excinfo) == (
        grpc.StatusCode.UNIMPLEMENTED,
        "method ListBranch not implemented",
    )
    with pytest.raises(grpc.RpcError) as excinfo:
        pachd_client.delete_all_pipelines()
    assert excinfo.value.details() == "method DeleteAll not implemented"


def test_call_counts_prove_contact(pachd_double: PachdDouble) -> None:
    assert pachd_double.call_count() == 0
    pachd_client = pachd_double.client()  # building a pachd_client sends nothing
    assert pachd_double.call_count() == 0
    list(pachd_client.list_pipeline())
    assert pachd_double.calls() == {"pps_v2.API/ListPipeline": 1}
    assert pachd_double.call_count("ListPipeline") == 1
    pachd_double.reset_calls()
    assert pachd_double.call_count() == 0


def test_health_check(pachd_double: PachdDouble, pachd_client: python_pachyderm.Client) -> None:
    assert pachd_client.health_check().status == 1  # SERVING


def test_run_by_hand_until_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACH_")}
    proc = subprocess.Popen(
        [sys.executable, str(DOUBLE_SCRIPT), "--port", "0", "--token", "X", "--repo", "images"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        address = proc.stdout.readline().strip()
        assert address.startswith("grpc://127.0.0.1:")
        pachd_client = python_pachyderm.Client.new_from_pachd_address(address, auth_token="X")
        assert pachd_client.inspect_repo("images").repo.name == "images"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
