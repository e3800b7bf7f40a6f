"""Every wait has a deadline, and every way a run can end leaves a true record.

A pachd that accepts a call and never answers, one that drops the connection, an address
that swallows packets, a run that waits for the lock, an engine that stops answering in the
middle of a build or a push, a run killed with SIGKILL inside its transaction, a post-push
deploy killed outright: each ends in one line, releases the lock, and leaves the ledger (and
the cluster) in a state the next run repairs. The ledger stays small, and no line of it can
crash `pachhook status`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pachhook.run import ledger
from pachhook.run.lock import holder, run_lock
from pachhook.run.report import interrupted_entries, pending_entries, status_lines
from tests import services
from tests.faults import engine_proxy, kill_when, wait_for
from tests.helpers import clean_env, commit, git, init_repo, spec, write
from tests.helpers import pachhook_in as pachhook
from tests.pachd_double import PachdDouble


def start(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pachhook", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def outcome(proc: subprocess.CompletedProcess[str]) -> str:
    """The last line on standard error: a failed run's one-line outcome."""
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


# -- a repository of specs on the double (nothing to build) ------------------------------------


@dataclass
class Specs:
    root: Path
    env: dict[str, str]
    double: PachdDouble
    names: tuple[str, ...] = ("one", "two")

    @property
    def state(self) -> Path:
        return self.root / ".git" / "pachhook"

    def change(self, description: str) -> str:
        return commit(
            self.root,
            description,
            {
                f"pipelines/{name}.json": spec(name, "busybox:1", "raw", description=description)
                for name in self.names
            },
        )

    def versions(self) -> dict[str, int]:
        return {name: r.version for (_, name), r in self.double.pipelines().items()}

    def runs(self) -> list[dict[str, Any]]:
        return [e for e in ledger.read(self.state) if e.get("kind") == "run"]


@pytest.fixture
def specs(tmp_path: Path) -> Iterator[Specs]:
    with PachdDouble(token="tok-" + uuid.uuid4().hex) as double:
        double.create_repo("raw")
        root = init_repo(tmp_path / "repo")
        write(root, {"pachhook.toml": '[pipelines]\ninclude = ["pipelines/*.json"]\n'})
        env = clean_env(
            tmp_path,
            PACHYDERM_CLUSTER_URL=double.address,
            PACHYDERM_TOKEN=double.token or "",
            PACHHOOK_RPC_TIMEOUT="2",
            PACHHOOK_TRANSACTION_TIMEOUT="2",
        )
        repo = Specs(root, env, double)
        repo.change("v1")
        proc = pachhook(root, "run", "--all", env=env)
        assert proc.returncode == 0, proc.stderr
        assert repo.versions() == {"one": 1, "two": 1}
        yield repo


# -- pachd: hangs, drops, silence ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "action"),
    [
        ("ListPipeline", "listing pipelines"),
        ("CreatePipeline", "sending pipeline default/one"),
        ("FinishTransaction", "finishing transaction"),
    ],
)
def test_a_hung_cluster_ends_the_run_with_one_line_and_frees_the_lock(
    specs: Specs, method: str, action: str
) -> None:
    specs.change("v2")
    specs.double.hang(method)
    started = time.monotonic()
    proc = pachhook(specs.root, "run", "--all", env=specs.env)
    assert proc.returncode == 1
    assert time.monotonic() - started < 20
    line = outcome(proc)
    assert f"pachd at {specs.double.address} (from PACHYDERM_CLUSTER_URL) did not answer" in line
    assert f"within 2s while {action}" in line and "PACHHOOK_" in line
    assert specs.double.token not in proc.stderr + proc.stdout
    assert holder(specs.state) is None  # the lock is free
    last = specs.runs()[-1]
    assert last["state"] == "failed" and "did not answer" in last["error"]
    # Nothing half-applied, nothing left open; the next run does the work at once.
    assert specs.versions() == {"one": 1, "two": 1}
    specs.double.unhang()
    wait_for(lambda: specs.double.open_transactions() == {}, what="no open transaction")
    proc = pachhook(specs.root, "run", "--all", env=specs.env)
    assert proc.returncode == 0, proc.stderr
    assert specs.versions() == {"one": 2, "two": 2}


