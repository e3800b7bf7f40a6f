"""Git hooks: install and uninstall, the pre-push protocol, the post-push deploy, the
post-commit hook, the run lock, and the same through the pre-commit framework.

The hooks run as real git hooks, from real pushes to a local bare remote. Tests
marked `docker` build with the real engine and registry; the others deploy specs
whose images pachhook does not build (so nothing is built) to the pachd double.

Run with -s to see the wall time that a push with nothing relevant spends in the hook.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from pachhook.errors import InputError
from pachhook.hooks.postpush import Job, PushProcess, redacted, wait_for_acceptance
from pachhook.hooks.push import (
    DeployBranches,
    RefUpdate,
    group_by_commit,
    matches,
    parse_updates,
    pre_commit_push,
    push_targets,
)
from pachhook.hooks.scripts import HOOK_TYPES, script
from pachhook.repo.git import Repo as GitRepo
from pachhook.repo.selection import Selection
from pachhook.run import ledger
from pachhook.run.lock import run_lock
from tests import services
from tests.cluster import DoubleTarget, Target, closed_port
from tests.e2e import Repo as E2ERepo
from tests.e2e import first_run
from tests.helpers import GIT_ENV, commit, git, init_repo, spec, write

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = str(Path(sys.executable).parent)
ZERO = "0" * 40


# -- helpers ------------------------------------------------------------------------------------


def base_env(**extra: str) -> dict[str, str]:
    """The machine's environment without cluster or Docker settings, pachhook first on PATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PACHYDERM_", "DOCKER_", "PRE_COMMIT", "GIT_"))
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return {**env, **GIT_ENV, **extra}


def run(
    cmd: list[str], cwd: Path, env: dict[str, str], input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env, input=input, capture_output=True, text=True, timeout=600
    )


def pachhook(cwd: Path, *args: str, env: dict[str, str] | None = None, input: str | None = None):
    return run([sys.executable, "-m", "pachhook", *args], cwd, env or base_env(), input)


