"""Resolving the connection (pachhook.connection) and the Pachyderm adapter
(pachhook.deploy) against the pachd double, over real gRPC.

With PACHHOOK_TEST_PACHD=grpcs://... (and PACHHOOK_TEST_PACHD_TOKEN) the same tests
run against that cluster instead, each in a project of its own that is deleted
afterwards; tests that need the double's fault injection or call counts are skipped.
"""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pachhook.config import Config, PachydermConfig
from pachhook.errors import InputError, PachhookError
from pachhook.pachyderm.cluster import PachydermCluster
from pachhook.pachyderm.connection import (
    DEFAULT_PORT,
    Endpoint,
    parse_address,
    resolve_connection,
    system_root_certs,
)
from pachhook.pachyderm.specs import (
    ANNOTATION_COMMIT,
    ANNOTATION_DIGEST,
    Pipeline,
    parse_file,
    rewritten,
    spec_digest,
)
from pachhook.plan.planner import dag_order
from pachhook.run import ledger
from tests.cluster import DoubleTarget, Target, closed_port, double_of
from tests.helpers import commit, init_repo, unavailable
from tests.pachd_double import MSG_BAD_TOKEN, PachdDouble


def invoke(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a process of its own."""
    return subprocess.run(
        [sys.executable, "-m", "pachhook", *args], cwd=repo, capture_output=True, text=True
    )


def config_for(address: str | None, project: str = "default") -> Config:
    return Config(path="pachhook.toml", pachyderm=PachydermConfig(address=address, project=project))


def cluster_for(pachd: Target, **env: str) -> PachydermCluster:
    """The operator's cluster is `pachd` (PACHYDERM_CLUSTER_URL), with its token."""
    environment = {"HOME": "/nonexistent", "PACHYDERM_CLUSTER_URL": pachd.address, **env}
    if pachd.token and "PACHYDERM_TOKEN" not in env:
        environment["PACHYDERM_TOKEN"] = pachd.token
    return PachydermCluster.connect(config_for(None), environment)


def operator_env(address: str, **env: str) -> dict[str, str]:
    return {"HOME": "/nonexistent", "PACHYDERM_CLUSTER_URL": address, **env}


def plans(
    docs: list[dict[str, Any]], project: str, spec_file: str = "pipelines.json"
) -> list[tuple[Pipeline, dict[str, Any]]]:
    """What the executor hands to `apply`: DAG-ordered pipelines with their rewritten specs."""
    pipelines = parse_file(spec_file, json.dumps(docs).encode(), project, strict=True)
    out = []
    for p in dag_order(pipelines):
        digest = spec_digest(rewritten(p, p.image, {}))
        spec = rewritten(p, p.image, {ANNOTATION_DIGEST: digest, ANNOTATION_COMMIT: "c0ffee"})
        out.append((p, spec))
    return out


def spec(name: str, *inputs: str, image: str = "registry.example/app:1", **extra: Any) -> dict:
    pfs = [{"pfs": {"repo": repo, "glob": "/*"}} for repo in inputs]
    doc: dict[str, Any] = {
        "pipeline": {"name": name},
        "transform": {"image": image, "cmd": ["sh", "-c", "true"]},
        **extra,
    }
    if pfs:
        doc["input"] = pfs[0] if len(pfs) == 1 else {"cross": pfs}
    return doc


DAG = [
    # Listed downstream first: `apply` must keep the (DAG) order it is given.
    spec("report", "features", "stats"),
    spec("features", "clean"),
    spec("stats", "clean"),
    spec("clean", "raw"),
]


# -- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("grpc://pachd.example.com:1650", Endpoint("pachd.example.com", 1650, False)),
        ("grpcs://pachd.example.com:443", Endpoint("pachd.example.com", 443, True)),
        # pachctl defaults the port to 30650 whatever the scheme (grpcutil/addr.go).
        ("grpcs://pachd.example.com", Endpoint("pachd.example.com", DEFAULT_PORT, True)),
        ("https://pachd.example.com", Endpoint("pachd.example.com", 30650, True)),
        ("http://pachd.example.com:80", Endpoint("pachd.example.com", 80, False)),
        ("pachd.example.com:31400", Endpoint("pachd.example.com", 31400, False)),
        ("pachd.example.com", Endpoint("pachd.example.com", 30650, False)),
        ("GRPCS://Pachd.Example.com:8443/", Endpoint("pachd.example.com", 8443, True)),
        ("[::1]:5000", Endpoint("::1", 5000, False)),
    ],
)
def test_addresses_are_read_as_pachctl_reads_them(value: str, expected: Endpoint) -> None:
    assert parse_address(value, "PACHYDERM_CLUSTER_URL") == expected


