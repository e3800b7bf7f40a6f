"""pachhook in CI without Docker: the shallow-clone trap, the event's range, GitHub's
workflow commands, outputs and job summary, `plan --format markdown`,
`plan --detailed-exitcode` and `--config`, through the real command on real clones."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pachhook.repo.ci import ZERO_SHA, detect
from pachhook.run import github
from pachhook.run.summary import plan_markdown, run_markdown
from tests.helpers import commit, git, init_repo, spec

IMAGE = "registry.example.com/acme/app"


def pachhook(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PACHYDERM_", "DOCKER", "GITHUB_", "GITLAB", "PRE_COMMIT", "CI"))
    }
    return subprocess.run(
        [sys.executable, "-m", "pachhook", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
    )


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A repository with one image and two pipelines, and three commits: the second
    touches the image, the third only a README."""
    root = init_repo(tmp_path / "origin")
    commit(
        root,
        "initial",
        {
            "pachhook.toml": f'[[image]]\nname = "{IMAGE}"\ncontext = "app"\n',
            "app/Dockerfile": "FROM scratch\nCOPY main.sh /main.sh\n",
            "app/main.sh": "echo v1\n",
            "pipelines/clean.json": spec("clean", IMAGE, "raw"),
            "pipelines/other.json": spec("other", "docker.io/library/busybox:1", "raw"),
            "README.md": "# data\n",
        },
    )
    commit(root, "code", {"app/main.sh": "echo v2\n"})
    commit(root, "docs", {"README.md": "# data\n\nmore\n"})
    return root


def clone(origin: Path, dest: Path, depth: int = 1) -> Path:
    subprocess.run(
        ["git", "clone", "-q", f"--depth={depth}", f"file://{origin}", str(dest)], check=True
    )
    return dest


def plan_json(root: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    proc = pachhook(root, "plan", "--json", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# -- the trap ---------------------------------------------------------------------------------


def test_a_depth_one_clone_in_ci_decides_by_state(origin: Path, tmp_path: Path) -> None:
    shallow = clone(origin, tmp_path / "ci")
    assert git(shallow, "rev-parse", "@{upstream}") == git(shallow, "rev-parse", "HEAD")

    # Outside CI: HEAD against its upstream, which it is, so nothing (as before).
    assert plan_json(shallow, {})["evaluated"] is False

    for env in ({"CI": "true"}, {"GITHUB_ACTIONS": "true"}, {"CI": "1", "GITLAB_CI": "true"}):
        plan = plan_json(shallow, env)
        assert plan["evaluated"] is True
        assert [i["action"] for i in plan["images"]] == ["build"]
        assert {p["name"]: p["action"] for p in plan["pipelines"]} == {
            "clean": "update",
            "other": "update",
        }
        why = plan["images"][0]["reasons"][0]["why"]
        assert "decided by state (no selection given)" in why, why

    # An explicit selection is still the user's, in CI too.
    assert plan_json(shallow, {"CI": "true"}, "--from", "HEAD")["evaluated"] is False


def test_the_events_range_names_the_reasons_when_the_clone_has_it(
    origin: Path, tmp_path: Path
) -> None:
    deep = clone(origin, tmp_path / "deep", depth=3)
    first = git(deep, "rev-parse", "HEAD~2")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": "refs/heads/main", "before": first, "after": "x"}))
    env = {"GITHUB_ACTIONS": "true", "GITHUB_EVENT_PATH": str(event)}
    plan = plan_json(deep, env)
    assert plan["changed_files"] == ["README.md", "app/main.sh"]
    reasons = [(r["path"], r["why"]) for r in plan["images"][0]["reasons"]]
    assert reasons[1] == ("app/main.sh", "input changed")
    # Still decided by state: the pipeline the range does not touch is checked too.
    assert {p["name"] for p in plan["pipelines"] if p["action"] != "skip"} == {"clean", "other"}

    # A start the shallow clone lacks names no files, and checks no less.
    shallow = clone(origin, tmp_path / "shallow")
    plan = plan_json(shallow, env)
    assert plan["changed_files"] == [] and plan["images"][0]["action"] == "build"


def test_what_a_ci_event_names_as_the_start() -> None:
    assert detect({}) is None
    assert detect({"CI": "false"}) is None
    sha = "a" * 40
    assert detect({"CI": "true"}) == ("CI", None, "")
    gitlab = {"CI": "true", "GITLAB_CI": "true", "CI_COMMIT_BEFORE_SHA": ZERO_SHA}
    assert detect(gitlab) == ("GitLab CI", None, "CI_COMMIT_BEFORE_SHA")
    gitlab["CI_MERGE_REQUEST_DIFF_BASE_SHA"] = sha
    assert detect(gitlab).since == sha  # type: ignore[union-attr]
    assert detect({"CI": "true", "PRE_COMMIT_FROM_REF": "origin/main"}).since == "origin/main"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("payload", "since"),
    [
        ({"before": ZERO_SHA, "after": "b" * 40, "created": True}, None),  # a new branch
        ({"before": "a" * 40, "after": "b" * 40}, "a" * 40),
        ({"pull_request": {"base": {"sha": "c" * 40}, "head": {"sha": "d" * 40}}}, "c" * 40),
        ("not an object", None),
    ],
)
def test_the_github_event_payload(tmp_path: Path, payload: Any, since: str | None) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps(payload))
    found = detect({"GITHUB_ACTIONS": "true", "GITHUB_EVENT_PATH": str(event)})
    assert found is not None and found.system == "GitHub Actions" and found.since == since