def test_a_finish_whose_answer_never_comes_is_unknown_then_repaired(specs: Specs) -> None:
    """The transaction is applied, but its answer hangs: the run cannot know; it says so,
    and the next run finds the cluster already right."""
    specs.change("v2")
    specs.double.hang("FinishTransaction", after=True)
    proc = pachhook(specs.root, "run", "--all", env=specs.env)
    assert proc.returncode == 1
    assert "whether it was applied is unknown: check pachctl list pipeline" in outcome(proc)
    specs.double.unhang()
    assert specs.versions() == {"one": 2, "two": 2}
    proc = pachhook(specs.root, "run", "--all", "--json", env=specs.env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run"]["transaction"] is None  # already there


def test_a_dropped_connection_is_one_line_and_the_next_run_converges(specs: Specs) -> None:
    specs.change("v2")
    specs.double.drop("CreatePipeline")
    proc = pachhook(specs.root, "run", "--all", env=specs.env)
    assert proc.returncode == 1
    line = outcome(proc)
    assert f"pachd at {specs.double.address}" in line and "is unreachable while sending" in line
    assert "nothing was applied" in line
    assert specs.double.restarts == 1
    assert specs.versions() == {"one": 1, "two": 1}
    proc = pachhook(specs.root, "run", "--all", env=specs.env)
    assert proc.returncode == 0, proc.stderr
    assert specs.versions() == {"one": 2, "two": 2}
    assert specs.double.open_transactions() == {}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port whose listener never accepts and whose queue is full: a connection
    attempt gets no answer, as from a host that drops packets."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for s in [*fillers, server]:
            s.close()


def test_a_connect_to_a_silent_address_gives_up_after_the_connect_timeout(
    specs: Specs, silent_port: int
) -> None:
    specs.change("v2")
    env = {
        **specs.env,
        "PACHYDERM_CLUSTER_URL": f"grpc://127.0.0.1:{silent_port}",
        "PACHHOOK_CONNECT_TIMEOUT": "1",
        "PACHHOOK_RPC_TIMEOUT": "60",
    }
    started = time.monotonic()
    proc = pachhook(specs.root, "run", "--all", env=env)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert elapsed < 12, elapsed  # gRPC's own wait is 20 s per attempt
    line = outcome(proc)
    assert f"pachd at grpc://127.0.0.1:{silent_port}" in line
    assert "accepted no connection within 1s" in line and "PACHHOOK_CONNECT_TIMEOUT" in line


def test_a_waiting_run_says_for_what_and_gives_up_after_its_bound(specs: Specs) -> None:
    specs.change("v2")
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with run_lock(specs.state, "watch run of working tree"):
            entered.set()
            leave.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        entered.wait(10)
        env = {**specs.env, "PACHHOOK_LOCK_TIMEOUT": "1"}
        started = time.monotonic()
        proc = pachhook(specs.root, "run", "--all", env=env)
        assert time.monotonic() - started < 10
    finally:
        leave.set()
        thread.join()
    assert proc.returncode == 1
    assert f"waiting for watch run of working tree (pid {os.getpid()}" in proc.stderr
    assert "giving up after 1s (PACHHOOK_LOCK_TIMEOUT)" in proc.stderr
    assert "gave up after 1s waiting for watch run of working tree" in outcome(proc)
    assert specs.versions() == {"one": 1, "two": 1}
    # With a bound the holder finishes within, the run waits and goes on.
    proc = pachhook(specs.root, "run", "--all", env=specs.env)
    assert proc.returncode == 0 and specs.versions() == {"one": 2, "two": 2}


# -- killed outright ---------------------------------------------------------------------------


def test_a_run_killed_inside_its_transaction_is_cleaned_up_by_the_next(specs: Specs) -> None:
    specs.change("v2")
    hang = specs.double.hang("CreatePipeline")
    env = {**specs.env, "PACHHOOK_RPC_TIMEOUT": "60"}
    kill_when(start(specs.root, "run", "--all", env=env), hang.entered)
    (left,) = specs.double.open_transactions()
    journal = ledger.read(specs.state, name=ledger.TRANSACTIONS)
    assert journal[-1]["id"] == left and journal[-1]["state"] == "open"
    # status: the run is interrupted, with the command that redoes it.
    status = pachhook(specs.root, "status", env=specs.env)
    assert status.returncode == 0, status.stderr
    (interrupted,) = [line for line in status.stdout.splitlines() if line.startswith("interrupted")]
    assert interrupted.startswith("interrupted: run ")
    assert "to redo it: pachhook run --all --from " in interrupted
    specs.double.unhang()
    proc = pachhook(specs.root, "run", "--all", env=specs.env)
    assert proc.returncode == 0, proc.stderr
    assert f"deleted transaction {left}, left open by a run that ended inside it" in proc.stderr
    assert specs.double.open_transactions() == {}
    assert specs.versions() == {"one": 2, "two": 2}
    states = [e["state"] for e in ledger.read(specs.state, name=ledger.TRANSACTIONS)]
    assert states[-3:] == ["deleted: left open by a run that ended inside it", "open", "finished"]
    # A later run that deployed the same commit makes up for the killed one.
    status = pachhook(specs.root, "status", "-n", "20", env=specs.env)
    assert not [line for line in status.stdout.splitlines() if line.startswith("interrupted")]


def test_a_killed_post_push_deploy_is_interrupted_until_a_later_deploy_of_its_commit(
    specs: Specs, tmp_path: Path
) -> None:
    remote = tmp_path / "remote.git"
    remote.mkdir()
    git(remote, "init", "-q", "--bare", "-b", "main")
    git(specs.root, "remote", "add", "origin", str(remote))
    git(specs.root, "push", "-q", "-u", "origin", "main")
    assert pachhook(specs.root, "install", env=specs.env).returncode == 0
    sha = specs.change("v2")
    # Inside the run's transaction: the state it read before is no record of a run.
    hang = specs.double.hang("CreatePipeline")
    env = {**specs.env, "PACHHOOK_RPC_TIMEOUT": "60"}
    proc = subprocess.run(
        ["git", "push", "origin", "main"], cwd=specs.root, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert hang.entered.wait(60), "the post-push deploy never asked the cluster"
    waiting = [e for e in ledger.read(specs.state) if e.get("state") == "waiting"]
    (pid,) = {e["pid"] for e in waiting}
    os.kill(pid, signal.SIGKILL)  # the process our push started
    wait_for(lambda: not services.pid_alive(pid), what="the post-push process to end")

    status = pachhook(specs.root, "status", env=specs.env)
    by_hand = f"pachhook run --from {git(specs.root, 'rev-parse', 'HEAD~1')} --to {sha}"
    assert (
        f"interrupted: post-push {waiting[0]['id']} (commit {sha[:12]}); to redo it: {by_hand}"
        in (status.stdout)
    )
    assert f"state interrupted (pid {pid} has ended)" in status.stdout
    data = json.loads(pachhook(specs.root, "status", "--json", env=specs.env).stdout)
    # The post-push deploy and the run it had started, both killed.
    assert [e["kind"] for e in data["interrupted"]] == ["post-push", "run"]
    assert data["interrupted"][0]["id"] == waiting[0]["id"] and data["pending"] == []

    specs.double.unhang()
    redo = pachhook(specs.root, *by_hand.split()[1:], env=specs.env)
    assert redo.returncode == 0, redo.stderr
    assert specs.versions() == {"one": 2, "two": 2}
    status = pachhook(specs.root, "status", "-n", "20", env=specs.env)
    assert "interrupted: post-push" not in status.stdout
    assert "superseded: run " in status.stdout and "deployed this commit" in status.stdout


# -- the engine stops answering ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_path", "after"), [(r"/build", b"Step 2/"), (r"/push", b"\r\n\r\n")]
)
def test_the_engine_stopping_mid_stream_is_one_line_and_recorded(
    tmp_path: Path,
    docker_engine: services.DockerEngine,
    base_image: str,
    registry: services.Registry,
    request_path: str,
    after: bytes,
) -> None:
    root = init_repo(tmp_path / "repo")
    name = f"{registry.address}/drop{uuid.uuid4().hex[:8]}/app"
    write(
        root,
        {
            # The classic builder, whose stream through docker-py the proxy cuts.
            "pachhook.toml": (
                f'[build]\nbuilder = "classic"\n[[image]]\nname = "{name}"\ncontext = "app"\n'
            ),
            "app/Dockerfile": f"FROM {base_image}\nRUN sleep 1\nCOPY main.sh /main.sh\n",
            "app/main.sh": f"echo {uuid.uuid4().hex}\n",
        },
    )
    commit(root, "initial")
    with engine_proxy(docker_engine.host) as proxy:
        cut = proxy.cut(request_path, after=after)
        env = clean_env(tmp_path, DOCKER_HOST=proxy.host)
        proc = pachhook(root, "run", "--all", "--no-deploy", env=env)
        assert cut.seen.is_set(), proxy.requests
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert f"Docker engine at {proxy.host} stopped answering" in proc.stdout
    assert "is dockerd running? check DOCKER_HOST" in proc.stdout
    running, run = [e for e in ledger.read(root / ".git" / "pachhook") if e.get("kind") == "run"]
    assert running["state"] == "running" and running["id"] == run["id"]
    assert run["state"] == "failed" and run["images"][0]["status"] == "failed"
    assert "stopped answering" in run["images"][0]["error"]


# -- the ledger ----------------------------------------------------------------------------------


def test_the_ledger_stays_bounded_and_keeps_what_is_unresolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "MAX_BYTES", 20_000)
    state = tmp_path / "state"
    ledger.append(state, {"kind": "post-push", "id": "old", "state": "pending", "time": 1})
    ledger.append(state, {"kind": "post-push", "id": "done", "state": "pending", "time": 1})
    ledger.append(state, {"kind": "post-push", "id": "done", "state": "done", "time": 2})
    for n in range(2000):
        ledger.append(state, {"kind": "run", "id": f"r{n}", "state": "done", "pad": "x" * 100})
    assert (state / ledger.RUNS).stat().st_size <= 20_000
    entries = ledger.read(state)
    assert entries[-1]["id"] == "r1999"
    ids = {e["id"] for e in entries}
    assert "old" in ids and "done" not in ids and "r0" not in ids