def test_ipv6_endpoints_are_bracketed() -> None:
    assert Endpoint("::1", 5000, True).url == "grpcs://[::1]:5000"


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("ftp://pachd:1", "unknown scheme 'ftp'"),
        ("unix:///run/pachd.sock", "unix socket"),
        ("grpc://pachd:1/api", "should not include a path"),
        ("grpc://user:pw@pachd:1", "should not include login credentials"),
        ("grpc://pachd:1?x=1", "should not include a query string"),
        ("grpc://pachd:99999", "port"),
        ("grpc://:1650", "names no host"),
        ("  ", "empty"),
    ],
)
def test_bad_addresses_say_where_they_came_from(value: str, complaint: str) -> None:
    with pytest.raises(InputError) as err:
        parse_address(value, "pachhook.toml: [pachyderm] address")
    assert str(err.value).startswith("pachhook.toml: [pachyderm] address: ")
    assert complaint in str(err.value)


# -- where the address and the token come from ----------------------------------------------


def write_pachctl_config(
    path: Path, contexts: dict[str, dict[str, Any]], active: str | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    v2: dict[str, Any] = {"contexts": contexts, "metrics": False}
    if active is not None:
        v2["active_context"] = active
    path.write_text(json.dumps({"user_id": "u", "v2": v2}, indent=2))
    return path


def test_the_operators_cluster_gets_the_env_token(tmp_path: Path) -> None:
    conn = resolve_connection(
        config_for(None),
        {
            "HOME": str(tmp_path),
            "PACHYDERM_CLUSTER_URL": "grpcs://pachd.example.com:443",
            "PACHYDERM_TOKEN": "s3cret",
        },
    )
    assert conn.endpoint == Endpoint("pachd.example.com", 443, True)
    assert conn.source == "PACHYDERM_CLUSTER_URL"
    assert (conn.token, conn.token_source) == ("s3cret", "PACHYDERM_TOKEN")
    assert "s3cret" not in repr(conn)


def test_a_config_address_must_name_the_operators_cluster(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PACHYDERM_TOKEN": "s3cret"}
    # The same cluster, spelt the same way or not: the token goes there.
    for spelling in ("grpcs://pachd.example.com:443", "https://PACHD.example.com:443/"):
        mine = {**env, "PACHYDERM_CLUSTER_URL": spelling}
        conn = resolve_connection(config_for("grpcs://pachd.example.com:443"), mine)
        assert (conn.token, conn.source) == ("s3cret", "PACHYDERM_CLUSTER_URL")
    # Another cluster, or none named by the operator: refused, naming both.
    for operator in ({"PACHYDERM_CLUSTER_URL": "grpcs://mine.example.com:443"}, {}):
        with pytest.raises(InputError) as err:
            resolve_connection(config_for("grpcs://evil.example.com:443"), {**env, **operator})
        message = str(err.value)
        assert message.startswith(
            "pachhook.toml: [pachyderm] address: grpcs://evil.example.com:443 is chosen by "
            "the repository"
        )
        assert "PACHHOOK_ALLOW_CONFIG_ADDRESS=true" in message and "s3cret" not in message
        assert ("mine.example.com" in message) == bool(operator)
    # Allowed by the operator: the repository's address, but never the env token.
    allowed = {**env, "PACHYDERM_CLUSTER_URL": "grpcs://mine.example.com:443"}
    allowed["PACHHOOK_ALLOW_CONFIG_ADDRESS"] = "1"
    conn = resolve_connection(config_for("grpcs://evil.example.com:443"), allowed)
    assert conn.endpoint.host == "evil.example.com"
    assert conn.token is None and conn.withheld and "PACHYDERM_TOKEN" in conn.withheld


def test_a_token_never_crosses_the_network_in_plain_text(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PACHYDERM_TOKEN": "s3cret"}
    with pytest.raises(InputError) as err:
        resolve_connection(config_for(None), {**env, "PACHYDERM_CLUSTER_URL": "pachd.corp:30650"})
    assert "grpc://pachd.corp:30650 is plain grpc:// beyond this machine" in str(err.value)
    assert "PACHHOOK_ALLOW_PLAINTEXT_TOKEN=true" in str(err.value)
    # Loopback, TLS, no token, or the operator's opt-in: allowed.
    for url in ("grpc://127.0.0.1:30650", "localhost:1650", "grpc://[::1]:1", "grpcs://pachd.corp"):
        resolve_connection(config_for(None), {**env, "PACHYDERM_CLUSTER_URL": url})
    no_token = {"HOME": str(tmp_path), "PACHYDERM_CLUSTER_URL": "pachd.corp:30650"}
    assert resolve_connection(config_for(None), no_token).token is None
    opted = {**env, "PACHYDERM_CLUSTER_URL": "pachd.corp:30650"}
    opted["PACHHOOK_ALLOW_PLAINTEXT_TOKEN"] = "yes"
    assert resolve_connection(config_for(None), opted).token == "s3cret"


def test_the_seeds_cluster_url_is_named_as_the_source(tmp_path: Path) -> None:
    # config.py folds PACHYDERM_CLUSTER_URL into the address when the file has none.
    env = {"HOME": str(tmp_path), "PACHYDERM_CLUSTER_URL": "pachd:30650"}
    conn = resolve_connection(config_for("pachd:30650"), env)
    assert conn.source == "PACHYDERM_CLUSTER_URL"
    assert conn.token is None


def test_pachctls_active_context_supplies_address_token_and_certificates(tmp_path: Path) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    write_pachctl_config(
        tmp_path / ".pachyderm" / "config.json",
        {
            "other": {"pachd_address": "grpc://elsewhere:1650", "session_token": "no"},
            "prod": {
                "pachd_address": "grpcs://pachd.prod:443",
                "session_token": "ctx-token",
                "server_cas": base64.b64encode(pem).decode(),
            },
        },
        active="prod",
    )
    conn = resolve_connection(config_for(None), {"HOME": str(tmp_path)})
    assert conn.endpoint == Endpoint("pachd.prod", 443, True)
    assert "pachctl context 'prod'" in conn.source
    assert (conn.token, conn.token_source) == ("ctx-token", "pachctl context 'prod'")
    assert conn.root_certs == pem
    # PACHYDERM_TOKEN still comes first.
    conn = resolve_connection(config_for(None), {"HOME": str(tmp_path), "PACHYDERM_TOKEN": "env"})
    assert conn.token == "env"


def test_pach_config_and_pach_context_are_honoured(tmp_path: Path) -> None:
    path = write_pachctl_config(
        tmp_path / "elsewhere.json",
        {
            "a": {"pachd_address": "grpc://a:1"},
            # protojson also writes camelCase keys; pachctl reads both.
            "b": {"pachdAddress": "grpcs://b:2", "sessionToken": "tb"},
            "fw": {"port_forwarders": {"pachd": 30651}},
        },
        active="a",
    )
    env = {"HOME": str(tmp_path / "nohome"), "PACH_CONFIG": str(path)}
    assert resolve_connection(config_for(None), env).endpoint == Endpoint("a", 1, False)
    conn = resolve_connection(config_for(None), {**env, "PACH_CONTEXT": "b"})
    assert (conn.endpoint, conn.token) == (Endpoint("b", 2, True), "tb")
    conn = resolve_connection(config_for(None), {**env, "PACH_CONTEXT": "fw"})
    assert conn.endpoint == Endpoint("localhost", 30651, False)


def test_a_contexts_token_goes_only_to_its_own_cluster(tmp_path: Path) -> None:
    write_pachctl_config(
        tmp_path / ".pachyderm" / "config.json",
        {
            "active": {"pachd_address": "grpcs://mine:30650", "session_token": "mine-token"},
            "staging": {"pachd_address": "grpcs://staging:443", "session_token": "staging-token"},
        },
        active="active",
    )
    env = {"HOME": str(tmp_path)}
    # The same cluster as the active context, spelt differently: its token is used.
    assert resolve_connection(config_for("grpcs://mine"), env).token == "mine-token"
    # Another cluster is refused, unless the operator lets the repository choose; then
    # only a context made for that cluster lends its token.
    with pytest.raises(InputError):
        resolve_connection(config_for("grpcs://staging:443"), env)
    allowed = {**env, "PACHHOOK_ALLOW_CONFIG_ADDRESS": "true"}
    assert resolve_connection(config_for("grpcs://someone-else:30650"), allowed).token is None
    conn = resolve_connection(config_for("grpcs://staging:443"), allowed)
    assert (conn.token, conn.token_source) == ("staging-token", "pachctl context 'staging'")


@pytest.mark.parametrize(
    ("contexts", "active", "complaint"),
    [
        ({}, None, "no Pachyderm cluster is configured"),
        ({"a": {"pachd_address": "grpc://a:1"}}, "b", "active context 'b' does not exist"),
        ({"a": {}}, "a", "has no pachd_address"),
        (
            {"a": {"pachd_address": "grpc://a:1", "server_cas": "Zm9v"}},
            "a",
            "server_cas is set but pachd_address is not grpcs://",
        ),
        ({"a": {"pachd_address": "grpcs://a:1", "server_cas": "!!"}}, "a", "not base64"),
    ],
)
def test_unusable_pachctl_configs_are_named(
    tmp_path: Path, contexts: dict[str, Any], active: str | None, complaint: str
) -> None:
    write_pachctl_config(tmp_path / ".pachyderm" / "config.json", contexts, active)
    with pytest.raises(InputError) as err:
        resolve_connection(config_for(None), {"HOME": str(tmp_path)})
    assert complaint in str(err.value)
    if contexts:
        assert str(tmp_path / ".pachyderm" / "config.json") in str(err.value)


def test_no_cluster_anywhere_says_how_to_name_one(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        resolve_connection(config_for(None), {"HOME": str(tmp_path)})
    assert "PACHYDERM_CLUSTER_URL" in str(err.value)


def test_a_broken_pachctl_config_is_named(tmp_path: Path) -> None:
    (tmp_path / ".pachyderm").mkdir()
    (tmp_path / ".pachyderm" / "config.json").write_text("{\n  not json")
    with pytest.raises(InputError) as err:
        resolve_connection(config_for(None), {"HOME": str(tmp_path)})
    assert "config.json:2: pachctl's config is not valid JSON" in str(err.value)
    # Not needed at all when the address and the token are given.
    env = {"HOME": str(tmp_path), "PACHYDERM_TOKEN": "t", "PACHYDERM_CLUSTER_URL": "grpcs://p"}
    assert resolve_connection(config_for(None), env).token == "t"


def test_system_roots_are_pem() -> None:
    assert b"-----BEGIN CERTIFICATE-----" in system_root_certs()


def test_resolving_a_connection_does_not_import_python_pachyderm() -> None:
    code = (
        "import sys\n"
        "from pachhook.config import Config, PachydermConfig\n"
        "from pachhook.pachyderm.connection import resolve_connection\n"
        "from pachhook.pachyderm.cluster import PachydermCluster\n"
        "resolve_connection(Config(path=None), {'PACHYDERM_CLUSTER_URL': 'p:1'})\n"
        "print(sorted(m for m in ('python_pachyderm', 'grpc') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# -- talking to the cluster ------------------------------------------------------------------


def test_connecting_through_pachctls_config_only(pachd: Target, tmp_path: Path) -> None:
    write_pachctl_config(
        tmp_path / ".pachyderm" / "config.json",
        {"here": {"pachd_address": pachd.address, "session_token": pachd.token or ""}},
        active="here",
    )
    cluster = PachydermCluster.connect(config_for(None), {"HOME": str(tmp_path)})
    assert isinstance(cluster.pipeline_digests(), dict)


def test_reads_every_pipelines_digest_in_one_call(pachd: Target, project: str) -> None:
    pachd.create_repo("raw", project)
    cluster = cluster_for(pachd)
    specs = plans(DAG, project)
    cluster.apply(specs, reprocess=False)
    if isinstance(pachd, DoubleTarget):
        pachd.double.reset_calls()
    digests = cluster.pipeline_digests()
    want = {(project, p.name): s["metadata"]["annotations"][ANNOTATION_DIGEST] for p, s in specs}
    assert {k: v for k, v in digests.items() if k[0] == project} == want
    if isinstance(pachd, DoubleTarget):
        assert pachd.double.calls() == {"pps_v2.API/ListPipeline": 1}


def test_a_pipeline_without_pachhooks_annotation_has_no_digest(pachd: Target, project: str) -> None:
    pachd.create_repo("raw", project)
    cluster = cluster_for(pachd)
    (plan, doc), *_ = plans([spec("hand-made", "raw")], project)
    del doc["metadata"]
    cluster.apply([(plan, doc)], reprocess=False)
    assert cluster.pipeline_digests()[(project, "hand-made")] is None


def test_apply_creates_in_order_in_one_transaction(pachd: Target, project: str) -> None:
    pachd.create_repo("raw", project)
    cluster = cluster_for(pachd)
    specs = plans(DAG, project)
    assert [p.name for p, _ in specs] == ["clean", "features", "stats", "report"]
    txn = cluster.apply(specs, reprocess=False)
    assert len(txn) >= 16
    deployed = pachd.pipelines(project)
    assert set(deployed) == {"clean", "features", "stats", "report"}
    assert all(d.version == 1 for d in deployed.values())
    assert deployed["report"].annotations[ANNOTATION_COMMIT] == "c0ffee"
    if isinstance(pachd, DoubleTarget):
        (applied,) = pachd.double.applied_transactions()
        assert applied.id == txn
        sent = [r.create_pipeline.pipeline.name for r in applied.requests]
        assert sent == [p.name for p, _ in specs]
        assert all(r.create_pipeline.update for r in applied.requests)
        assert pachd.double.open_transactions() == {}


def test_apply_updates_with_update_and_reprocess(pachd: Target, project: str) -> None:
    pachd.create_repo("raw", project)
    cluster = cluster_for(pachd)
    cluster.apply(plans(DAG, project), reprocess=False)
    changed = [dict(d, transform={"image": "registry.example/app:2", "cmd": ["true"]}) for d in DAG]
    cluster.apply(plans(changed, project)[:2], reprocess=True)
    deployed = pachd.pipelines(project)
    assert deployed["clean"].version == 2
    assert deployed["clean"].image == "registry.example/app:2"
    assert deployed["report"].version == 1
    if isinstance(pachd, DoubleTarget):
        assert deployed["clean"].reprocess is True


def test_the_plans_project_is_used_when_the_spec_names_none(pachd: Target, project: str) -> None:
    pachd.create_repo("raw", project)
    cluster_for(pachd).apply(plans([spec("clean", "raw")], project), reprocess=False)
    assert set(pachd.pipelines(project)) == {"clean"}


def test_an_injected_failure_at_finish_applies_nothing(pachd: Target, project: str) -> None:
    double = double_of(pachd)
    pachd.create_repo("raw", project)
    cluster = cluster_for(pachd)
    cluster.apply(plans(DAG, project), reprocess=False)
    before = pachd.pipelines(project)
    double.fail_pipeline("stats", "quota exceeded", project=project, at="finish")
    changed = [dict(d, description="v2") for d in DAG]
    with pytest.raises(PachhookError) as err:
        cluster.apply(plans(changed, project), reprocess=False)
    message = str(err.value)
    assert f"pipeline {project}/stats (pipelines.json:1)" in message
    assert "quota exceeded" in message
    assert "nothing was applied" in message
    assert "\n" not in message
    assert pachd.pipelines(project) == before
    assert double.open_transactions() == {}


def test_a_failure_while_sending_applies_nothing(pachd: Target, project: str) -> None:
    double = double_of(pachd)
    pachd.create_repo("raw", project)
    cluster = cluster_for(pachd)
    double.fail_pipeline("features", "admission denied", project=project, at="queue")
    with pytest.raises(PachhookError) as err:
        cluster.apply(plans(DAG, project), reprocess=False)
    assert f"sending pipeline {project}/features" in str(err.value)
    assert "admission denied; nothing was applied" in str(err.value)
    assert pachd.pipelines(project) == {}
    assert double.open_transactions() == {}
    assert double.call_count("DeleteTransaction") == 1


def test_a_missing_input_repo_fails_when_sent(pachd: Target, project: str) -> None:
    cluster = cluster_for(pachd)
    with pytest.raises(PachhookError) as err:
        cluster.apply(plans(DAG, project), reprocess=False)
    assert f"pipeline {project}/clean" in str(err.value)
    assert f"repo {project}/raw not found" in str(err.value)
    assert pachd.pipelines(project) == {}


def test_missing_repos_are_found_with_one_call(pachd: Target, project: str) -> None:
    pachd.create_repo("raw", project)
    cluster = cluster_for(pachd)
    if isinstance(pachd, DoubleTarget):
        pachd.double.reset_calls()
    wanted = [(project, "raw"), (project, "labels"), ("default", "raw-" + project)]
    assert cluster.missing_repos(wanted) == wanted[1:]
    assert cluster.missing_repos([]) == []
    if isinstance(pachd, DoubleTarget):
        assert pachd.double.calls() == {"pfs_v2.API/ListRepo": 1}


def test_unparseable_fields_are_named_before_anything_is_sent(pachd: Target, project: str) -> None:
    cluster = cluster_for(pachd)
    docs = [spec("clean", "raw"), spec("odd", "clean", transform={"image": "x", "gpu": 1})]
    with pytest.raises(InputError) as err:
        cluster.apply(plans(docs, project, "regression.json"), reprocess=False)
    assert str(err.value).startswith("regression.json:1: pipeline odd: field 'transform.gpu'")
    assert "is not known to python-pachyderm 7.6" in str(err.value)
    if isinstance(pachd, DoubleTarget):
        assert pachd.double.call_count() == 0


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({"frobnicate": True}, "field 'frobnicate' is not known"),
        (
            {"input": {"cross": [{"pfs": {"repo": "raw", "glob": "/*", "lazzy": True}}]}},
            "field 'input.cross.pfs.lazzy' is not known",
        ),
        ({"parallelism_spec": {"constant": "many"}}, "field 'parallelism_spec.constant' has a bad"),
        ({"datum_timeout": "1m"}, "field 'datum_timeout' has a bad value"),
    ],
)
def test_parse_errors_name_the_field(extra: dict[str, Any], complaint: str) -> None:
    from pachhook.pachyderm.cluster import to_request

    (plan, doc), *_ = plans([spec("p", **extra)], "default", "p.json")
    with pytest.raises(InputError) as err:
        to_request(plan, doc, reprocess=False)
    assert str(err.value).startswith("p.json:1: pipeline p: ")
    assert complaint in str(err.value)


# -- failures that must read as one clear line, without the token ----------------------------


def assert_clean(err: PachhookError, *secrets: str) -> None:
    message = str(err)
    assert "\n" not in message
    for secret in secrets:
        assert secret not in message
    # Nothing chained that a traceback or a log could print either.
    assert err.__cause__ is None and err.__suppress_context__


def test_a_wrong_token_is_refused_clearly(pachd: Target) -> None:
    if not pachd.token:
        pytest.skip("the cluster runs without auth")
    secret = "wrong-" + uuid.uuid4().hex
    cluster = cluster_for(pachd, PACHYDERM_TOKEN=secret)
    with pytest.raises(PachhookError) as err:
        cluster.pipeline_digests()
    assert_clean(err.value, secret)
    assert "refused the token from PACHYDERM_TOKEN" in str(err.value)
    if isinstance(pachd, DoubleTarget):
        assert MSG_BAD_TOKEN in str(err.value)


def test_a_missing_token_is_asked_for(pachd: Target) -> None:
    double_of(pachd)  # a real cluster may run without auth
    cluster = PachydermCluster.connect(config_for(None), operator_env(pachd.address))
    with pytest.raises(PachhookError) as err:
        cluster.pipeline_digests()
    assert "needs a token" in str(err.value)
    assert "PACHYDERM_TOKEN" in str(err.value)


def test_a_token_in_the_servers_answer_is_masked(pachd: Target, project: str) -> None:
    double = double_of(pachd)
    assert pachd.token
    double.fail_pipeline("clean", f"bad header authn-token={pachd.token}", project=project)
    pachd.create_repo("raw", project)
    with pytest.raises(PachhookError) as err:
        cluster_for(pachd).apply(plans([spec("clean", "raw")], project), reprocess=False)
    assert_clean(err.value, pachd.token)
    assert "authn-token=***" in str(err.value)


def test_an_unreachable_cluster_is_one_line(tmp_path: Path) -> None:
    port = closed_port()
    secret = "t-" + uuid.uuid4().hex
    cluster = PachydermCluster.connect(
        config_for(None), operator_env(f"grpc://127.0.0.1:{port}", PACHYDERM_TOKEN=secret)
    )
    started = time.monotonic()
    for call in (cluster.pipeline_digests, lambda: cluster.missing_repos([("default", "raw")])):
        with pytest.raises(PachhookError) as err:
            call()
        assert_clean(err.value, secret)
        assert f"pachd at grpc://127.0.0.1:{port}" in str(err.value)
        assert "is unreachable" in str(err.value)
    assert time.monotonic() - started < 10


def test_a_server_that_is_not_pachd_is_one_line() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"127.0.0.1:{server.server_port}"
        cluster = PachydermCluster.connect(config_for(None), operator_env(address))
        with pytest.raises(PachhookError) as err:
            cluster.pipeline_digests()
        assert_clean(err.value)
        assert f"grpc://{address}" in str(err.value)
    finally:
        server.shutdown()
        server.server_close()


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes, Path]:
    """(key, certificate, certificate file) of a self-signed CA for 127.0.0.1."""
    openssl = shutil.which("openssl")
    if openssl is None:
        unavailable("openssl is not installed (Debian package openssl)")
    root = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(root / "key.pem"), "-out", str(root / "cert.pem"),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return (root / "key.pem").read_bytes(), (root / "cert.pem").read_bytes(), root / "cert.pem"


@pytest.fixture
def tls_double(certificate: tuple[bytes, bytes, Path]) -> Iterator[PachdDouble]:
    key, cert, _ = certificate
    with PachdDouble(token="tls-token", tls=(key, cert)) as double:
        yield double


def test_grpcs_with_the_contexts_server_cas(
    tls_double: PachdDouble, certificate: tuple[bytes, bytes, Path], tmp_path: Path
) -> None:
    write_pachctl_config(
        tmp_path / ".pachyderm" / "config.json",
        {
            "tls": {
                "pachd_address": tls_double.address,
                "server_cas": base64.b64encode(certificate[1]).decode(),
                "session_token": "tls-token",
            }
        },
        active="tls",
    )
    assert tls_double.address.startswith("grpcs://")
    cluster = PachydermCluster.connect(config_for(None), {"HOME": str(tmp_path)})
    assert cluster.pipeline_digests() == {}


def test_grpcs_with_system_roots(
    tls_double: PachdDouble,
    certificate: tuple[bytes, bytes, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = operator_env(tls_double.address, HOME=str(tmp_path), PACHYDERM_TOKEN="tls-token")
    cluster = PachydermCluster.connect(config_for(None), env)
    with pytest.raises(PachhookError) as err:
        cluster.pipeline_digests()  # the test CA is not among the system's roots
    assert "TLS failed" in str(err.value)
    assert_clean(err.value, "tls-token")
    # The system's roots are OpenSSL's: SSL_CERT_FILE adds a CA as it would for pachctl.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[2]))
    cluster = PachydermCluster.connect(config_for(None), env)
    assert cluster.pipeline_digests() == {}


def test_plain_grpc_to_a_tls_server_fails_clearly(tls_double: PachdDouble) -> None:
    address = tls_double.address.replace("grpcs://", "grpc://")
    cluster = PachydermCluster.connect(
        config_for(None), operator_env(address, PACHYDERM_TOKEN="tls-token")
    )
    with pytest.raises(PachhookError) as err:
        cluster.pipeline_digests()
    assert "is unreachable" in str(err.value)
    assert_clean(err.value, "tls-token")


# -- pachhook status ------------------------------------------------------------------------


def test_status_shows_runs_and_other_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = init_repo(tmp_path / "repo")
    commit(repo, "first", {"README.md": "x\n"})
    state = repo / ".git" / "pachhook"
    sha = "a" * 40
    ledger.append(
        state,
        {
            "kind": "run",
            "id": "r1",
            "started": 1_700_000_000.0,
            "finished": 1_700_000_004.5,
            "trigger": "cli",
            "source": "commit",
            "commit": sha,
            "changed_files": 1,
            "images": [
                {"name": "reg/app", "reference": "reg/app:ph-1", "status": "built"},
                {"name": "reg/tools", "reference": "reg/tools:ph-2", "status": "exists"},
            ],
            "pipelines": [
                {"project": "default", "name": "clean", "status": "applied"},
                {"project": "default", "name": "report", "status": "unchanged"},
            ],
            "transaction": "txn-123",
            "error": None,
            "notes": [],
        },
    )
    ledger.append(
        state,
        # Still within its time: a post-push deploy waits `timeout` seconds at most.
        {"kind": "post-push", "id": "p1", "time": time.time(), "state": "pending", "commit": sha},
    )
    ledger.append(
        state,
        {
            "kind": "run",
            "id": "r2",
            "started": 1_700_000_020.0,
            "finished": 1_700_000_021.0,
            "trigger": "hook",
            "commit": sha,
            "images": [{"name": "reg/app", "reference": "reg/app:ph-3", "status": "failed"}],
            "pipelines": [{"project": "default", "name": "clean", "status": "not applied"}],
            "transaction": None,
            "error": "image failed: reg/app:ph-3; no pipeline was updated",
        },
    )
    monkeypatch.chdir(repo)
    result = invoke(repo, "status")
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert out.splitlines()[0].startswith("pending: post-push p1 since ")
    headers = [line.split("  ")[1] for line in out.splitlines()[2:] if line[:1].isdigit()]
    assert headers == ["run (hook)", "post-push", "run (cli)"]  # newest first
    assert "commit aaaaaaaaaaaa" in out
    assert "images: built reg/app:ph-1; exists reg/tools:ph-2" in out
    assert "pipelines: applied 1 (default/clean) in transaction txn-123; 1 not changed" in out
    assert "run (cli)  commit aaaaaaaaaaaa  ok  4.5s" in out
    assert "images: failed reg/app:ph-3" in out
    assert "error: image failed: reg/app:ph-3; no pipeline was updated" in out
    assert "state pending" in out

    result = invoke(repo, "status", "-n", "1", "--json")
    assert result.returncode == 0, result.stdout
    data = json.loads(result.stdout)
    assert [e["id"] for e in data["entries"]] == ["r2"]
    assert [e["id"] for e in data["pending"]] == ["p1"]

    ledger.append(state, {"kind": "post-push", "id": "p1", "time": 1_700_000_030, "state": "done"})
    result = invoke(repo, "status", "-n", "2")
    assert "pending:" not in result.stdout
    assert "post-push  state done" in result.stdout


def test_status_with_an_empty_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = init_repo(tmp_path / "repo")
    commit(repo, "first", {"README.md": "x\n"})
    monkeypatch.chdir(repo)
    result = invoke(repo, "status")
    assert result.returncode == 0
    assert "nothing recorded yet" in result.stdout