# -- GitHub's workflow commands, outputs and job summary ------------------------------------------


def github_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "out").write_text("")
    (tmp_path / "summary").write_text("")
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(tmp_path / "out"),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary"),
        **extra,
    }


def outputs(tmp_path: Path) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (tmp_path / "out").read_text().splitlines()]
    return {k: v for k, v in pairs}


def test_plan_on_github_writes_outputs_summary_and_masks(origin: Path, tmp_path: Path) -> None:
    shallow = clone(origin, tmp_path / "ci")
    token = "pach-" + "x9" * 10
    docker = tmp_path / "docker"
    docker.mkdir()
    auth = base64.b64encode(b"bot:registry-PASSW0RD").decode()
    (docker / "config.json").write_text(json.dumps({"auths": {"ghcr.io": {"auth": auth}}}))
    env = github_env(tmp_path, PACHYDERM_TOKEN=token, DOCKER_CONFIG=str(docker))
    proc = pachhook(shallow, "plan", "--detailed-exitcode", env=env)
    assert proc.returncode == 2, proc.stderr  # changes planned
    masks = [line for line in proc.stderr.splitlines() if line.startswith("::add-mask::")]
    assert masks == ["::add-mask::" + token, "::add-mask::" + auth, "::add-mask::registry-PASSW0RD"]
    assert token not in proc.stdout
    assert outputs(tmp_path) == {
        "images": json.dumps([f"{IMAGE}:{plan_json(shallow, {'CI': 'true'})['images'][0]['tag']}"]),
        "pipelines": '["default/clean", "default/other"]',
        "transaction": "",
        "changed": "true",
    }
    summary = (tmp_path / "summary").read_text()
    assert summary.startswith("### pachhook plan: images 1 to build; pipelines 2 to update")
    assert token not in summary


def test_a_bad_config_is_an_annotation_on_its_line(origin: Path, tmp_path: Path) -> None:
    commit(origin, "typo", {"pachhook.toml": f'[[image]]\nname = "{IMAGE}"\ncontxt = "app"\n'})
    shallow = clone(origin, tmp_path / "ci")
    env = github_env(tmp_path, GITHUB_WORKSPACE=str(shallow))
    proc = pachhook(shallow, "plan", "--detailed-exitcode", env=env)
    assert proc.returncode == 1  # not 2: that would read as "changes planned"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("::error ")]
    assert errors == [
        "::error file=pachhook.toml,line=3,title=pachhook plan::pachhook.toml:3: "
        "image[0].contxt: unknown key; did you mean 'context'?"
    ]
    assert "pachhook plan failed" in (tmp_path / "summary").read_text()
    assert outputs(tmp_path) == {}  # no guess: the action's outputs stay empty
    assert pachhook(shallow, "plan", env=env).returncode == 2  # without the flag, as always


# -- plan --format markdown, --detailed-exitcode, --config ----------------------------------------


def test_detailed_exitcode_and_markdown(origin: Path) -> None:
    nothing = pachhook(origin, "plan", "--from", "HEAD~1", "--detailed-exitcode")
    assert nothing.returncode == 0, nothing.stderr
    change = pachhook(
        origin, "plan", "--from", "HEAD~2", "--to", "HEAD~1", "--detailed-exitcode", "-f", "x"
    )
    assert change.returncode == 1  # bad usage, with the flag: an error, not "changes"
    change = pachhook(origin, "plan", "--from", "HEAD~2", "--to", "HEAD~1", "--format", "markdown")
    assert change.returncode == 0
    assert change.stdout.splitlines()[0] == (
        "### pachhook plan: images 1 to build; pipelines 1 to update, 1 unchanged"
    )
    assert "| `default/clean` | to update | `app/main.sh`: image " in change.stdout
    detailed = pachhook(origin, "plan", "--from", "HEAD~2", "--to", "HEAD~1", "--detailed-exitcode")
    assert detailed.returncode == 2


def test_config_names_another_file(origin: Path, tmp_path: Path) -> None:
    commit(
        origin,
        "ci config",
        {
            "ci/pachhook.toml": '[[image]]\nname = "registry.example.com/acme/other"\ncontext = "app"\n'
        },
    )
    plan = plan_json(origin, {}, "--all", "--config", "ci/pachhook.toml")
    assert [i["name"] for i in plan["images"]] == ["registry.example.com/acme/other"]
    # Its own change re-evaluates everything; pachhook.toml is no longer read.
    plan = plan_json(origin, {}, "--from", "HEAD~1", "--config", "ci/pachhook.toml")
    assert plan["images"][0]["reasons"][0] == {
        "path": "ci/pachhook.toml",
        "why": "configuration changed",
    }
    missing = pachhook(origin, "plan", "--all", "--config", "nope.toml")
    assert missing.returncode == 2
    assert "--config nope.toml: no such file in the repository" in missing.stderr
    outside = pachhook(origin, "plan", "--all", "--config", "../x.toml")
    assert outside.returncode == 2 and "relative to the repository root" in outside.stderr