def test_status_survives_any_line(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo")
    commit(root, "first", {"README.md": "x\n"})
    state = root / ".git" / "pachhook"
    state.mkdir(parents=True)
    rng = random.Random(1234)
    values: list[Any] = [
        None, True, 0, -1, 1e308, float("nan"), "", "x", [], {}, [1, "a"], {"a": 1},
        2**70, "pending", "running", "waiting", "interrupted",
    ]  # fmt: skip
    fields = ["kind", "id", "state", "pid", "time", "started", "finished", "commit", "images",
              "pipelines", "error", "timeout", "by_hand", "trigger", "transaction"]  # fmt: skip
    lines = ["", "{", "not json", "[1, 2]", "42", '"text"', "null", "\x00\xff", "{}" * 3]
    for _ in range(400):
        entry = {f: rng.choice(values) for f in rng.sample(fields, rng.randint(0, len(fields)))}
        if rng.random() < 0.5:
            entry["kind"] = rng.choice(["run", "post-push", "watch", "transaction", 7])
        if rng.random() < 0.3:
            entry["images"] = [{"status": rng.choice(values), "reference": rng.choice(values)}]
        if rng.random() < 0.3:
            entry["pipelines"] = [rng.choice(values), {"status": "not applied"}]
        lines.append(json.dumps(entry))
    (state / ledger.RUNS).write_text("\n".join(lines) + "\n")
    entries = ledger.read(state)
    assert all(isinstance(e, dict) for e in entries)
    status_lines(list(reversed(entries)), pending_entries(entries), entries)
    interrupted_entries(entries)
    for args in (["status"], ["status", "--json"], ["status", "-n", "500"]):
        proc = pachhook(root, *args, env=clean_env(tmp_path))
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""


def test_a_ledger_grown_before_it_had_a_bound_is_read_by_its_end_then_trimmed(
    tmp_path: Path,
) -> None:
    root = init_repo(tmp_path / "repo")
    commit(root, "first", {"README.md": "x\n"})
    state = root / ".git" / "pachhook"
    state.mkdir(parents=True)
    line = json.dumps({"kind": "run", "id": "old", "state": "done", "pad": "x" * 900}) + "\n"
    newest = {"kind": "run", "id": "newest", "started": 1.0, "finished": 2.0, "state": "done"}
    with open(state / ledger.RUNS, "w") as handle:
        handle.write(line * (3 * ledger.MAX_BYTES // len(line)))
        handle.write(json.dumps(newest) + "\n")
    proc = pachhook(root, "status", "-n", "1", env=clean_env(tmp_path))
    assert proc.returncode == 0 and "run" in proc.stdout, proc.stderr
    assert [e["id"] for e in ledger.read(state, limit=1)] == ["newest"]
    ledger.append(state, {"kind": "run", "id": "next", "state": "done"})
    assert (state / ledger.RUNS).stat().st_size <= ledger.MAX_BYTES
    assert [e["id"] for e in ledger.read(state)][-2:] == ["newest", "next"]
