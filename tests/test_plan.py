"""The planner and the change sets it is given, on real git repositories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pachhook.errors import InputError
from pachhook.pachyderm.specs import parse_file
from pachhook.pachyderm.stored import Deployed
from pachhook.plan.load import plan_selection
from pachhook.plan.planner import Remote, dag_order, make_plan
from pachhook.repo.git import Repo
from pachhook.repo.selection import Selection
from tests.helpers import commit, git, init_repo, spec, write

CONFIG = """
[[image]]
name = "registry.example.com/ml/train"
context = "train"

[[image]]
name = "registry.example.com/ml/serve"
context = "serve"
"""


@pytest.fixture
def plan_repo(tmp_path: Path) -> Path:
    root = init_repo(tmp_path / "repo")
    commit(
        root,
        "start",
        {
            "pachhook.toml": CONFIG,
            "train/Dockerfile": "FROM scratch\nCOPY . /app\n",
            "train/model.py": "print('train')\n",
            "serve/Dockerfile": "FROM scratch\nCOPY . /app\n",
            "serve/app.py": "print('serve')\n",
            "docs/guide.md": "# guide\n",
            "pipelines/train.json": spec("train", "registry.example.com/ml/train:old", "raw"),
            "pipelines/more.yaml": "\n---\n".join(
                json.dumps(spec(n, "registry.example.com/ml/serve:old", i))
                for n, i in [("score", "train"), ("report", "score")]
            ),
        },
    )
    return root


def plan_of(root: Path, env: dict[str, str] | None = None, **selection):
    return plan_selection(Repo.discover(root), Selection(**selection), env or {}).plan


def actions(plan) -> tuple[dict[str, str], dict[str, str]]:
    return (
        {i.name.rsplit("/", 1)[-1]: i.action for i in plan.images},
        {p.pipeline.name: p.action for p in plan.pipelines},
    )


def test_code_change_builds_one_image_and_updates_its_pipelines(plan_repo: Path):
    base = git(plan_repo, "rev-parse", "HEAD")
    commit(plan_repo, "tune", {"serve/app.py": "print('serve v2')\n"})
    plan = plan_of(plan_repo, from_ref=base)
    images, pipes = actions(plan)
    assert images == {"train": "skip", "serve": "build"}
    assert pipes == {"train": "skip", "score": "update", "report": "update"}
    serve = next(i for i in plan.images if i.action == "build")
    assert [(r.path, r.why) for r in serve.reasons] == [("serve/app.py", "input changed")]
    score = next(p for p in plan.pipelines if p.pipeline.name == "score")
    assert score.image == f"registry.example.com/ml/serve:{serve.tag}"
    assert [(r.path, r.why) for r in score.reasons] == [
        ("serve/app.py", "image registry.example.com/ml/serve changed")
    ]


def test_spec_only_change_updates_only_that_pipeline(plan_repo: Path):
    base = git(plan_repo, "rev-parse", "HEAD")
    text = (plan_repo / "pipelines/more.yaml").read_text().replace('"score", "train"', "x")
    docs = text.split("\n---\n")
    docs[1] = docs[1].replace('"true"', '"exit 0"')
    commit(plan_repo, "report spec", {"pipelines/more.yaml": "\n---\n".join(docs)})
    images, pipes = actions(plan_of(plan_repo, from_ref=base))
    assert images == {"train": "skip", "serve": "skip"}
    assert pipes == {"train": "skip", "score": "skip", "report": "update"}


def test_new_spec_is_created_and_removed_spec_is_reported(plan_repo: Path):
    base = git(plan_repo, "rev-parse", "HEAD")
    (plan_repo / "pipelines/train.json").unlink()
    commit(plan_repo, "swap", {"pipelines/fresh.json": spec("fresh", "busybox", "raw")})
    plan = plan_of(plan_repo, from_ref=base)
    assert {p.pipeline.name: p.action for p in plan.pipelines}["fresh"] == "create"
    assert [(p.name, p.spec_file) for p in plan.removed] == [("train", "pipelines/train.json")]
    assert "train" not in {p.pipeline.name for p in plan.pipelines}


def test_config_change_re_evaluates_everything(plan_repo: Path):
    base = git(plan_repo, "rev-parse", "HEAD")
    commit(plan_repo, "jobs", {"pachhook.toml": "jobs = 3\n" + CONFIG})
    images, pipes = actions(plan_of(plan_repo, from_ref=base))
    assert set(images.values()) == {"build"} and set(pipes.values()) == {"update"}


def test_irrelevant_change_reads_nothing(plan_repo: Path):
    base = git(plan_repo, "rev-parse", "HEAD")
    commit(plan_repo, "docs", {"docs/guide.md": "# better guide\n"})
    plan = plan_of(plan_repo, from_ref=base)
    assert not plan.evaluated and plan.nothing_to_do
    assert plan.changed_files == ("docs/guide.md",)
    assert [i.action for i in plan.images] == ["skip", "skip"] and plan.pipelines == ()


def test_deleted_input_rebuilds(plan_repo: Path):
    base = git(plan_repo, "rev-parse", "HEAD")
    commit(plan_repo, "helper", {"train/helper.py": "x = 1\n"})
    mid = git(plan_repo, "rev-parse", "HEAD")
    (plan_repo / "train/helper.py").unlink()
    commit(plan_repo, "drop helper")
    images, _ = actions(plan_of(plan_repo, from_ref=mid))
    assert images["train"] == "build"
    # Added and removed again between base and HEAD: no change at all.
    assert actions(plan_of(plan_repo, from_ref=base))[0] == {"train": "skip", "serve": "skip"}


def test_pipelines_in_dag_order_upstream_first(plan_repo: Path):
    plan = plan_of(plan_repo, everything=True)
    assert [p.pipeline.name for p in plan.pipelines] == ["train", "score", "report"]


def test_cycle_names_the_pipelines():
    docs = [
        spec("a", "x", "c"),
        spec("b", "x", "a"),
        spec("c", "x", "b"),
        spec("d", "x", "raw"),
    ]
    pipelines = [
        p
        for n, d in enumerate(docs)
        for p in parse_file(f"{n}.json", json.dumps(d).encode(), "default", strict=True)
    ]
    with pytest.raises(
        InputError, match=r"cycle through their input repos: default/a, default/b, default/c"
    ):
        dag_order(pipelines)


def test_remote_state_decides(plan_repo: Path):
    planned = plan_selection(Repo.discover(plan_repo), Selection(everything=True), {})
    plan = planned.plan
    train = next(i for i in plan.images if i.name.endswith("train"))
    held = {p.key: Deployed(version=2, digest=p.spec_digest) for p in plan.pipelines}
    held[("default", "report")] = Deployed(version=1, digest="something else")
    del held[("default", "score")]
    remote = Remote(tags={(train.state.repository, train.tag): True}, pipelines=held)
    again = make_plan(planned.workspace, planned.resolved.changes, planned.base, remote)
    images, pipes = actions(again)
    assert images == {"train": "exists", "serve": "build"}
    assert pipes == {"train": "unchanged", "score": "create", "report": "update"}
    # Changed outside pachhook since it applied version 1: restored, and said so.
    held[("default", "train")] = Deployed(
        3, held[("default", "train")].digest, ("transform.cmd",), 1
    )
    again = make_plan(planned.workspace, planned.resolved.changes, planned.base, remote)
    (drifted,) = [p for p in again.pipelines if p.action == "drifted"]
    assert drifted.pipeline.name == "train" and drifted.to_json()["drift"] == ["transform.cmd"]
    assert "changed outside pachhook since pachhook applied version 1: transform.cmd" in {
        r.why for r in drifted.reasons
    }


def test_working_tree_counts_staged_unstaged_untracked_not_ignored(plan_repo: Path):
    commit(plan_repo, "ignore", {".gitignore": "*.log\n"})
    write(
        plan_repo,
        {
            "train/model.py": "print('edited')\n",
            "serve/new.py": "x\n",
            "serve/debug.log": "noise\n",
        },
    )
    git(plan_repo, "add", "train/model.py")
    write(plan_repo, {"docs/guide.md": "unstaged\n"})
    plan = plan_of(plan_repo, working_tree=True)
    assert set(plan.changed_files) == {"train/model.py", "serve/new.py", "docs/guide.md"}
    assert actions(plan)[0] == {"train": "build", "serve": "build"}


def test_renames_count_under_both_names(plan_repo: Path):
    base = git(plan_repo, "rev-parse", "HEAD")
    git(plan_repo, "mv", "train/model.py", "serve/model.py")
    commit(plan_repo, "move")
    plan = plan_of(plan_repo, from_ref=base)
    assert set(plan.changed_files) == {"train/model.py", "serve/model.py"}
    assert actions(plan)[0] == {"train": "build", "serve": "build"}


def test_default_selection_uses_upstream_merge_base(plan_repo: Path, tmp_path: Path):
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(plan_repo, "remote", "add", "origin", str(remote))
    git(plan_repo, "push", "-q", "-u", "origin", "main")
    commit(plan_repo, "local", {"train/model.py": "print('v2')\n"})
    assert actions(plan_of(plan_repo))[0] == {"train": "build", "serve": "skip"}
    # A new branch without upstream is compared with the remote's default branch.
    git(plan_repo, "checkout", "-q", "-b", "feature")
    commit(plan_repo, "feature", {"serve/app.py": "print('v3')\n"})
    assert actions(plan_of(plan_repo))[0] == {"train": "build", "serve": "build"}
    # So is a detached HEAD.
    git(plan_repo, "checkout", "-q", "--detach")
    assert actions(plan_of(plan_repo))[0] == {"train": "build", "serve": "build"}


def test_no_upstream_and_no_remote_is_a_clear_error(plan_repo: Path):
    with pytest.raises(
        InputError, match="no upstream branch.*use --from REF, --working-tree or --all"
    ):
        plan_of(plan_repo)


def test_root_commit_as_from(plan_repo: Path):
    root_commit = git(plan_repo, "rev-list", "--max-parents=0", "HEAD")
    commit(plan_repo, "more", {"serve/app.py": "print('v4')\n"})
    assert actions(plan_of(plan_repo, from_ref=root_commit))[0] == {
        "train": "skip",
        "serve": "build",
    }


def test_shallow_clone_without_merge_base_says_what_to_do(plan_repo: Path, tmp_path: Path):
    for n in range(3):
        commit(plan_repo, f"c{n}", {"serve/app.py": f"print({n})\n"})
    clone = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{plan_repo}", str(clone))
    with pytest.raises(InputError, match="git fetch --unshallow"):
        plan_of(clone, from_ref="HEAD~2")


def test_unknown_ref_and_empty_repository(tmp_path: Path, plan_repo: Path):
    with pytest.raises(InputError, match="no commit named 'nope'"):
        plan_of(plan_repo, from_ref="nope")
    empty = init_repo(tmp_path / "empty")
    with pytest.raises(InputError, match="no commits yet"):
        plan_of(empty)
    write(
        empty,
        {
            "pachhook.toml": CONFIG,
            "train/Dockerfile": "FROM scratch\n",
            "serve/Dockerfile": "FROM scratch\n",
        },
    )
    assert actions(plan_of(empty, working_tree=True))[0] == {"train": "build", "serve": "build"}


def test_missing_context_and_dockerfile_are_config_errors(plan_repo: Path):
    commit(
        plan_repo,
        "bad",
        {"pachhook.toml": CONFIG + '\n[[image]]\nname = "x/y"\ncontext = "nowhere"\n'},
    )
    with pytest.raises(InputError, match=r"pachhook.toml: image\[2\].context: folder 'nowhere'"):
        plan_of(plan_repo, everything=True)
    commit(
        plan_repo,
        "bad2",
        {"pachhook.toml": CONFIG + '\n[[image]]\nname = "x/y"\ncontext = "docs"\n'},
    )
    with pytest.raises(
        InputError, match=r"image\[2\].dockerfile: 'docs/Dockerfile' .* does not exist"
    ):
        plan_of(plan_repo, everything=True)


def test_duplicate_pipeline_names_are_reported_once_and_the_rest_is_planned(plan_repo: Path):
    commit(
        plan_repo,
        "dup",
        {
            "pipelines/dup.json": spec("train", "x", "raw"),
            "pipelines/dup2.json": spec("train", "y", "raw"),
        },
    )
    plan = plan_of(plan_repo, everything=True)
    assert sorted(p.pipeline.name for p in plan.pipelines) == ["report", "score"]
    (note,) = plan.notes
    assert note.startswith("pipeline default/train is defined 3 times (")
    for where in ("pipelines/train.json:1", "pipelines/dup.json:1", "pipelines/dup2.json:1"):
        assert where in note
    # The choice is the user's: excluding the file that an include glob names works.
    commit(
        plan_repo,
        "choose",
        {
            "pachhook.toml": CONFIG
            + '\n[pipelines]\ninclude = ["pipelines/*.json", "pipelines/more.yaml"]\n'
            'exclude = ["pipelines/dup.json", "pipelines/dup2.json"]\n'
        },
    )
    plan = plan_of(plan_repo, everything=True)
    assert plan.notes == ()
    train = next(p for p in plan.pipelines if p.pipeline.name == "train")
    assert train.pipeline.spec_file == "pipelines/train.json"
    # A file named by an include list and excluded is no error either.
    commit(
        plan_repo,
        "list",
        {
            "pachhook.toml": CONFIG
            + '\n[pipelines]\ninclude = ["pipelines/train.json", "pipelines/dup.json"]\n'
            'exclude = ["pipelines/dup.json"]\n'
        },
    )
    assert [p.pipeline.name for p in plan_of(plan_repo, everything=True).pipelines] == ["train"]