# -- the renderer and the commands, alone ----------------------------------------------------------


def test_markdown_shows_actions_it_has_no_words_for_as_spelled() -> None:
    plan = {
        "changed_files": ["a|b.py"],
        "images": [
            {"name": "r/app", "tag": "ph-1", "action": "exists", "reasons": []},
            {"name": "r/new", "tag": "ph-2", "action": "rebuild", "reasons": []},
        ],
        "pipelines": [
            {"name": "p", "project": "default", "action": "drifted", "reasons": [
                {"path": "a|b.py", "why": "changed | here"}]},
        ],
        "evaluated": True,
    }  # fmt: skip
    text = plan_markdown(plan)
    assert text.splitlines()[0] == (
        "### pachhook plan: images 1 found in the registry, 1 rebuild; pipelines 1 drifted"
    )
    assert "| `default/p` | drifted | `a\\|b.py`: changed \\| here |" in text
    many = {**plan, "pipelines": plan["pipelines"] * 250}
    assert "| … and 50 more | | |" in plan_markdown(many)


def test_run_markdown_reports_the_record() -> None:
    plan = {"changed_files": [], "images": [{"name": "r/app", "tag": "ph-1", "action": "build",
            "reasons": [{"path": None, "why": "CI: decided by state"}]}], "evaluated": True}  # fmt: skip
    run = {
        "commit": "f" * 40, "started": 1.0, "finished": 3.5, "transaction": "t1", "error": None,
        "images": [{"name": "r/app", "reference": "r/app:ph-1", "status": "built", "seconds": 2.0}],
        "pipelines": [{"project": "default", "name": "p", "action": "create", "status": "applied",
                       "reasons": ["x.json: new spec"]}],
    }  # fmt: skip
    text = run_markdown(plan, run)
    assert text.splitlines()[0] == "### pachhook run: images 1 built; pipelines 1 created"
    assert "commit `ffffffffffff` · 2.5 s · transaction `t1` · 0 changed files" in text
    assert (
        "| `r/app:ph-1` | built in 2.0 s | no image with these inputs in the registry; "
        "CI: decided by state |"
    ) in text
    assert "| `default/p` | created | not on the cluster; x.json: new spec |" in text
    # A reason every row gives is said once, above the tables.
    run["pipelines"][0]["reasons"].append("CI: decided by state")
    text = run_markdown(plan, run)
    assert "· 0 changed files · CI: decided by state\n" in text
    assert "| `default/p` | created | not on the cluster; x.json: new spec |" in text


def test_workflow_commands_are_escaped_and_locations_found(tmp_path: Path) -> None:
    assert github.command("error", "a%b\nc", file="x,y:z", line=3, title=None) == (
        "::error file=x%2Cy%3Az,line=3::a%25b%0Ac"
    )
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "a.json").write_text("{}")
    assert github.located_in("pipelines/a.json:4: bad", tmp_path) == ("pipelines/a.json", 4)
    assert github.located_in("pipeline p/a (pipelines/a.json:2): no", tmp_path) == (
        "pipelines/a.json",
        2,
    )
    assert github.located_in("git: no commit named 'x'", tmp_path) == (None, None)
    dockerfile = "FROM a AS one\n# note\nRUN true \\\n  && echo\nFROM b\nRUN false\n"
    error = "build failed at step 4/4 (RUN false): returned 1"
    assert github.dockerfile_line(dockerfile, error) == 6
    assert github.dockerfile_line(dockerfile, "build failed: no step") is None


# -- a whole run on GitHub, deploy only (pipelines of images pachhook does not build) --------------


def test_run_json_on_github_decides_by_state_and_reports(spec_repo: Any, tmp_path: Path) -> None:
    from tests.e2e import Repo

    repo: Repo = spec_repo
    env = github_env(tmp_path, CI="true")
    proc = repo.run("run", "--json", **env)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)["run"]  # standard output is the JSON alone
    names = [f"{repo.project}/{n}" for n in ("clean", "features", "stats", "report")]
    assert outputs(tmp_path) == {
        "images": "[]",
        "pipelines": json.dumps(names),
        "transaction": record["transaction"],
        "changed": "true",
    }
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}
    summary = (tmp_path / "summary").read_text()
    assert summary.count("| created | not on the cluster") == 4, summary
    token = repo.pachd.token
    if token:
        assert f"::add-mask::{token}" in proc.stderr.splitlines()
        assert token not in proc.stdout + summary + (tmp_path / "out").read_text()

    # The same commit again: the cluster runs these specs; nothing to do, and it says so.
    env = github_env(tmp_path, CI="true")
    proc = repo.run("run", **env)
    assert proc.returncode == 0, proc.stderr
    assert outputs(tmp_path)["changed"] == "false"
    assert outputs(tmp_path)["pipelines"] == "[]"
    assert (tmp_path / "summary").read_text().startswith("### pachhook run: nothing to do")
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}