def push(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run(["git", "push", *args], cwd, env)


def bare_remote(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "--bare", "-b", "main")
    return path


def connect(root: Path, remote: Path, env: dict[str, str]) -> None:
    """`origin` is `remote`, and main is on it (pushed before any hook is installed)."""
    git(root, "remote", "add", "origin", str(remote))
    proc = push(root, "-q", "-u", "origin", "main", env=env)
    assert proc.returncode == 0, proc.stderr


def remote_hook(remote: Path, name: str, body: str) -> None:
    path = remote / "hooks" / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def post_push(root: Path) -> list[dict[str, Any]]:
    return [e for e in ledger.read(root / ".git" / "pachhook") if e.get("kind") == "post-push"]


def wait_final(root: Path, count: int = 1, timeout: float = 90) -> list[dict[str, Any]]:
    """The final post-push entries, once `count` of them are there."""
    deadline = time.monotonic() + timeout
    while True:
        final = [e for e in post_push(root) if e["state"] not in ("pending", "waiting")]
        if len(final) >= count:
            return final
        if time.monotonic() > deadline:
            logs = "\n".join(
                p.read_text() for p in (root / ".git" / "pachhook" / "logs").glob("post-push-*")
            )
            raise AssertionError(
                f"no final post-push entry after {timeout}s: {post_push(root)}\n{logs}"
            )
        time.sleep(0.05)


def runs(root: Path) -> list[dict[str, Any]]:
    """Finished runs (a run also writes "running" when it starts)."""
    entries = ledger.read(root / ".git" / "pachhook")
    return [e for e in entries if e.get("kind") == "run" and e.get("state") != "running"]


# -- the scripts --------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", HOOK_TYPES)
def test_the_scripts_in_hooks_are_what_install_writes(hook: str) -> None:
    path = ROOT / "hooks" / hook
    assert path.read_text() == script(hook)
    assert os.access(path, os.X_OK)
    assert subprocess.run(["sh", "-n", str(path)]).returncode == 0


def test_the_pre_commit_manifest_is_valid() -> None:
    proc = subprocess.run(
        [VENV_BIN + "/pre-commit", "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import yaml

    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert {h: hooks[h]["stages"] for h in hooks} == {
        "pachhook-pre-push": ["pre-push"],
        "pachhook-post-commit": ["post-commit"],
        "pachhook-post-merge": ["post-merge"],
    }
    for hook in hooks.values():
        assert hook["language"] == "python"
        assert hook["pass_filenames"] is False and hook["always_run"] is True
        assert hook["entry"] == f"pachhook hook {hook['stages'][0]}"


def test_install_offers_the_hook_types_that_exist() -> None:
    from pachhook.commands import install

    assert install.HOOK_TYPES == HOOK_TYPES


# -- the pre-push protocol ----------------------------------------------------------------------


def test_every_ref_line_is_read() -> None:
    text = (
        "refs/heads/main 1111111111111111111111111111111111111111 refs/heads/main "
        "2222222222222222222222222222222222222222\n\n"
        f"refs/heads/gone {ZERO} refs/heads/gone 3333333333333333333333333333333333333333\n"
        f"HEAD~1 4444444444444444444444444444444444444444 refs/heads/new {ZERO}\n"
    )
    updates = parse_updates(text)
    assert [u.remote_ref for u in updates] == [
        "refs/heads/main",
        "refs/heads/gone",
        "refs/heads/new",
    ]
    assert [(u.deletes, u.creates) for u in updates] == [
        (False, False),
        (True, False),
        (False, True),
    ]
    assert updates[2].local_ref == "HEAD~1" and updates[2].branch == "new"
    assert RefUpdate("v1", "1" * 40, "refs/tags/v1", ZERO).branch is None
    with pytest.raises(InputError, match="pre-push input line 1"):
        parse_updates("refs/heads/main 1111\n")


def test_pre_commit_variables_are_read_as_the_framework_sets_them() -> None:
    assert pre_commit_push({}) is None
    assert pre_commit_push({"PRE_COMMIT": "1"}) is None  # another stage
    found = pre_commit_push(
        {
            "PRE_COMMIT": "1",
            "PRE_COMMIT_FROM_REF": "a" * 40,
            "PRE_COMMIT_TO_REF": "b" * 40,
            "PRE_COMMIT_LOCAL_BRANCH": "refs/heads/main",
            "PRE_COMMIT_REMOTE_BRANCH": "refs/heads/main",
            "PRE_COMMIT_REMOTE_NAME": "origin",
            "PRE_COMMIT_REMOTE_URL": "/srv/remote.git",
        }
    )
    assert found is not None
    assert (found.remote, found.url, found.from_ref) == ("origin", "/srv/remote.git", "a" * 40)
    assert found.updates == [RefUpdate("refs/heads/main", "b" * 40, "refs/heads/main", "")]
    # A push that includes a root commit: no FROM/TO_REF, the branch variables only.
    root = pre_commit_push(
        {
            "PRE_COMMIT": "1",
            "PRE_COMMIT_LOCAL_BRANCH": "refs/heads/main",
            "PRE_COMMIT_REMOTE_BRANCH": "refs/heads/main",
            "PRE_COMMIT_REMOTE_NAME": "origin",
            "PRE_COMMIT_REMOTE_URL": "/srv/remote.git",
        }
    )
    assert root is not None and root.from_ref is None
    assert root.updates[0].local_sha == "refs/heads/main"


def test_what_each_pushed_ref_is_compared_with(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo")
    first = commit(root, "one", {"a.txt": "1\n"})
    env = base_env()
    remote = bare_remote(tmp_path / "remote.git")
    connect(root, remote, env)
    second = commit(root, "two", {"a.txt": "2\n"})
    git(root, "checkout", "-q", "-b", "feature")
    feature = commit(root, "three", {"b.txt": "3\n"})
    git(root, "tag", "-a", "-m", "v1", "v1")
    tag = git(root, "rev-parse", "v1")
    repo = GitRepo.discover(root)
    updates = [
        RefUpdate("refs/heads/main", second, "refs/heads/main", first),
        RefUpdate("refs/heads/feature", feature, "refs/heads/feature", ZERO),
        RefUpdate("(delete)", ZERO, "refs/heads/old", first),
        RefUpdate("refs/tags/v1", tag, "refs/tags/v1", ZERO),
    ]
    targets = push_targets(repo, "origin", updates)
    assert [t.update.remote_ref for t in targets] == [
        "refs/heads/main",
        "refs/heads/feature",
        "refs/tags/v1",
    ]
    assert targets[0].selection == Selection(first, second)
    # A new branch: against the remote's default branch (its merge-base is taken by the planner).
    assert targets[1].selection == Selection("origin/main", feature)
    assert targets[2].commit == feature  # the tag, peeled
    # Without a remote-tracking default branch, a new branch is a first push: everything.
    (alone,) = push_targets(repo, "elsewhere", updates[1:2])
    assert alone.selection.everything and alone.selection.to_ref == feature
    # The remote's commit unknown here (someone else pushed it): as for a new branch.
    (unknown,) = push_targets(
        repo, "origin", [RefUpdate("refs/heads/main", second, "refs/heads/main", "9" * 40)]
    )
    assert unknown.selection == Selection("origin/main", second)

    groups = group_by_commit(repo, targets)
    assert [g.commit for g in groups] == [second, feature]
    # feature and the tag point at one commit: one build covering both changes.
    assert [t.update.remote_ref for t in groups[1].targets] == [
        "refs/heads/feature",
        "refs/tags/v1",
    ]


def test_deploy_branches_are_glob_patterns(tmp_path: Path) -> None:
    assert matches("main", ["main"])
    assert matches("release/1.2", ["release/*"]) and not matches("release/1/2", ["release/*"])
    assert matches("hotfix/a/b", ["hotfix/**"]) and not matches("mainline", ["main"])
    root = init_repo(tmp_path / "repo")
    commit(root, "one")
    connect(root, bare_remote(tmp_path / "remote.git"), base_env())
    branches = DeployBranches(GitRepo.discover(root), "origin")
    main = RefUpdate("refs/heads/main", "1" * 40, "refs/heads/main", ZERO)
    feature = main._replace(remote_ref="refs/heads/feature")
    assert branches.patterns(None) == ("main",)  # the remote's default branch
    assert branches.deploys(main, None) and not branches.deploys(feature, None)
    assert "feature is not a deploy branch (the remote's default branch: main)" in (
        branches.why_not(feature, None)
    )
    assert branches.deploys(feature, ("feat*",)) and not branches.deploys(main, ("feat*",))
    tag = main._replace(remote_ref="refs/tags/v1")
    assert not branches.deploys(tag, ("*",))
    assert not DeployBranches(GitRepo.discover(root), None).deploys(main, ("main",))


def test_credentials_in_a_push_url_are_not_kept() -> None:
    assert redacted("https://bob:s3cret@git.example.com/x.git") == "https://git.example.com/x.git"
    assert redacted("git@git.example.com:x.git") == "git@git.example.com:x.git"
    assert redacted("/srv/x.git") == "/srv/x.git"


# -- install and uninstall -----------------------------------------------------------------------


@dataclass
class Plain:
    """A repository with a bare remote, an image pachhook cannot build (its registry is a
    closed port: any attempt fails at once) and a docs folder nothing uses."""

    root: Path
    remote: Path
    env: dict[str, str]

    def hooks(self) -> Path:
        return self.root / ".git" / "hooks"


@pytest.fixture
def plain(tmp_path: Path) -> Plain:
    root = init_repo(tmp_path / "repo")
    write(
        root,
        {
            "pachhook.toml": f'[[image]]\nname = "127.0.0.1:{closed_port()}/t/app"\ncontext = "app"\n',
            "app/Dockerfile": "FROM scratch\nCOPY main.sh /main.sh\n",
            "app/main.sh": "echo 1\n",
            "docs/notes.md": "notes\n",
        },
    )
    commit(root, "initial")
    env = base_env()
    remote = bare_remote(tmp_path / "remote.git")
    connect(root, remote, env)
    return Plain(root, remote, env)


def docs_change(root: Path, text: str = "more") -> str:
    return commit(root, "docs", {"docs/notes.md": f"notes {text}\n"})


def test_install_chains_an_existing_hook_and_uninstall_restores_it(plain: Plain) -> None:
    seen = plain.root.parent / "seen.txt"
    earlier = f'#!/bin/sh\necho "earlier hook: $1" >&2\ncat > "{seen}"\n'
    (plain.hooks() / "pre-push").write_text(earlier)
    (plain.hooks() / "pre-push").chmod(0o755)

    proc = pachhook(plain.root, "install")
    assert proc.returncode == 0, proc.stderr
    assert "kept your earlier hook as pre-push.pre-pachhook; it runs first" in proc.stdout
    assert (plain.hooks() / "pre-push.pre-pachhook").read_text() == earlier

    sha = docs_change(plain.root)
    proc = push(plain.root, "origin", "main", env=plain.env)
    assert proc.returncode == 0, proc.stderr
    assert "earlier hook: origin" in proc.stderr
    assert "pachhook: nothing in this push" in proc.stderr
    # The earlier hook got git's ref lines too.
    assert seen.read_text().split()[:2] == ["refs/heads/main", sha]

    # Installing again updates pachhook's script and keeps the chain.
    proc = pachhook(plain.root, "install")
    assert "pre-push: updated" in proc.stdout
    assert (plain.hooks() / "pre-push.pre-pachhook").exists()

    # An earlier hook that fails stops the push before pachhook builds anything.
    (plain.hooks() / "pre-push.pre-pachhook").write_text("#!/bin/sh\necho no >&2\nexit 3\n")
    commit(plain.root, "code", {"app/main.sh": "echo 2\n"})
    proc = push(plain.root, "origin", "main", env=plain.env)
    assert proc.returncode != 0
    assert "pachhook:" not in proc.stderr

    proc = pachhook(plain.root, "uninstall")
    assert proc.returncode == 0
    assert "restored your earlier .git/hooks/pre-push" in proc.stdout
    assert (plain.hooks() / "pre-push").read_text() == "#!/bin/sh\necho no >&2\nexit 3\n"
    assert not (plain.hooks() / "pre-push.pre-pachhook").exists()


def test_install_never_overwrites_a_saved_hook_without_force(plain: Plain) -> None:
    for name, text in (("pre-push", "#!/bin/sh\nexit 0\n"), ("pre-push.pre-pachhook", "old\n")):
        (plain.hooks() / name).write_text(text)
    proc = pachhook(plain.root, "install")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--force" in proc.stderr
    assert (plain.hooks() / "pre-push").read_text() == "#!/bin/sh\nexit 0\n"
    proc = pachhook(plain.root, "install", "--force")
    assert proc.returncode == 0, proc.stderr
    assert (plain.hooks() / "pre-push.pre-pachhook").read_text() == "#!/bin/sh\nexit 0\n"

    # uninstall leaves a hook that is not pachhook's alone.
    (plain.hooks() / "post-commit").write_text("#!/bin/sh\n")
    proc = pachhook(plain.root, "uninstall", "--hook-type", "post-commit")
    assert "is not pachhook's; left as it is" in proc.stdout
    assert (plain.hooks() / "post-commit").exists()


def test_install_from_a_subfolder_with_several_types_and_sync(plain: Plain) -> None:
    sub = plain.root / "docs"
    proc = pachhook(
        sub, "install", "-t", "pre-push", "-t", "post-commit", "-t", "post-merge", "--sync"
    )
    assert proc.returncode == 0, proc.stderr
    for hook in HOOK_TYPES:
        text = (plain.hooks() / hook).read_text()
        assert f"PACHHOOK_PYTHON={sys.executable}" in text
        assert ("PACHHOOK_OPTIONS=--sync" in text) == (hook == "pre-push")
    assert not (sub / ".git").exists()
    proc = pachhook(sub, "uninstall")
    assert sorted(proc.stdout.split("\n"))[1:] == sorted(
        f"{hook}: removed .git/hooks/{hook}" for hook in HOOK_TYPES
    )
    assert not [p for p in plain.hooks().iterdir() if not p.name.endswith(".sample")]


def test_install_respects_core_hooks_path(plain: Plain) -> None:
    git(plain.root, "config", "core.hooksPath", ".githooks")
    proc = pachhook(plain.root / "app", "install")
    assert proc.returncode == 0, proc.stderr
    assert "installed .githooks/pre-push" in proc.stdout
    assert not (plain.hooks() / "pre-push").exists()
    docs_change(plain.root)
    proc = push(plain.root, "origin", "main", env=plain.env)
    assert "pachhook: nothing in this push" in proc.stderr
    elsewhere = plain.root.parent / "shared-hooks"
    git(plain.root, "config", "core.hooksPath", str(elsewhere))
    proc = pachhook(plain.root, "install")
    assert (elsewhere / "pre-push").exists(), proc.stdout + proc.stderr


def test_hooks_installed_from_a_worktree_serve_every_worktree(plain: Plain) -> None:
    tree = plain.root.parent / "tree"
    git(plain.root, "worktree", "add", "-q", "-b", "side", str(tree))
    proc = pachhook(tree / "docs", "install")
    assert proc.returncode == 0, proc.stderr
    assert (plain.hooks() / "pre-push").exists()  # the common dir's hooks
    docs_change(tree, "side")
    proc = push(tree, "origin", "side", env=plain.env)
    assert proc.returncode == 0, proc.stderr
    assert "pachhook: nothing in this push" in proc.stderr
    # A relevant change pushed from the worktree is planned from the worktree's commit.
    commit(tree, "code", {"app/main.sh": "echo side\n"})
    proc = push(tree, "origin", "side", env=plain.env)
    assert proc.returncode == 1
    assert "refs/heads/side at" in proc.stderr and "push stopped" in proc.stderr


def test_pachhook_missing_stops_the_push_with_a_hint(plain: Plain) -> None:
    (plain.hooks() / "pre-push").write_text(script("pre-push", "/nonexistent/python"))
    (plain.hooks() / "pre-push").chmod(0o755)
    docs_change(plain.root)
    env = {**plain.env, "PATH": "/usr/bin:/bin"}
    proc = push(plain.root, "origin", "main", env=env)
    assert proc.returncode != 0
    assert "pachhook: not found on PATH nor in /nonexistent/python" in proc.stderr
    assert "git push --no-verify" in proc.stderr


# -- pre-push without anything to deploy -------------------------------------------------------


def test_every_pushed_ref_is_planned_not_only_the_first(plain: Plain) -> None:
    pachhook(plain.root, "install")
    docs_change(plain.root)
    git(plain.root, "checkout", "-q", "-b", "feature")
    commit(plain.root, "code", {"app/main.sh": "echo 2\n"})
    # main (docs only) comes first; the build that fails is feature's.
    proc = push(plain.root, "origin", "main", "feature", env=plain.env)
    assert proc.returncode != 0
    assert "refs/heads/feature at" in proc.stderr and "push stopped: image failed" in proc.stderr
    assert git(plain.root, "ls-remote", "origin", "refs/heads/feature") == ""
    # The same lines given by hand, the irrelevant ref first.
    main, feature = (git(plain.root, "rev-parse", ref) for ref in ("main", "feature"))
    remote_main = git(plain.root, "rev-parse", "origin/main")
    lines = (
        f"refs/heads/main {main} refs/heads/main {remote_main}\n"
        f"refs/heads/feature {feature} refs/heads/feature {ZERO}\n"
    )
    proc = pachhook(plain.root, "hook", "pre-push", "origin", str(plain.remote), input=lines)
    assert proc.returncode == 1 and "refs/heads/feature at" in proc.stderr


def test_a_failed_build_lets_the_push_through_with_warn(plain: Plain) -> None:
    pachhook(plain.root, "install")
    toml = (plain.root / "pachhook.toml").read_text()
    # The pushed commit does not choose the policy: its own [hooks] is not used.
    commit(plain.root, "warn", {"pachhook.toml": toml + '[hooks]\non_build_failure = "warn"\n'})
    proc = push(plain.root, "origin", "main", env=plain.env)
    assert proc.returncode == 1, proc.stderr
    assert "[hooks] on_build_failure in the pushed commit not used" in proc.stderr
    assert "push stopped: image failed" in proc.stderr
    # The operator's setting does.
    git(plain.root, "config", "pachhook.onBuildFailure", "warn")
    proc = push(plain.root, "origin", "main", env=plain.env)
    assert proc.returncode == 0, proc.stderr
    assert (
        'the push goes on (on_build_failure = "warn", from git config pachhook.onBuildFailure)'
        in proc.stderr
    )
    assert runs(plain.root)[-1]["error"].startswith("image failed")


def test_pushing_only_deletions_does_nothing(plain: Plain) -> None:
    pachhook(plain.root, "install")
    git(plain.root, "branch", "gone")
    push(plain.root, "origin", "gone", env=plain.env)
    proc = push(plain.root, "origin", ":gone", env=plain.env)
    assert proc.returncode == 0, proc.stderr
    assert "pachhook" not in proc.stderr


# -- post-commit and post-merge ----------------------------------------------------------------


def test_post_commit_is_quiet_unless_something_is_affected(plain: Plain) -> None:
    proc = pachhook(plain.root, "install", "-t", "post-commit", "-t", "post-merge")
    assert proc.returncode == 0
    quiet = run(["git", "commit", "-q", "--allow-empty", "-m", "empty"], plain.root, plain.env)
    assert quiet.stdout + quiet.stderr == ""
    write(plain.root, {"docs/notes.md": "docs\n"})
    git(plain.root, "add", "-A")
    quiet = run(["git", "commit", "-q", "-m", "docs"], plain.root, plain.env)
    assert quiet.stdout + quiet.stderr == ""

    write(plain.root, {"app/main.sh": "echo 3\n"})
    git(plain.root, "add", "-A")
    shown = run(["git", "commit", "-q", "-m", "code"], plain.root, plain.env)
    assert shown.returncode == 0
    # git shows a hook's output on its standard error.
    assert "pachhook: what this commit changes" in shown.stderr
    assert "build  127.0.0.1:" in shown.stderr and "(app/main.sh: input changed)" in shown.stderr
    assert runs(plain.root) == []  # "plan" builds nothing

    # post-merge: what the merge brought.
    git(plain.root, "checkout", "-q", "-b", "topic")
    commit(plain.root, "topic code", {"app/main.sh": "echo topic\n"})
    git(plain.root, "checkout", "-q", "main")
    merged = run(["git", "merge", "-q", "--ff-only", "topic"], plain.root, plain.env)
    assert "pachhook: what this merge changes" in merged.stderr, merged.stdout + merged.stderr


def test_post_commit_never_fails_and_can_be_turned_off(plain: Plain) -> None:
    pachhook(plain.root, "install", "-t", "post-commit")
    write(plain.root, {"pachhook.toml": "[[image]\n"})
    git(plain.root, "add", "-A")
    broken = run(["git", "commit", "-q", "-m", "broken"], plain.root, plain.env)
    assert broken.returncode == 0
    assert "pachhook: pachhook.toml:1: not valid TOML" in broken.stderr
    proc = pachhook(plain.root, "hook", "post-commit")
    assert proc.returncode == 0 and "not valid TOML" in proc.stderr

    git(plain.root, "config", "pachhook.postCommit", "off")
    write(plain.root, {"pachhook.toml": "", "app/main.sh": "x\n"})
    git(plain.root, "add", "-A")
    off = run(["git", "commit", "-q", "-m", "off"], plain.root, plain.env)
    assert off.stdout + off.stderr == ""


# -- the post-push deploy, without images to build (the pachd double, no Docker) ---------------


@dataclass
class Specs:
    """A repository whose pipelines run images pachhook does not build: a spec change
    deploys without building anything."""

    root: Path
    remote: Path
    env: dict[str, str]
    pachd: Target
    project: str

    def versions(self) -> dict[str, int]:
        return {name: p.version for name, p in self.pachd.pipelines(self.project).items()}

    def change_spec(self, name: str, description: str) -> str:
        doc = spec(name, "busybox:1", "raw", description=description)
        return commit(self.root, f"{name}: {description}", {f"pipelines/{name}.json": doc})


@pytest.fixture
def specs(tmp_path: Path, pachd: Target, project: str) -> Specs:
    pachd.create_repo("raw", project)
    root = init_repo(tmp_path / "repo")
    write(
        root,
        {
            "pachhook.toml": f'[pachyderm]\nproject = "{project}"\n\n'
            '[pipelines]\ninclude = ["pipelines/*.json"]\n\n'
            "[hooks]\npost_push_timeout = 20\n",
            "pipelines/one.json": spec("one", "busybox:1", "raw"),
            "pipelines/two.json": spec("two", "busybox:1", "raw"),
            "docs/notes.md": "notes\n",
        },
    )
    commit(root, "initial")
    env = base_env(PACHYDERM_CLUSTER_URL=pachd.address, HOME=str(tmp_path))
    if pachd.token:
        env["PACHYDERM_TOKEN"] = pachd.token
    assert pachhook(root, "run", "--all", env=env).returncode == 0
    remote = bare_remote(tmp_path / "remote.git")
    connect(root, remote, env)
    assert pachhook(root, "install", env=env).returncode == 0
    return Specs(root, remote, env, pachd, project)


def test_a_push_the_remote_refuses_deploys_nothing_and_status_says_rejected(specs: Specs) -> None:
    remote_hook(specs.remote, "pre-receive", "echo 'refused by policy' >&2\nexit 1\n")
    sha = specs.change_spec("one", "refused")
    proc = push(specs.root, "origin", "main", env=specs.env)
    assert proc.returncode != 0
    assert "refused by policy" in proc.stderr
    assert "pipelines will be updated once origin has accepted the push" in proc.stderr
    (final,) = wait_final(specs.root)
    assert final["state"] == "rejected" and final["commit"] == sha
    assert "nothing was deployed" in final["reason"]
    assert specs.versions() == {"one": 1, "two": 1}
    status = pachhook(specs.root, "status", env=specs.env)
    assert "post-push  state rejected" in status.stdout
    assert "pending:" not in status.stdout


def test_a_forced_push_that_the_remote_refuses_deploys_nothing(specs: Specs) -> None:
    git(specs.remote, "config", "receive.denyNonFastForwards", "true")
    specs.change_spec("one", "first")
    assert push(specs.root, "origin", "main", env=specs.env).returncode == 0
    assert wait_final(specs.root)[-1]["state"] == "done"
    assert specs.versions() == {"one": 2, "two": 1}
    git(specs.root, "reset", "-q", "--hard", "HEAD~1")
    specs.change_spec("two", "rewritten history")
    proc = push(specs.root, "--force", "origin", "main", env=specs.env)
    assert proc.returncode != 0 and "non-fast-forward" in proc.stderr
    final = wait_final(specs.root, 2)[-1]
    assert final["state"] == "rejected", final
    assert specs.versions() == {"one": 2, "two": 1}


def test_a_dry_run_push_deploys_nothing(specs: Specs) -> None:
    specs.change_spec("one", "dry run")
    for flag in ("--dry-run", "-nq"):
        proc = push(specs.root, flag, "origin", "main", env=specs.env)
        assert proc.returncode == 0, proc.stderr
        assert "pachhook: git push --dry-run: no pipeline is updated" in proc.stderr
    assert post_push(specs.root) == []
    assert pachhook(specs.root, "install", "--sync", env=specs.env).returncode == 0
    proc = push(specs.root, "--dry-run", "origin", "main", env=specs.env)
    assert "no pipeline is updated" in proc.stderr
    assert specs.versions() == {"one": 1, "two": 1}


def test_a_hook_never_prunes_unless_the_operators_git_config_says_so(specs: Specs) -> None:
    specs.change_spec("two", "applied from origin")  # its annotations now name origin
    assert push(specs.root, "origin", "main", env=specs.env).returncode == 0
    assert wait_final(specs.root)[-1]["state"] == "done"
    (specs.root / "pipelines" / "two.json").unlink()
    specs.change_spec("one", "two is gone")
    assert push(specs.root, "origin", "main", env=specs.env).returncode == 0
    final = wait_final(specs.root, 2)[-1]
    assert final["state"] == "done", final
    assert specs.versions() == {"one": 2, "two": 2}  # reported, never deleted by a hook

    git(specs.root, "config", "pachhook.prune", "true")  # the operator's own setting
    commit(specs.root, "docs", {"docs/notes.md": "more notes\n"})
    assert push(specs.root, "origin", "main", env=specs.env).returncode == 0
    # Nothing to deploy: no third post-push deploy (each writes pending, waiting, done).
    assert len({e["id"] for e in post_push(specs.root)}) == 2
    specs.change_spec("one", "later")
    assert push(specs.root, "origin", "main", env=specs.env).returncode == 0
    final = wait_final(specs.root, 3)[-1]
    assert final["state"] == "done", final
    assert specs.versions() == {"one": 3}
    if isinstance(specs.pachd, DoubleTarget):
        (deleted,) = specs.pachd.double.deleted_pipelines()
        assert (deleted.name, deleted.keep_repo) == ("two", True)


def test_a_push_by_url_is_confirmed_by_asking_the_remote(specs: Specs) -> None:
    specs.change_spec("two", "by url")
    proc = push(specs.root, str(specs.remote), "HEAD:refs/heads/main", env=specs.env)
    assert proc.returncode == 0, proc.stderr
    (final,) = wait_final(specs.root)
    assert final["state"] == "done", final
    assert final["remote"] == str(specs.remote)
    assert specs.versions() == {"one": 1, "two": 2}


def test_a_post_push_that_cannot_deploy_records_the_failure(specs: Specs) -> None:
    specs.change_spec("one", "cluster down")
    env = {**specs.env, "PACHYDERM_CLUSTER_URL": f"grpc://127.0.0.1:{closed_port()}"}
    assert push(specs.root, "origin", "main", env=env).returncode == 0
    (final,) = wait_final(specs.root)
    assert final["state"] == "failed" and final["error"], final
    assert final["run"]


def test_the_post_push_process_records_a_result_even_when_stopped(specs: Specs) -> None:
    state = specs.root / ".git" / "pachhook"
    sha = git(specs.root, "rev-parse", "HEAD")
    job = Job.new(sha, "origin", "refs/heads/never", Selection(sha, sha), 60)
    ledger.append(state, job.pending(state / "x.log"))
    child = subprocess.Popen(
        [sys.executable, "-m", "pachhook", "hook", "post-push-deploy", job.id],
        cwd=specs.root,
        env=specs.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    child.terminate()
    child.wait(timeout=30)
    (final,) = wait_final(specs.root, timeout=5)
    assert final["state"] == "failed" and "stopped" in final["error"]
    assert f"pachhook run --from {sha} --to {sha}" in final["error"]


def test_sync_deploys_inside_the_hook(specs: Specs) -> None:
    assert pachhook(specs.root, "install", "--sync", env=specs.env).returncode == 0
    specs.change_spec("two", "sync")
    proc = push(specs.root, "origin", "main", env=specs.env)
    assert proc.returncode == 0, proc.stderr
    assert specs.versions() == {"one": 1, "two": 2}  # already, when git push returns
    assert post_push(specs.root) == []
    assert runs(specs.root)[-1]["trigger"] == "pre-push"


def test_acceptance_is_judged_by_the_tracking_ref_the_remote_and_the_clock(
    tmp_path: Path,
) -> None:
    root = init_repo(tmp_path / "repo")
    commit(root, "one")
    remote = bare_remote(tmp_path / "remote.git")
    connect(root, remote, base_env())
    sha = commit(root, "two")
    repo = GitRepo.discover(root)
    job = Job.new(sha, "origin", "refs/heads/main", Selection(sha, sha), 1)
    gone = PushProcess(2**22 + 7, "0")  # no such process: the push is over
    verdict = wait_for_acceptance(
        repo, job, where="origin", push=gone, deadline=time.monotonic() + 9
    )
    assert verdict.state == "rejected" and "is at" in verdict.reason
    started = time.monotonic()
    verdict = wait_for_acceptance(
        repo, job, where="origin", push=None, deadline=time.monotonic() + 0.5
    )
    assert verdict.state == "timeout" and time.monotonic() - started < 5
    git(root, "push", "-q", "origin", "main")
    verdict = wait_for_acceptance(repo, job, where="origin", push=gone, deadline=time.monotonic())
    assert verdict.state == "accepted" and "origin/main reached" in verdict.reason
    # Without a remote-tracking ref: the remote is asked.
    by_url = job._replace(remote=str(remote))
    verdict = wait_for_acceptance(repo, by_url, where=str(remote), push=gone, deadline=0)
    assert verdict.state == "accepted" and "the remote's refs/heads/main" in verdict.reason


def test_the_push_process_is_found_from_a_hook(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo")
    commit(root, "one")
    remote = bare_remote(tmp_path / "remote.git")
    out = tmp_path / "found.txt"
    hook = root / ".git" / "hooks" / "pre-push"
    hook.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c "
        f'"from pachhook.hooks.postpush import PushProcess; print(PushProcess.find())" > {out}\n'
    )
    hook.chmod(0o755)
    git(root, "remote", "add", "origin", str(remote))
    assert push(root, "origin", "main", env=base_env()).returncode == 0
    assert out.read_text().startswith("PushProcess(pid=")


# -- end to end: the real engine and registry ---------------------------------------------------

E2E = tuple[E2ERepo, Path, services.Registry]  # the repository, its remote, its registry


@pytest.fixture
def e2e(
    tmp_path: Path, registry: services.Registry, e2e_repo: Callable[..., E2ERepo]
) -> Iterator[E2E]:
    """The end-to-end repository (post-push timeout 60 s) after its first run, its main
    pushed to `origin`, a bare remote; with that remote and the registry of its images."""
    repo = e2e_repo(registry.address)
    toml = (repo.root / "pachhook.toml").read_text()
    write(repo.root, {"pachhook.toml": toml + "\n[hooks]\npost_push_timeout = 60\n"})
    git(repo.root, "commit", "-q", "-a", "--amend", "--no-edit")
    first_run(repo)
    repo.env["PATH"] = f"{VENV_BIN}{os.pathsep}{repo.env['PATH']}"
    remote = bare_remote(tmp_path / "remote.git")
    connect(repo.root, remote, repo.env)
    yield repo, remote, registry


@pytest.fixture
def installed(e2e: E2E) -> E2E:
    """The same, with pachhook's pre-push hook installed."""
    repo, _, _ = e2e
    assert repo.ok("install").stdout.startswith("pre-push: installed")
    return e2e


def push_in_background(repo: E2ERepo, *, stdout: int) -> subprocess.Popen[str]:
    """`git push origin main` in the repository, started and not waited for; its standard
    error is piped."""
    return subprocess.Popen(
        ["git", "push", "origin", "main"],
        cwd=repo.root,
        env=repo.env,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )


def image_ref(repo: E2ERepo, name: str, trigger: str = "pre-push") -> str:
    run = [r for r in runs(repo.root) if r["trigger"] == trigger][-1]
    return next(i["reference"] for i in run["images"] if i["name"] == name)


@pytest.mark.docker
def test_a_push_builds_at_pre_push_and_deploys_only_after_it_landed(installed: E2E) -> None:
    repo, remote, registry = installed
    # The remote takes its time to accept: a deploy that did not wait would show.
    remote_hook(remote, "pre-receive", "cat >/dev/null\nsleep 2\n")
    sha = commit(repo.root, "code", {"app/main.sh": "echo clean v2\n"})
    started = time.monotonic()
    proc = push_in_background(repo, stdout=subprocess.PIPE)
    landed = deployed = None
    while deployed is None and time.monotonic() - started < 120:
        now = time.monotonic()
        at = run(["git", "rev-parse", "-q", "--verify", "refs/heads/main"], remote, repo.env)
        if landed is None and at.stdout.strip() == sha:
            landed = now
        if repo.versions()["clean"] == 2:
            deployed = now
        time.sleep(0.02)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert landed is not None and deployed is not None, stderr
    print(f"\n[timing] landed {landed - started:.2f}s, deployed {deployed - started:.2f}s")
    assert deployed >= landed
    assert "pipelines will be updated once origin has accepted the push" in stderr

    (final,) = wait_final(repo.root)
    assert final["state"] == "done" and final["commit"] == sha
    assert repo.versions() == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    pre_push, post = [r for r in runs(repo.root) if r["trigger"] in ("pre-push", "post-push")]
    assert [(i["name"], i["status"]) for i in pre_push["images"]] == [(repo.app, "built")]
    assert pre_push["transaction"] is None
    # Built before the push, found in the registry after it: nothing rebuilt.
    assert [i["status"] for i in post["images"]] == ["exists"]
    assert post["id"] == final["run"]
    tag = image_ref(repo, repo.app).rsplit(":", 1)[1]
    assert registry.has_manifest(f"{repo.project}/app", tag)
    assert repo.images()["clean"] == image_ref(repo, repo.app)
    status = repo.ok("status").stdout
    assert "post-push  state done" in status and "2 pipeline(s) applied" in status


@pytest.mark.docker
def test_a_rejected_non_fast_forward_push_updates_no_pipeline(installed: E2E) -> None:
    repo, remote, _ = installed
    git(remote, "config", "receive.denyNonFastForwards", "true")
    commit(repo.root, "code", {"app/main.sh": "echo clean v2\n"})
    assert push(repo.root, "-q", "--no-verify", "origin", "main", env=repo.env).returncode == 0
    git(repo.root, "reset", "-q", "--hard", "HEAD~1")  # history rewritten
    sha = commit(repo.root, "code", {"app/main.sh": "echo clean v3\n"})
    before = repo.versions()
    proc = push(repo.root, "--force", "origin", "main", env=repo.env)
    assert proc.returncode != 0 and "non-fast-forward" in proc.stderr
    (final,) = wait_final(repo.root)
    assert final["state"] == "rejected" and final["commit"] == sha
    assert repo.versions() == before
    assert "state rejected" in repo.ok("status").stdout


@pytest.mark.docker
def test_a_push_of_two_branches_builds_both_and_deploys_only_the_deploy_branch(
    installed: E2E,
) -> None:
    repo, _, registry = installed
    git(repo.root, "checkout", "-q", "-b", "feature")
    commit(repo.root, "tools", {"tools/tool.sh": "echo tools v2\n"})
    git(repo.root, "checkout", "-q", "main")
    commit(repo.root, "app", {"app/main.sh": "echo clean v2\n"})
    proc = push(repo.root, "origin", "main", "feature", env=repo.env)
    assert proc.returncode == 0, proc.stderr
    assert "refs/heads/main at" in proc.stderr and "refs/heads/feature at" in proc.stderr
    assert (
        "pachhook: feature is not a deploy branch (the remote's default branch: main): "
        "images pushed, no pipeline updated" in proc.stderr
    )
    built = {
        i["name"]: i["reference"]
        for r in runs(repo.root)
        if r["trigger"] == "pre-push"
        for i in r["images"]
    }
    assert set(built) == {repo.app, repo.tools}
    for name, ref in built.items():
        assert registry.has_manifest(name.split("/", 1)[1], ref.rsplit(":", 1)[1])
    (final,) = wait_final(repo.root)
    assert final["ref"] == "refs/heads/main" and final["state"] == "done"
    assert repo.versions() == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    assert repo.images()["stats"] != built[repo.tools]


@pytest.mark.docker
def test_a_push_with_nothing_relevant_contacts_nothing(e2e: E2E) -> None:
    repo, _, _ = e2e
    env = {**repo.env, "DOCKER_HOST": f"unix://{repo.root.parent}/no-engine.sock"}
    docs = {"README.md": "# data project\n\nMore.\n"}
    commit(repo.root, "docs", docs)
    started = time.monotonic()
    assert push(repo.root, "-q", "origin", "main", env=env).returncode == 0
    bare = time.monotonic() - started
    repo.ok("install")
    commit(repo.root, "docs", {"docs/more.md": "more\n"})
    before = len(ledger.read(repo.root / ".git" / "pachhook"))
    if isinstance(repo.pachd, DoubleTarget):
        repo.pachd.double.reset_calls()
    started = time.monotonic()
    proc = push(repo.root, "origin", "main", env=env)
    hooked = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    print(
        f"\n[timing] git push, docs only: {bare * 1000:.0f} ms without the hook, {hooked * 1000:.0f} ms with it"
    )
    assert "nothing in this push is an image input" in proc.stderr
    assert len(ledger.read(repo.root / ".git" / "pachhook")) == before
    if isinstance(repo.pachd, DoubleTarget):
        assert repo.pachd.double.call_count() == 0


@pytest.mark.docker
def test_a_push_while_another_run_holds_the_lock_waits(installed: E2E) -> None:
    repo, _, _ = installed
    commit(repo.root, "code", {"app/main.sh": "echo clean v2\n"})
    state = repo.root / ".git" / "pachhook"
    lines: list[str] = []
    with run_lock(state, "a test holding the lock"):
        proc = push_in_background(repo, stdout=subprocess.DEVNULL)
        assert proc.stderr is not None

        def read(stream: IO[str]) -> None:
            for line in stream:
                lines.append(line)

        reader = threading.Thread(target=read, args=(proc.stderr,))
        reader.start()
        deadline = time.monotonic() + 60
        while not any("waiting for" in line for line in lines):
            assert time.monotonic() < deadline, "".join(lines)
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting
    assert proc.wait(timeout=120) == 0
    reader.join()
    text = "".join(lines)
    assert f"pachhook: waiting for a test holding the lock (pid {os.getpid()}" in text
    assert wait_final(repo.root)[0]["state"] == "done"
    assert repo.versions()["clean"] == 2


# -- through the pre-commit framework ------------------------------------------------------------


@pytest.fixture(scope="module")
def hook_repository(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """This checkout as it is now (uncommitted files too), as a git repository with one
    commit: what a `.pre-commit-config.yaml` names as `repo:` and `rev:`."""
    target = tmp_path_factory.mktemp("hook-repo") / "pachhook"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            (target / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / os.fsdecode(name))
    init_repo(target)
    sha = commit(target, "snapshot")
    return target, sha


@pytest.fixture(scope="module")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by the module: the framework builds the hook's environment once."""
    return tmp_path_factory.mktemp("pre-commit-home")


def use_pre_commit(root: Path, env: dict[str, str], hook_repository: tuple[Path, str]) -> None:
    path, sha = hook_repository
    write(
        root,
        {
            ".pre-commit-config.yaml": (
                "default_install_hook_types: [pre-push, post-commit]\n"
                "repos:\n"
                f"  - repo: {path}\n"
                f"    rev: {sha}\n"
                "    hooks:\n"
                "      - id: pachhook-pre-push\n"
                "      - id: pachhook-post-commit\n"
            )
        },
    )
    commit(root, "pre-commit config")
    started = time.monotonic()
    proc = run([VENV_BIN + "/pre-commit", "install-hooks"], root, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\n[timing] pre-commit install-hooks: {time.monotonic() - started:.1f}s")
    proc = run([VENV_BIN + "/pre-commit", "install"], root, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pre-commit installed at .git/hooks/pre-push" in proc.stdout


def test_through_pre_commit_a_push_with_nothing_relevant(
    plain: Plain, hook_repository: tuple[Path, str], pre_commit_home: Path
) -> None:
    env = {**plain.env, "PRE_COMMIT_HOME": str(pre_commit_home)}
    use_pre_commit(plain.root, env, hook_repository)
    docs_change(plain.root)
    proc = push(plain.root, "origin", "main", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing in this push is an image input" in proc.stdout + proc.stderr
    commit(plain.root, "code", {"app/main.sh": "echo 9\n"})
    proc = push(plain.root, "origin", "main", env=env)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    # The framework passes the first ref in PRE_COMMIT_* variables, not on stdin.
    assert "refs/heads/main at" in out and "push stopped" in out


def test_through_pre_commit_a_spec_change_deploys_after_the_push(
    specs: Specs, hook_repository: tuple[Path, str], pre_commit_home: Path
) -> None:
    assert pachhook(specs.root, "uninstall", env=specs.env).returncode == 0
    env = {**specs.env, "PRE_COMMIT_HOME": str(pre_commit_home)}
    use_pre_commit(specs.root, env, hook_repository)
    sha = specs.change_spec("one", "through pre-commit")
    proc = push(specs.root, "origin", "main", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (final,) = wait_final(specs.root)
    assert final["state"] == "done" and final["commit"] == sha, final
    assert specs.versions() == {"one": 2, "two": 1}


@pytest.mark.docker
def test_through_pre_commit_a_push_builds_then_deploys(
    e2e: E2E,
    hook_repository: tuple[Path, str],
    pre_commit_home: Path,
) -> None:
    repo, _, registry = e2e
    env = {**repo.env, "PRE_COMMIT_HOME": str(pre_commit_home)}
    use_pre_commit(repo.root, env, hook_repository)
    sha = commit(repo.root, "code", {"app/main.sh": "echo clean v2\n"})
    proc = push(repo.root, "origin", "main", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (final,) = wait_final(repo.root)
    assert final["state"] == "done" and final["commit"] == sha, final
    assert repo.versions() == {"clean": 2, "features": 2, "stats": 1, "report": 1}
    ref = image_ref(repo, repo.app)
    assert registry.has_manifest(f"{repo.project}/app", ref.rsplit(":", 1)[1])
    assert repo.images()["clean"] == ref
