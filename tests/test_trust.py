"""Trust boundaries: what the operator's environment and settings decide, and what a
commit (a pulled branch, a pull request in CI) cannot.

Each credential goes only to the host it was given for; the hook policy comes from the
operator (git config, PACHHOOK_*) or the remote's default branch, never from the commit
being pushed or merged. The malicious-commit test points a repository at a second pachd
double and at a registry that logs every byte it is sent, and proves that neither sees a
credential.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from pachhook.docker.credentials import (
    _host_of,
    environment_credentials,
    environment_hosts,
    host_variable,
)
from pachhook.docker.engine import Engine
from pachhook.docker.images import DockerImages
from pachhook.docker.registry import Registries, Registry, RegistryError
from pachhook.errors import InputError
from pachhook.hooks.policy import hook_policy, hooks_prune
from pachhook.plan.load import plan_selection
from pachhook.repo.git import Repo
from pachhook.repo.selection import Selection
from pachhook.run import ledger
from pachhook.run.progress import BuildProgress
from tests import services
from tests.cluster import closed_port
from tests.faults import logging_registry
from tests.helpers import clean_env, commit, git, init_repo, spec, write
from tests.helpers import pachhook_in as pachhook
from tests.pachd_double import PachdDouble


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


# -- registry credentials are bound to their host ----------------------------------------------


@pytest.mark.parametrize(
    ("host", "variable"),
    [
        ("ghcr.io", "PACHHOOK_REGISTRY_AUTH_ghcr_io"),
        ("docker.io", "PACHHOOK_REGISTRY_AUTH_docker_io"),
        ("my-reg.example:5000", "PACHHOOK_REGISTRY_AUTH_my__reg_example___5000"),
        ("127.0.0.1:5000", "PACHHOOK_REGISTRY_AUTH_127_0_0_1___5000"),
        ("xn--bcher-kva.example", "PACHHOOK_REGISTRY_AUTH_xn____bcher__kva_example"),
    ],
)
def test_a_hosts_variable_spells_that_host_alone(host: str, variable: str) -> None:
    assert host_variable(host) == variable
    assert _host_of(variable) == host
    assert _host_of(variable.upper()) == host  # the name in any case


def test_hosts_that_differ_get_different_variables() -> None:
    # A variable named after a look-alike host must never serve the real one.
    hosts = [
        "registry.acme.com",
        "registry-acme.com",
        "registry.acme.com:443",
        "registry--acme.com",
    ]
    assert len({host_variable(h).lower() for h in hosts}) == len(hosts)


def test_the_seeds_variables_are_docker_hubs_only(tmp_path: Path) -> None:
    env = clean_env(tmp_path, DOCKERHUB_USERNAME="hub", DOCKERHUB_TOKEN="hub-secret")
    env["PACHHOOK_REGISTRY_AUTH_ghcr_io"] = "me:ghcr-secret"
    registries = Registries(env)
    hub = registries.credentials("docker.io")
    assert hub is not None and (hub.username, hub.password) == ("hub", "hub-secret")
    ghcr = registries.credentials("ghcr.io")
    assert ghcr is not None and (ghcr.username, ghcr.password) == ("me", "ghcr-secret")
    for host in ("127.0.0.1:5000", "quay.io", "evil.example", "ghcr.io:443"):
        assert registries.credentials(host) is None, host
    assert environment_hosts(env) == ["docker.io", "ghcr.io"]
    # An explicit variable for Docker Hub wins over the seed's.
    env["PACHHOOK_REGISTRY_AUTH_docker_io"] = "other:explicit"
    found = environment_credentials("docker.io", env)
    assert found is not None and found.password == "explicit"
    with pytest.raises(InputError, match="PACHHOOK_REGISTRY_AUTH_quay_io: expected USERNAME:TOKEN"):
        environment_credentials("quay.io", {"PACHHOOK_REGISTRY_AUTH_quay_io": "no-colon"})


def test_the_engine_gets_each_credential_for_its_own_host_only(tmp_path: Path) -> None:
    env = clean_env(tmp_path, DOCKERHUB_USERNAME="hub", DOCKERHUB_TOKEN="hub-secret")
    env["PACHHOOK_REGISTRY_AUTH_127_0_0_1___5000"] = "local:local-secret"
    engine = Engine(
        env,
        Registries(env),
        BuildProgress(lambda line: None),
        logs_dir=tmp_path,
        source_url="x",
        image_hosts=["evil.example", "127.0.0.1:5000"],
    )
    client = docker.DockerClient(base_url="unix:///nonexistent.sock", version="1.41")
    engine._inject_environment_credentials(client)
    auths = client.api._auth_configs["auths"]
    assert set(auths) == {"https://index.docker.io/v1/", "127.0.0.1:5000"}
    assert auths["https://index.docker.io/v1/"]["password"] == "hub-secret"
    assert auths["127.0.0.1:5000"]["password"] == "local-secret"


@pytest.mark.parametrize(
    ("realm", "complaint"),
    [
        (
            "https://auth.evil.example/token",
            "its token service is on another host, auth.evil.example",
        ),
        ("http://auth.evil.example/token", "is plain http://"),
        ("ftp://127.0.0.1/token", "is not an http(s) URL"),
    ],
)
def test_credentials_go_to_no_token_service_the_operator_did_not_allow(
    tmp_path: Path, realm: str, complaint: str
) -> None:
    with logging_registry(realm=realm) as trap:
        env = {host_variable(trap.address): "user:reg-secret"}
        registry = Registries(env).registry(trap.address)
        with pytest.raises(RegistryError) as err:
            registry.manifest_digest("acme/app", "ph-1")
        assert complaint in str(err.value) and "no credentials were sent" in str(err.value)
        assert "reg-secret" not in trap.text() and "Authorization" not in trap.text()
    # A token service the operator lists is allowed.
    allowed = Registry("127.0.0.1:1", lambda: None, realm_hosts=("auth.evil.example",))
    allowed._check_realm("https://auth.evil.example/token")


def test_a_token_service_on_the_registrys_own_machine_gets_the_credentials() -> None:
    with logging_registry(grant=True) as registry:
        env = {host_variable(registry.address): "user:reg-secret"}
        assert Registries(env).registry(registry.address).manifest_digest("a/b", "t") is None
        token_requests = [line for line in registry.log if line.startswith("GET /token")]
        assert token_requests and "Authorization: Basic" in token_requests[0]


def test_a_missing_credential_helper_is_named_before_any_work(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo")
    write(
        root,
        {
            "pachhook.toml": f'[[image]]\nname = "127.0.0.1:{closed_port()}/t/app"\ncontext = "app"\n',
            "app/Dockerfile": "FROM scratch\nCOPY main.sh /main.sh\n",
            "app/main.sh": "echo 1\n",
        },
    )
    commit(root, "initial")
    env = clean_env(tmp_path, DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock")
    config = Path(env["DOCKER_CONFIG"]) / "config.json"
    config.write_text(json.dumps({"credsStore": "desktop"}))
    proc = pachhook(root, "run", "--all", "--no-deploy", env=env)
    assert proc.returncode == 2, proc.stderr
    line = one_line(proc)
    assert f"{config}: credsStore names the credential helper docker-credential-desktop" in line
    assert "not on PATH" in line and "install it or add its folder to PATH" in line
    assert ledger.read(root / ".git" / "pachhook") == []  # nothing ran
    # A registry read that needs credentials says the same, not "internal error".
    registries = Registries(env)
    with pytest.raises(InputError, match="docker-credential-desktop, which is not on PATH"):
        registries.credentials("127.0.0.1:1")
    config.write_text(json.dumps({"credHelpers": {"ghcr.io": "gcloud-nope"}}))
    proc = pachhook(root, "run", "--all", "--no-deploy", env=env)
    assert proc.returncode == 2
    assert "credHelpers['ghcr.io'] names the credential helper docker-credential-gcloud-nope" in (
        one_line(proc)
    )


# -- the malicious commit: a second pachd and a registry that logs everything --------------------


@dataclass
class Operator:
    root: Path
    env: dict[str, str]
    secrets: tuple[str, ...]
    registry: services.Registry
    cluster: PachdDouble


@pytest.fixture
def operator(
    tmp_path: Path,
    docker_engine: services.DockerEngine,
    base_image: str,
    auth_registry: Any,
) -> Iterator[Operator]:
    """A repository deployed by its operator: the operator's registry (basic auth), cluster
    (a token) and a Docker Hub account, all in the environment."""
    unique = uuid.uuid4().hex
    hub_user, hub_token = f"hubuser{unique[:8]}", f"hub-{unique}"
    reg_token, pachd_token = f"reg-{unique}", f"pachd-{unique}"
    registry = auth_registry(f"reguser{unique[:8]}", reg_token)
    with PachdDouble(token=pachd_token) as cluster:
        cluster.create_repo("raw")
        root = init_repo(tmp_path / "repo")
        image = f"{registry.address}/acme/app"
        write(
            root,
            {
                "pachhook.toml": f'[[image]]\nname = "{image}"\ncontext = "app"\n',
                "app/Dockerfile": f"FROM {base_image}\nCOPY main.sh /main.sh\n",
                "app/main.sh": "echo 1\n",
                "pipelines/clean.json": spec("clean", image, "raw"),
            },
        )
        commit(root, "initial")
        env = clean_env(
            tmp_path,
            DOCKER_HOST=docker_engine.host,
            PACHYDERM_CLUSTER_URL=cluster.address,
            PACHYDERM_TOKEN=pachd_token,
            DOCKERHUB_USERNAME=hub_user,
            DOCKERHUB_TOKEN=hub_token,
        )
        env[host_variable(registry.address)] = f"{registry.username}:{reg_token}"
        first = pachhook(root, "run", "--all", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert cluster.pipelines()[("default", "clean")].version == 1
        secrets = (hub_user, hub_token, reg_token, pachd_token)
        yield Operator(root, env, secrets, registry, cluster)


def test_a_malicious_commit_sends_no_credential_anywhere(operator: Operator) -> None:
    root, env = operator.root, operator.env
    with PachdDouble(token="attacker-" + uuid.uuid4().hex) as attacker, logging_registry() as trap:
        # 1. The commit points the deploy at another cluster: refused before any work.
        toml = (root / "pachhook.toml").read_text()
        commit(
            root,
            "elsewhere",
            {
                "pachhook.toml": f'{toml}\n[pachyderm]\naddress = "{attacker.address}"\n'
                '[hooks]\ndeploy_branches = ["**"]\npost_commit = "build"\n',
                "app/main.sh": "echo 2\n",
            },
        )
        proc = pachhook(root, "run", "--all", env=env)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        line = one_line(proc)
        assert line.startswith(
            f"pachhook: pachhook.toml: [pachyderm] address: {attacker.address} is chosen by the "
            "repository, and the operator's cluster is"
        )
        assert proc.stdout == ""  # nothing planned aloud, nothing built
        assert attacker.call_count() == 0
        tags = operator.registry.tags("acme/app")
        assert len(tags) == 1

        # 2. The operator lets the repository choose: PACHYDERM_TOKEN still stays home.
        allowed = {**env, "PACHHOOK_ALLOW_CONFIG_ADDRESS": "1"}
        proc = pachhook(root, "run", "--all", env=allowed)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"pachd at {attacker.address}" in proc.stderr
        assert "needs a token while listing pipelines and none was sent" in proc.stderr
        assert "PACHYDERM_TOKEN was not sent" in proc.stderr
        assert attacker.call_count() > 0 and attacker.tokens_seen() == set()

        # 3. The commit points the image at a registry that logs every request.
        trap_image = f"{trap.address}/acme/app"
        commit(
            root,
            "trap",
            {
                "pachhook.toml": f'[[image]]\nname = "{trap_image}"\ncontext = "app"\n',
                "pipelines/clean.json": spec("clean", trap_image, "raw"),
            },
        )
        proc = pachhook(root, "run", "--all", env=env)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert f"registry {trap.address} asks for credentials" in proc.stdout
        assert f"{host_variable(trap.address)}=USERNAME:TOKEN" in proc.stdout
        # The engine's push to it, too: it is handed no credential for that host.
        repo = Repo.discover(root)
        planned = plan_selection(repo, Selection(everything=True), env)
        assert planned.workspace is not None
        images = DockerImages.from_environment(
            repo, planned.workspace.config, env, BuildProgress(lambda line: None), root / "logs"
        )
        state = planned.plan.images[0].state
        assert state is not None
        result = images.build(state, planned.resolved.source, push=True)
        assert result.status == "failed" and result.error is not None
        assert result.error.startswith("push refused: registry") or "unauthorized" in result.error

    seen = trap.text()
    assert "User-Agent: pachhook" in seen and "User-Agent: docker/" in seen  # both came asking
    assert "authorization:" not in seen.lower()  # basic auth would be base64: no header at all
    for secret in operator.secrets:
        assert secret not in seen
        assert secret not in "".join(attacker.tokens_seen())
    assert operator.cluster.pipelines()[("default", "clean")].version == 1


# -- the hook policy is the operator's ----------------------------------------------------------


@dataclass
class Pushed:
    root: Path
    remote: Path
    env: dict[str, str]
    cluster: PachdDouble

    def versions(self) -> dict[str, int]:
        return {name: r.version for (_, name), r in self.cluster.pipelines().items()}


@pytest.fixture
def pushed(tmp_path: Path) -> Iterator[Pushed]:
    """Specs on an image pachhook does not build, deployed, main pushed to a bare remote,
    the pre-push and post-merge hooks installed."""
    with PachdDouble(token="tok-" + uuid.uuid4().hex) as cluster:
        cluster.create_repo("raw")
        root = init_repo(tmp_path / "repo")
        write(
            root,
            {
                "pachhook.toml": '[pipelines]\ninclude = ["pipelines/*.json"]\n\n'
                "[hooks]\npost_push_timeout = 20\n",
                "pipelines/one.json": spec("one", "busybox:1", "raw"),
            },
        )
        commit(root, "initial")
        env = clean_env(
            tmp_path, PACHYDERM_CLUSTER_URL=cluster.address, PACHYDERM_TOKEN=cluster.token or ""
        )
        assert pachhook(root, "run", "--all", env=env).returncode == 0
        remote = tmp_path / "remote.git"
        remote.mkdir()
        git(remote, "init", "-q", "--bare", "-b", "main")
        git(root, "remote", "add", "origin", str(remote))
        git(root, "push", "-q", "-u", "origin", "main")
        git(root, "remote", "set-head", "origin", "main")
        proc = pachhook(root, "install", "-t", "pre-push", "-t", "post-merge", env=env)
        assert proc.returncode == 0, proc.stderr
        yield Pushed(root, remote, env, cluster)


def test_a_feature_branch_cannot_make_itself_a_deploy_branch(pushed: Pushed) -> None:
    git(pushed.root, "checkout", "-q", "-b", "feature")
    commit(
        pushed.root,
        "deploy me",
        {
            "pachhook.toml": '[pipelines]\ninclude = ["pipelines/*.json"]\n\n'
            '[hooks]\ndeploy_branches = ["**"]\n',
            "pipelines/one.json": spec("one", "busybox:1", "raw", description="feature"),
        },
    )
    proc = subprocess.run(
        ["git", "push", "origin", "feature"], cwd=pushed.root, env=pushed.env, text=True,
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "[hooks] deploy_branches in the pushed commit not used" in proc.stderr
    assert "feature is not a deploy branch (the remote's default branch: main)" in proc.stderr
    state = pushed.root / ".git" / "pachhook"
    assert [e for e in ledger.read(state) if e.get("kind") == "post-push"] == []
    assert pushed.versions() == {"one": 1}

    # The operator's own setting does make it one.
    git(pushed.root, "config", "pachhook.deployBranches", "main feature")
    policy = hook_policy(Repo.discover(pushed.root), "origin", pushed.env)
    assert policy.deploy_branches == ("main", "feature")
    assert policy.origins["deploy_branches"] == "git config pachhook.deployBranches"


def test_a_pulled_commit_cannot_make_a_pull_build(pushed: Pushed, tmp_path: Path) -> None:
    # Someone else pushes a commit that asks every pull to build its Dockerfile.
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(pushed.remote), str(other))
    write(
        other,
        {
            "pachhook.toml": f'[[image]]\nname = "127.0.0.1:{closed_port()}/x/app"\n'
            'context = "app"\n[pipelines]\ninclude = ["pipelines/*.json"]\n\n'
            '[hooks]\npost_commit = "build"\n',
            "app/Dockerfile": "FROM scratch\nCOPY main.sh /main.sh\n",
            "app/main.sh": "echo pulled\n",
        },
    )
    git(other, "add", "-A")
    git(other, "commit", "-q", "-m", "build on pull")
    git(other, "push", "-q", "origin", "main")
    proc = subprocess.run(
        ["git", "pull", "-q", "--ff-only", "origin", "main"], cwd=pushed.root, env=pushed.env,
        text=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # The merge is shown, not built: the mode is this machine's, and its default is "plan".
    assert "pachhook: what this merge changes" in proc.stderr, proc.stderr
    runs = [e for e in ledger.read(pushed.root / ".git" / "pachhook") if e.get("kind") == "run"]
    assert all(r.get("trigger") != "post-merge" for r in runs)  # "build" would record one
    # Even from the remote's default branch, post_commit is never read: only the operator's.
    policy = hook_policy(Repo.discover(pushed.root), None, pushed.env)
    assert (policy.post_commit, policy.origins["post_commit"]) == ("plan", "default")


def test_where_each_policy_setting_is_read_from(pushed: Pushed) -> None:
    repo = Repo.discover(pushed.root)
    policy = hook_policy(repo, "origin", pushed.env)
    assert policy.post_push_timeout == 20
    assert policy.origins["post_push_timeout"] == "[hooks] post_push_timeout at origin/main"
    assert policy.origins["deploy_branches"] == "default" and policy.deploy_branches is None
    git(pushed.root, "config", "pachhook.postPushTimeout", "45")
    assert hook_policy(repo, "origin", pushed.env).post_push_timeout == 45
    env = {**pushed.env, "PACHHOOK_POST_PUSH_TIMEOUT": "7", "PACHHOOK_ON_BUILD_FAILURE": "warn"}
    policy = hook_policy(repo, "origin", env)
    assert (policy.post_push_timeout, policy.on_build_failure) == (7, "warn")
    assert policy.origins["on_build_failure"] == "PACHHOOK_ON_BUILD_FAILURE"
    with pytest.raises(InputError, match="PACHHOOK_ON_BUILD_FAILURE: got 'maybe'"):
        hook_policy(repo, "origin", {**env, "PACHHOOK_ON_BUILD_FAILURE": "maybe"})
    git(pushed.root, "config", "pachhook.postPushTimeout", "soon")
    with pytest.raises(InputError, match="git config pachhook.postPushTimeout: got 'soon'"):
        hook_policy(repo, "origin", pushed.env)


def test_operator_settings_are_never_read_from_the_repository(tmp_path: Path) -> None:
    """A committed .gitconfig, or a pachhook.toml key of the same name, is not a setting."""
    root = init_repo(tmp_path / "repo")
    commit(root, "tries", {".gitconfig": "[pachhook]\n\tallowConfigAddress = true\n"})
    from pachhook.repo.settings import Settings

    settings = Settings.load({}, root)
    assert settings.allow_config_address is False
    git(root, "config", "pachhook.allowConfigAddress", "true")
    assert Settings.load({}, root).allow_config_address is True
    assert Settings.load({"PACHHOOK_ALLOW_CONFIG_ADDRESS": "0"}, root).allow_config_address is False
    # Whether hooks prune: the same two places, off by default.
    repo = Repo.discover(root)
    assert hooks_prune(repo, {}) is False
    git(root, "config", "pachhook.prune", "true")
    assert hooks_prune(repo, {}) is True
    assert hooks_prune(repo, {"PACHHOOK_PRUNE": "no"}) is False
    with pytest.raises(InputError, match="PACHHOOK_PRUNE: got 'sometimes'"):
        hooks_prune(repo, {"PACHHOOK_PRUNE": "sometimes"})
