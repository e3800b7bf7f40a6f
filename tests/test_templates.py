"""Jsonnet pipeline templates: real templates, the real go-jsonnet in its worker process,
real git repositories; plans in process, errors and the no-op path through the real
command, and runs against the pachd double (see also tests/test_run_e2e.py).

The repository (`tpl_repo`): one JSON spec and three template instances that share a
library, in a DAG:

    raw -> images (pipelines/ingest.json) -> edges-1 -> edges-2   (templates/edges.jsonnet)
    raw -> montage-a -> thumbs-a                                  (templates/pair.jsonnet)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pachhook.pachyderm import jsonnet
from pachhook.pachyderm.jsonnet import Evaluator, Job, TemplateError
from pachhook.plan.load import plan_selection
from pachhook.plan.workspace import load_workspace
from pachhook.repo.git import Repo
from pachhook.repo.selection import Selection
from pachhook.repo.source import CommitSource, WorkingTreeSource
from tests.cluster import DoubleTarget
from tests.e2e import PACHHOOK
from tests.e2e import Repo as E2ERepo
from tests.helpers import commit, git, init_repo, spec, write

EDGES_IMAGE = "registry.example.com/ml/edges"

CONFIG = f"""
[[image]]
name = "{EDGES_IMAGE}"
context = "edges"

[pipelines]
include = ["pipelines/*.json"]

[[pipelines.template]]
file = "templates/edges.jsonnet"
args = {{ suffix = "1", src = "images" }}

[[pipelines.template]]
file = "templates/edges.jsonnet"
args = {{ suffix = "2", src = "edges-1" }}

[[pipelines.template]]
file = "templates/pair.jsonnet"
args = {{ suffix = "a", src = "raw" }}
"""

EDGES = """\
// One pipeline per instance, as `pachctl create pipeline --jsonnet edges.jsonnet
// --arg suffix=1 --arg src=images` makes it.
local common = import "../lib/common.libsonnet";
function(suffix, src)
  common.spec("edges-" + suffix, src, common.images.edges) {
    description: "suffix is a " + std.type(suffix),
  }
"""

PAIR = """\
local common = import "../lib/common.libsonnet";
function(suffix, src)
  [
    common.spec("montage-" + suffix, src, common.images.tool),
    common.spec("thumbs-" + suffix, "montage-" + suffix, common.images.tool),
  ]
"""

COMMON = """\
{
  images:: import "images.libsonnet",
  spec(name, input, image):: {
    pipeline: { name: name },
    transform: { image: image, cmd: std.split(importstr "cmd.txt", " ") },
    input: { pfs: { repo: input, glob: "/*" } },
  },
}
"""

IMAGES = f'{{ edges: "{EDGES_IMAGE}:1.0", tool: "docker.io/acme/tool:2" }}\n'


@pytest.fixture
def tpl_repo(tmp_path: Path) -> Path:
    root = init_repo(tmp_path / "repo")
    commit(
        root,
        "templates",
        {
            "pachhook.toml": CONFIG,
            "edges/Dockerfile": "FROM scratch\nCOPY edges.py /\n",
            "edges/edges.py": "print('edges')\n",
            "pipelines/ingest.json": spec("images", f"{EDGES_IMAGE}:old", "raw"),
            "templates/edges.jsonnet": EDGES,
            "templates/pair.jsonnet": PAIR,
            "lib/common.libsonnet": COMMON,
            "lib/images.libsonnet": IMAGES,
            "lib/cmd.txt": "python3 /run.py",
            "docs/guide.md": "# guide\n",
        },
    )
    return root


def plan_of(root: Path, **selection: Any) -> Any:
    return plan_selection(Repo.discover(root), Selection(**selection), {}).plan


def pipelines(plan: Any) -> dict[str, str]:
    return {p.pipeline.name: p.action for p in plan.pipelines}


def python(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PACHYDERM_")}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=clean, timeout=120
    )


def pachhook(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return python(cwd, "-m", "pachhook", *args)


def failure(root: Path, *args: str) -> str:
    """The one line of a run that must fail with exit code 2."""
    proc = pachhook(root, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    return line.removeprefix("pachhook: ")


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The template instances evaluated (not taken from the cache), by label."""
    seen: list[str] = []
    real = Evaluator.evaluate

    def counted(self: Evaluator, job: Job) -> jsonnet.Result:
        seen.append(job.label)
        return real(self, job)

    monkeypatch.setattr(Evaluator, "evaluate", counted)
    return seen


# -- what templates give ------------------------------------------------------------------------


def test_function_template_with_args_gives_one_spec_per_instance(tpl_repo: Path) -> None:
    plan = plan_of(tpl_repo, everything=True)
    by_name = {p.pipeline.name: p for p in plan.pipelines}
    edges = by_name["edges-1"]
    assert edges.pipeline.where == "templates/edges.jsonnet (suffix=1, src=images)"
    assert edges.pipeline.spec_file == "templates/edges.jsonnet"
    assert edges.pipeline.inputs == (("default", "images"),)
    # pachctl passes --arg values as strings: so does pachhook
    assert edges.pipeline.document["description"] == "suffix is a string"
    # transform.image names an image pachhook builds: the deployed spec runs its new tag
    (image,) = plan.images
    assert edges.image == f"{EDGES_IMAGE}:{image.tag}" and image.tag.startswith("ph-")
    assert by_name["edges-2"].pipeline.inputs == (("default", "edges-1"),)
    assert edges.to_json()["origin"] == "templates/edges.jsonnet (suffix=1, src=images)"
    assert "origin" not in by_name["images"].to_json()


def test_template_returning_an_array_and_the_dag_across_json_and_templates(
    tpl_repo: Path,
) -> None:
    plan = plan_of(tpl_repo, everything=True)
    order = [p.pipeline.name for p in plan.pipelines]
    assert sorted(order) == sorted(["images", "edges-1", "edges-2", "montage-a", "thumbs-a"])
    assert order.index("images") < order.index("edges-1") < order.index("edges-2")
    assert order.index("montage-a") < order.index("thumbs-a")
    thumbs = next(p for p in plan.pipelines if p.pipeline.name == "thumbs-a")
    assert thumbs.pipeline.where == "templates/pair.jsonnet (suffix=a, src=raw)"
    assert thumbs.image == "docker.io/acme/tool:2"  # not an image of pachhook's: as written
    assert thumbs.pipeline.document["transform"]["cmd"] == ["python3", "/run.py"]


def test_every_file_a_template_reads_is_its_input(tpl_repo: Path) -> None:
    source = WorkingTreeSource(Repo.discover(tpl_repo))
    workspace = load_workspace(source, {})
    shared = ("lib/cmd.txt", "lib/common.libsonnet", "lib/images.libsonnet")
    assert [i.files for i in workspace.templates] == [
        ("templates/edges.jsonnet", *shared),
        ("templates/edges.jsonnet", *shared),
        ("templates/pair.jsonnet", *shared),
    ]
    proc = pachhook(tpl_repo, "explain", "lib/common.libsonnet", "docs/guide.md")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "lib/common.libsonnet:",
        "  template templates/edges.jsonnet (suffix=1, src=images): imported by it; a change re-evaluates it",
        "    pipeline default/edges-1 is evaluated from it; updated when its evaluated spec changes",
        "  template templates/edges.jsonnet (suffix=2, src=edges-1): imported by it; a change re-evaluates it",
        "    pipeline default/edges-2 is evaluated from it; updated when its evaluated spec changes",
        "  template templates/pair.jsonnet (suffix=a, src=raw): imported by it; a change re-evaluates it",
        "    pipeline default/montage-a is evaluated from it; updated when its evaluated spec changes",
        "    pipeline default/thumbs-a is evaluated from it; updated when its evaluated spec changes",
        "docs/guide.md:",
        "  affects nothing: not an input of any image, not a spec, not the configuration",
    ]


def test_imports_are_those_the_evaluation_took(tpl_repo: Path) -> None:
    # go-jsonnet imports lazily: a branch not taken reads nothing, so the inputs of an
    # instance can depend on its args.
    write(
        tpl_repo,
        {
            "templates/lazy.jsonnet": (
                "function(kind)\n"
                '  if kind == "plain" then { pipeline: { name: "plain" }, transform: {} }\n'
                '  else { pipeline: { name: "fancy" }, transform: { cmd: [importstr "../lib/cmd.txt"] } }\n'
            ),
            "pachhook.toml": CONFIG
            + '\n[[pipelines.template]]\nfile = "templates/lazy.jsonnet"\nargs = { kind = "plain" }\n'
            + '\n[[pipelines.template]]\nfile = "templates/lazy.jsonnet"\nargs = { kind = "fancy" }\n',
        },
    )
    workspace = load_workspace(WorkingTreeSource(Repo.discover(tpl_repo)), {})
    plain, fancy = workspace.templates[-2:]
    assert plain.files == ("templates/lazy.jsonnet",)
    assert fancy.files == ("templates/lazy.jsonnet", "lib/cmd.txt")


def test_a_commit_is_read_from_its_tree_not_from_the_working_tree(tpl_repo: Path) -> None:
    write(tpl_repo, {"lib/images.libsonnet": IMAGES.replace("tool:2", "tool:dirty")})
    repo = Repo.discover(tpl_repo)
    committed = load_workspace(CommitSource(repo, git(tpl_repo, "rev-parse", "HEAD")), {})
    on_disk = load_workspace(WorkingTreeSource(repo), {})
    image = {p.name: p.image for p in committed.pipelines}
    assert image["montage-a"] == "docker.io/acme/tool:2"
    assert {p.name: p.image for p in on_disk.pipelines}["montage-a"] == "docker.io/acme/tool:dirty"


def test_a_symlink_inside_the_repository_is_followed_and_is_an_input(tpl_repo: Path) -> None:
    (tpl_repo / "lib/alias.libsonnet").symlink_to("images.libsonnet")
    write(
        tpl_repo,
        {
            "templates/pair.jsonnet": PAIR.replace(
                '"../lib/common.libsonnet"', '"../lib/alias.libsonnet"'
            )
            .replace("common.images.tool", "common.tool")
            .replace("common.spec(", "(import '../lib/common.libsonnet').spec(")
        },
    )
    commit(tpl_repo, "alias")
    workspace = load_workspace(
        CommitSource(Repo.discover(tpl_repo), git(tpl_repo, "rev-parse", "HEAD")), {}
    )
    pair = workspace.templates[-1]
    assert "lib/alias.libsonnet" in pair.files and "lib/images.libsonnet" in pair.files
    assert {p.name: p.image for p in workspace.pipelines}["thumbs-a"] == "docker.io/acme/tool:2"


# -- what a change updates ------------------------------------------------------------------------


def test_a_change_to_the_shared_library_updates_exactly_the_specs_it_changes(
    tpl_repo: Path, evaluations: list[str]
) -> None:
    plan_of(tpl_repo, everything=True)  # evaluated and cached
    evaluations.clear()
    # Only the `tool` image changes: every template reads the file, the edges specs
    # stay as they were.
    commit(tpl_repo, "new tool", {"lib/images.libsonnet": IMAGES.replace("tool:2", "tool:3")})
    plan = plan_of(tpl_repo, from_ref="HEAD~1")
    assert pipelines(plan) == {
        "images": "skip",
        "edges-1": "skip",
        "edges-2": "skip",
        "montage-a": "update",
        "thumbs-a": "update",
    }
    montage = next(p for p in plan.pipelines if p.pipeline.name == "montage-a")
    assert [(r.path, r.why) for r in montage.reasons] == [
        ("lib/images.libsonnet", "evaluated spec changed")
    ]
    assert [i.action for i in plan.images] == ["skip"]
    # Every instance reading the file was evaluated again (the base's ones too).
    assert sorted(set(evaluations)) == [
        "templates/edges.jsonnet (suffix=1, src=images)",
        "templates/edges.jsonnet (suffix=2, src=edges-1)",
        "templates/pair.jsonnet (suffix=a, src=raw)",
    ]


def test_an_image_change_updates_the_templated_pipelines_that_run_it(
    tpl_repo: Path, evaluations: list[str]
) -> None:
    plan_of(tpl_repo, everything=True)
    evaluations.clear()
    commit(tpl_repo, "code", {"edges/edges.py": "print('edges v2')\n"})
    plan = plan_of(tpl_repo, from_ref="HEAD~1")
    assert pipelines(plan) == {
        "images": "update",
        "edges-1": "update",
        "edges-2": "update",
        "montage-a": "skip",
        "thumbs-a": "skip",
    }
    assert evaluations == []  # the specs came from the cache


def test_changing_one_instance_args_evaluates_only_that_instance(
    tpl_repo: Path, evaluations: list[str]
) -> None:
    plan_of(tpl_repo, everything=True)
    evaluations.clear()
    commit(tpl_repo, "new source", {"pachhook.toml": CONFIG.replace('"raw" }', '"images" }')})
    plan = plan_of(tpl_repo, from_ref="HEAD~1")
    assert evaluations == ["templates/pair.jsonnet (suffix=a, src=images)"]
    montage = next(p for p in plan.pipelines if p.pipeline.name == "montage-a")
    assert montage.pipeline.inputs == (("default", "images"),)
    # A configuration change is decided by state (the cluster's spec digests): the run
    # against the cluster updates that instance only (test_run_updates_...).


def test_an_unrelated_change_evaluates_nothing_and_loads_no_jsonnet(tpl_repo: Path) -> None:
    assert pachhook(tpl_repo, "plan", "--all").returncode == 0  # evaluated, traces kept
    commit(tpl_repo, "docs", {"docs/guide.md": "# guide, longer\n"})
    proc = python(
        tpl_repo, "-X", "importtime", "-m", "pachhook", "plan", "--from", "HEAD~1", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["evaluated"] is False
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert not {m for m in imported if "jsonnet" in m or m.endswith(".templates")}
    assert "pachhook.pachyderm.template_cache" in imported  # the traces were consulted


def test_a_change_to_an_imported_file_is_relevant_to_the_first_look(tpl_repo: Path) -> None:
    assert pachhook(tpl_repo, "plan", "--all").returncode == 0
    commit(tpl_repo, "cmd", {"lib/cmd.txt": "python3 /run.py --fast"})
    proc = pachhook(tpl_repo, "plan", "--from", "HEAD~1", "--json")
    data = json.loads(proc.stdout)
    assert data["evaluated"] is True
    assert {p["name"] for p in data["pipelines"] if p["action"] != "skip"} == {
        "edges-1",
        "edges-2",
        "montage-a",
        "thumbs-a",
    }


def test_the_first_look_checks_traces_it_has_not_seen_hold_at_the_base(tpl_repo: Path) -> None:
    repo = Repo.discover(tpl_repo)
    load_workspace(WorkingTreeSource(repo), {})  # traces known, but at no commit
    commit(tpl_repo, "docs", {"docs/guide.md": "# more\n"})
    assert plan_of(tpl_repo, from_ref="HEAD~1").evaluated is False  # checked with git ls-tree
    index = json.loads((repo.state_dir / "templates/index.json").read_text())
    base = git(tpl_repo, "rev-parse", "HEAD~1")
    assert all(base in variants[0]["commits"] for variants in index.values())
    # Without any trace (a fresh clone, say) only an evaluation can tell.
    (repo.state_dir / "templates/index.json").unlink()
    commit(tpl_repo, "docs", {"docs/guide.md": "# more still\n"})
    assert plan_of(tpl_repo, from_ref="HEAD~1").evaluated is True


def test_a_reverted_change_is_found_in_the_cache(tpl_repo: Path, evaluations: list[str]) -> None:
    source = lambda: WorkingTreeSource(Repo.discover(tpl_repo))  # noqa: E731
    load_workspace(source(), {})
    write(tpl_repo, {"lib/cmd.txt": "python3 /other.py"})
    assert {
        p.name: p.document["transform"]["cmd"][1] for p in load_workspace(source(), {}).pipelines
    }["montage-a"] == "/other.py"
    write(tpl_repo, {"lib/cmd.txt": "python3 /run.py"})
    evaluations.clear()
    again = load_workspace(source(), {})
    assert evaluations == []
    assert {p.name: p.document["transform"]["cmd"][1] for p in again.pipelines}[
        "montage-a"
    ] == "/run.py"


# -- errors: one line, file:line:col, exit 2 ----------------------------------------------------


def test_a_syntax_error_names_file_line_and_column(tpl_repo: Path) -> None:
    commit(
        tpl_repo,
        "typo",
        {"templates/edges.jsonnet": EDGES.replace("description:", ",, description:")},
    )
    assert failure(tpl_repo, "plan", "--all") == (
        'templates/edges.jsonnet:6:5: Unexpected: "," while parsing field definition; fix the template'
    )


def test_a_syntax_error_in_a_library_names_the_library(tpl_repo: Path) -> None:
    commit(tpl_repo, "typo", {"lib/images.libsonnet": "{\n  tool: ,\n}\n"})
    message = failure(tpl_repo, "plan", "--all")
    assert message.startswith("lib/images.libsonnet:2:9: ")
    assert "(evaluating templates/edges.jsonnet (suffix=1, src=images))" in message


def test_a_missing_argument_points_at_the_parameter(tpl_repo: Path) -> None:
    commit(tpl_repo, "args", {"pachhook.toml": CONFIG.replace('suffix = "1", ', "")})
    assert failure(tpl_repo, "plan", "--all") == (
        "templates/edges.jsonnet:4:10: the template's function needs argument 'suffix', which "
        'args do not give; add suffix = "..." to the args of templates/edges.jsonnet (src=images)'
    )


def test_an_argument_the_function_lacks(tpl_repo: Path) -> None:
    commit(
        tpl_repo,
        "args",
        {"pachhook.toml": CONFIG.replace('src = "raw"', 'src = "raw", size = "9"')},
    )
    assert failure(tpl_repo, "plan", "--all").startswith(
        "templates/pair.jsonnet:2:1: the template's function has no parameter 'size'; remove size"
    )


def test_a_runtime_error_names_where_it_was_raised(tpl_repo: Path) -> None:
    guarded = EDGES.replace(
        "function(suffix, src)\n",
        'function(suffix, src)\n  assert src != "raw" : "edges never read raw data";\n',
    )
    commit(
        tpl_repo,
        "guard",
        {
            "templates/edges.jsonnet": guarded,
            "pachhook.toml": CONFIG.replace('"images" }', '"raw" }'),
        },
    )
    assert failure(tpl_repo, "plan", "--all") == (
        "templates/edges.jsonnet:5:3: edges never read raw data; fix the template or its args"
    )


@pytest.mark.parametrize(
    "target, reason",
    [
        (
            "../../outside.libsonnet",
            "cannot import '../../outside.libsonnet': it is outside the repository; import files of the repository only",
        ),
        ("/etc/hostname", "cannot import '/etc/hostname': absolute paths are refused"),
        (
            "https://example.com/x.libsonnet",
            "cannot import 'https://example.com/x.libsonnet': imports from URLs are not supported",
        ),
        (
            "../lib/nope.libsonnet",
            "cannot import '../lib/nope.libsonnet': lib/nope.libsonnet does not exist",
        ),
    ],
)
def test_an_import_outside_the_repository_is_refused(
    tpl_repo: Path, target: str, reason: str
) -> None:
    (tpl_repo.parent / "outside.libsonnet").write_text('{ secret: "x" }\n')
    text = EDGES.replace(
        '"../lib/common.libsonnet";',
        f'"../lib/common.libsonnet";\nlocal other = import "{target}";',
    )
    text = text.replace("description:", "other: other, description:")
    commit(tpl_repo, "escape", {"templates/edges.jsonnet": text})
    assert failure(tpl_repo, "plan", "--all").startswith(f"templates/edges.jsonnet:4:15: {reason}")


def test_a_library_cannot_read_outside_either(tpl_repo: Path) -> None:
    (tpl_repo.parent / "secret.txt").write_text("s3cr3t\n")
    commit(
        tpl_repo,
        "escape",
        {
            "lib/common.libsonnet": COMMON.replace(
                'importstr "cmd.txt"', 'importstr "../../secret.txt"'
            )
        },
    )
    message = failure(tpl_repo, "plan", "--all")
    assert message.startswith(
        "lib/common.libsonnet:5:47: cannot import '../../secret.txt': it is outside"
    )
    assert "s3cr3t" not in message


@pytest.mark.parametrize("link_dir", [False, True])
def test_a_symlink_leading_outside_is_refused(tpl_repo: Path, link_dir: bool) -> None:
    outside = tpl_repo.parent / "outside"
    outside.mkdir()
    (outside / "x.libsonnet").write_text("{}\n")
    if link_dir:
        (tpl_repo / "vendor").symlink_to(outside)
        target, culprit = "../vendor/x.libsonnet", "vendor"
    else:
        (tpl_repo / "lib/evil.libsonnet").symlink_to(outside / "x.libsonnet")
        target, culprit = "../lib/evil.libsonnet", "lib/evil.libsonnet"
    commit(
        tpl_repo, "link", {"templates/pair.jsonnet": f'function(suffix, src) import "{target}"\n'}
    )
    message = failure(tpl_repo, "plan", "--all")
    assert message.startswith(
        f"templates/pair.jsonnet:1:23: cannot import '{target}': {culprit} is a symlink to {outside}"
    )
    assert "outside the repository" in message


@pytest.mark.parametrize(
    "body, what",
    [
        ('"edges"', "a string"),
        ("[]", "an empty array"),
        ('[{ pipeline: { name: "x" }, transform: {} }, 3]', "an array whose element 1 is a number"),
    ],
)
def test_a_result_that_is_no_spec(tpl_repo: Path, body: str, what: str) -> None:
    commit(tpl_repo, "odd", {"templates/pair.jsonnet": f"function(suffix, src) {body}\n"})
    assert failure(tpl_repo, "plan", "--all") == (
        f"templates/pair.jsonnet (suffix=a, src=raw): the template returned {what}; "
        "return a pipeline spec (an object) or an array of specs"
    )


def test_a_result_document_that_is_no_pipeline_spec(tpl_repo: Path) -> None:
    commit(
        tpl_repo,
        "odd",
        {
            "templates/pair.jsonnet": 'function(suffix, src) [{ pipeline: { name: "x" }, transform: {} }, { name: "y" }]\n'
        },
    )
    assert failure(tpl_repo, "plan", "--all").startswith(
        "templates/pair.jsonnet (suffix=a, src=raw), spec 2 of 2: the template returned something "
        "that is not a pipeline spec"
    )


def test_a_templated_pipeline_named_like_another_names_both(tpl_repo: Path) -> None:
    commit(
        tpl_repo, "clash", {"pipelines/clash.json": spec("edges-2", "docker.io/acme/x:1", "raw")}
    )
    proc = pachhook(tpl_repo, "plan", "--all")
    assert proc.returncode == 0, proc.stderr
    note = (
        "note: pipeline default/edges-2 is defined 2 times (pipelines/clash.json:1, "
        "templates/edges.jsonnet (suffix=2, src=edges-1)); it is left out of the plan: drop one "
        'of its [[pipelines.template]] instances, or exclude ["pipelines/clash.json"] in '
        "[pipelines] exclude"
    )
    assert note in proc.stdout.splitlines()
    assert "default/edges-2 " not in proc.stdout.replace(note, "")


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            'file = "templates/edges.jsonnet"\nargs = { suffix = 3 }',
            "pachhook.toml:23: pipelines.template[3].args: got {'suffix': 3}; expected a table of strings",
        ),
        (
            'file = "../elsewhere/x.jsonnet"',
            "pachhook.toml:22: pipelines.template[3].file: '../elsewhere/x.jsonnet' is outside the repository",
        ),
        (
            'file = "templates/none.jsonnet"',
            "pachhook.toml:22: pipelines.template: 'templates/none.jsonnet' does not exist in ",
        ),
        ('args = { suffix = "3" }', "pachhook.toml:21: pipelines.template[3]: has no file"),
    ],
)
def test_a_bad_template_entry_in_the_configuration(
    tpl_repo: Path, entry: str, message: str
) -> None:
    commit(tpl_repo, "config", {"pachhook.toml": CONFIG + f"\n[[pipelines.template]]\n{entry}\n"})
    assert failure(tpl_repo, "plan", "--all").startswith(message)


def test_refusals_are_worded_alike_however_many_one_evaluator_makes(tpl_repo: Path) -> None:
    # The binding hands the importer's error text to Go without its terminating NUL, so
    # stray bytes follow it, now and then not UTF-8 (then the binding raises
    # UnicodeDecodeError): every refusal must still read the same, and the worker live on.
    texts: dict[str, bytes] = {}
    with Evaluator(texts.get, lambda path: False, timeout=10, memory_mb=256) as evaluator:
        for n in range(150):
            texts["t.jsonnet"] = f'function() import "../../x{n}.libsonnet"'.encode()
            with pytest.raises(TemplateError) as info:
                evaluator.evaluate(Job("t.jsonnet", (), "t.jsonnet"))
            assert str(info.value) == (
                f"t.jsonnet:1:12: cannot import '../../x{n}.libsonnet': it is outside the "
                "repository; import files of the repository only"
            )
        texts["t.jsonnet"] = b'{ pipeline: { name: "ok" }, transform: {} }'
        assert evaluator.evaluate(Job("t.jsonnet", (), "t.jsonnet")).value["pipeline"] == {
            "name": "ok"
        }


def test_go_jsonnet_is_never_loaded_in_pachhook_itself(tpl_repo: Path) -> None:
    plan_of(tpl_repo, everything=True)
    assert "_gojsonnet" not in sys.modules


# -- bounds ------------------------------------------------------------------------------------


def _children() -> set[int]:
    me, found = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.add(int(entry.name))
    return found


def limited(timeout: float, memory_mb: int) -> str:
    return CONFIG.replace(
        "[pipelines]\n",
        f"[pipelines]\ntemplate_timeout = {timeout}\ntemplate_memory_mb = {memory_mb}\n",
    )


def test_a_template_that_recurses_forever_is_stopped_within_the_bound(tpl_repo: Path) -> None:
    # tailstrict calls escape go-jsonnet's stack limit: left alone, Go's stack grows to
    # 1 GB and the process aborts. In the worker, the memory limit stops it.
    commit(
        tpl_repo,
        "forever",
        {
            "templates/pair.jsonnet": "function(suffix, src)\n  local f(x) = f(x + 1) tailstrict;\n  f(0)\n",
            "pachhook.toml": limited(5, 256),
        },
    )
    before = _children()
    started = time.monotonic()
    message = failure(tpl_repo, "plan", "--all")
    assert time.monotonic() - started < 5 + 3
    assert message.startswith("templates/pair.jsonnet (suffix=a, src=raw): evaluation was stopped")
    assert _children() == before


def test_a_template_that_loops_without_growing_is_stopped_by_the_clock(tpl_repo: Path) -> None:
    commit(
        tpl_repo,
        "slow",
        {
            "templates/pair.jsonnet": (
                "local f(n) = if n == 0 then {} else { a: f(n - 1), b: f(n - 1) };\n"
                "function(suffix, src) f(60)\n"
            ),
            "pachhook.toml": limited(2, 512),
        },
    )
    started = time.monotonic()
    message = failure(tpl_repo, "plan", "--all")
    assert 2 <= time.monotonic() - started < 2 + 3
    assert message == (
        "templates/pair.jsonnet (suffix=a, src=raw): evaluation was stopped after 2 s; the "
        "template may recurse or loop forever: fix it, or raise [pipelines] template_timeout"
    )


def test_a_memory_bomb_is_stopped_at_the_limit(tpl_repo: Path) -> None:
    commit(
        tpl_repo,
        "bomb",
        {
            "templates/pair.jsonnet": (
                "function(suffix, src)\n"
                "  local f(s, n) = if n == 0 then s else f(s + s, n - 1);\n"
                '  { pipeline: { name: f("x", 40) }, transform: {} }\n'
            ),
            "pachhook.toml": limited(20, 256),
        },
    )
    started = time.monotonic()
    message = failure(tpl_repo, "plan", "--all")
    assert time.monotonic() - started < 12
    assert message.startswith(
        "templates/pair.jsonnet (suffix=a, src=raw): evaluation was stopped at the 256 MB memory limit"
    )


def test_deep_recursion_is_a_located_error(tpl_repo: Path) -> None:
    commit(
        tpl_repo,
        "deep",
        {"templates/pair.jsonnet": "function(suffix, src)\n  local f(x) = f(x + 1) + 1;\n  f(0)\n"},
    )
    assert failure(tpl_repo, "plan", "--all").startswith(
        "templates/pair.jsonnet:2:16: recursion deeper than 500 calls"
    )


# -- init ------------------------------------------------------------------------------------------


def test_init_writes_commented_entries_for_what_looks_like_templates(tpl_repo: Path) -> None:
    (tpl_repo / "pachhook.toml").unlink()
    write(tpl_repo, {"dashboards/cpu.jsonnet": '{ title: "CPU", panels: [] }\n'})
    commit(tpl_repo, "no config")
    proc = pachhook(tpl_repo, "init")
    assert proc.returncode == 0, proc.stderr
    text = (tpl_repo / "pachhook.toml").read_text()
    assert (
        '# [[pipelines.template]]\n# file = "templates/edges.jsonnet"\n'
        '# args = { suffix = "CHANGE-ME", src = "CHANGE-ME" }\n'
    ) in text
    assert '# file = "templates/pair.jsonnet"' in text
    assert "dashboards/cpu.jsonnet" not in text
    assert (
        "template templates/edges.jsonnet: commented out in the config, its args to be set (suffix, src)"
        in proc.stdout
    )
    # Uncommented, with its args given, the entry plans.
    entry = '[[pipelines.template]]\nfile = "templates/edges.jsonnet"\nargs = { suffix = "9", src = "raw" }\n'
    commit(tpl_repo, "config", {"pachhook.toml": text + "\n" + entry})
    proc = pachhook(tpl_repo, "plan", "--all", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "edges-9" in {p["name"] for p in json.loads(proc.stdout)["pipelines"]}


# -- the example ------------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_the_templated_housing_prices_example(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "housing")
    shutil.copytree(EXAMPLES / "housing-prices", root, dirs_exist_ok=True)
    (root / "regression.json").unlink()
    shutil.copytree(EXAMPLES / "housing-prices-templated", root, dirs_exist_ok=True)
    commit(root, "example")
    proc = pachhook(root, "plan", "--all", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (image,) = data["images"]
    built = f"docker.io/acme/housing-prices:{image['tag']}"
    assert [(p["name"], p["origin"], p["image"]) for p in data["pipelines"]] == [
        ("regression", "templates/regression.jsonnet (dataset=housing_data)", built),
        ("regression-2023", "templates/regression.jsonnet [regression-2023]", built),
    ]
    library = (root / "lib/housing.libsonnet").read_text()
    commit(
        root,
        "verbose",
        {"lib/housing.libsonnet": library.replace('"/pfs/out/"]', '"/pfs/out/", "-v"]')},
    )
    data = json.loads(pachhook(root, "plan", "--from", "HEAD~1", "--json").stdout)
    assert {p["name"]: p["action"] for p in data["pipelines"]} == {
        "regression": "update",
        "regression-2023": "update",
    }


# -- run, against the pachd double (or the cluster under test) -----------------------------------

BRANCH = """\
local stage = import "stage.libsonnet";
function(name, src)
  {
    pipeline: { name: name },
    transform: { image: stage.image, cmd: ["sh", "/app/main.sh", name] },
    input: { pfs: { repo: src, glob: "/*" } },
  }
"""


@pytest.fixture
def templated(spec_repo: E2ERepo) -> Iterator[E2ERepo]:
    """The deploy-only repository (four pipelines from JSON and YAML) with two more
    pipelines from one template, downstream of `features` and of each other."""
    repo = spec_repo
    config = (repo.root / "pachhook.toml").read_text()
    config += (
        '\n[[pipelines.template]]\nfile = "templates/branch.jsonnet"\n'
        'args = { name = "extra-1", src = "features" }\n'
        '\n[[pipelines.template]]\nfile = "templates/branch.jsonnet"\n'
        'args = { name = "extra-2", src = "extra-1" }\n'
    )
    repo.change(
        {
            "pachhook.toml": config,
            "templates/branch.jsonnet": BRANCH,
            "templates/stage.libsonnet": '{ image: "docker.io/library/busybox:1.36" }\n',
        },
        "templates",
    )
    yield repo


def test_run_applies_templated_specs_in_one_transaction_with_the_others(templated: E2ERepo) -> None:
    repo = templated
    proc = repo.ok("run", "--all")
    assert "templates/branch.jsonnet (name=extra-1, src=features)" in proc.stdout
    expected = {"clean": 1, "features": 1, "stats": 1, "report": 1, "extra-1": 1, "extra-2": 1}
    assert repo.versions() == expected
    if isinstance(repo.pachd, DoubleTarget):
        (applied,) = repo.pachd.double.applied_transactions()
        order = [r.create_pipeline.pipeline.name for r in applied.requests]
        assert sorted(order) == sorted(expected)
        assert order.index("features") < order.index("extra-1") < order.index("extra-2")
        assert order.index("clean") < order.index("features")
    assert repo.last_run()["transaction"]
    repo.ok("run", "--all")  # decided by state: nothing to do
    assert repo.versions() == expected


def test_run_updates_only_the_instance_whose_args_changed(templated: E2ERepo) -> None:
    repo = templated
    repo.ok("run", "--all")
    config = (repo.root / "pachhook.toml").read_text()
    repo.change({"pachhook.toml": config.replace('src = "extra-1"', 'src = "stats"')}, "args")
    repo.ok("run", "--from", "HEAD~1")
    assert repo.versions() == {
        "clean": 1,
        "features": 1,
        "stats": 1,
        "report": 1,
        "extra-1": 1,
        "extra-2": 2,
    }


def test_run_after_a_library_change_updates_the_specs_it_changed(templated: E2ERepo) -> None:
    repo = templated
    repo.ok("run", "--all")
    repo.change(
        {"templates/stage.libsonnet": '{ image: "docker.io/library/busybox:1.37" }\n'}, "lib"
    )
    proc = repo.ok("run", "--from", "HEAD~1")
    assert "templates/stage.libsonnet: evaluated spec changed" in proc.stdout
    assert repo.versions() == {
        "clean": 1,
        "features": 1,
        "stats": 1,
        "report": 1,
        "extra-1": 2,
        "extra-2": 2,
    }
    assert repo.images()["extra-1"] == "docker.io/library/busybox:1.37"
    # A change that leaves every evaluated spec as it was updates nothing.
    repo.change(
        {
            "templates/stage.libsonnet": '// the stage image\n{ image: "docker.io/library/busybox:1.37" }\n'
        },
        "comment",
    )
    repo.ok("run", "--from", "HEAD~1")
    assert repo.versions()["extra-1"] == 2


def test_run_with_a_broken_template_changes_nothing(templated: E2ERepo) -> None:
    repo = templated
    repo.ok("run", "--all")
    repo.change({"templates/branch.jsonnet": BRANCH.replace("name: name }", "name: nam }")}, "typo")
    proc = repo.run("run", "--all")
    assert proc.returncode == 2
    assert "templates/branch.jsonnet:4:23: Unknown variable: nam; fix the template" in proc.stderr
    assert repo.versions()["extra-1"] == 1


def test_the_watcher_runs_when_a_file_a_template_imports_is_saved(templated: E2ERepo) -> None:
    repo = templated
    repo.ok("run", "--all")
    watcher = subprocess.Popen(
        [PACHHOOK, "watch", "--once"],
        cwd=repo.root,
        env=repo.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        lines = []
        for line in watcher.stdout:
            lines.append(line)
            if " watching " in line:
                break
        assert "6 pipeline(s)" in lines[-1], lines  # the templated ones counted
        # Not a template, not a spec, in no image: only the templates' traces name it.
        (repo.root / "templates/stage.libsonnet").write_text(
            '{ image: "docker.io/library/busybox:1.37" }\n'
        )
        output, _ = watcher.communicate(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, "".join(lines) + output
    assert "change: templates/stage.libsonnet" in output
    assert repo.versions() == {
        "clean": 1,
        "features": 1,
        "stats": 1,
        "report": 1,
        "extra-1": 2,
        "extra-2": 2,
    }


STAGES = """\
// The two stages of pipelines/stages.yaml, as one template.
function(app, tools)
  local stage(name, image) = {
    pipeline: { name: name },
    transform: { image: image, cmd: ["sh", "/app/main.sh"] },
    input: { pfs: { repo: "clean", glob: "/*" } },
  };
  [stage("features", app), stage("stats", tools)]
"""


@pytest.mark.docker
def test_run_builds_and_points_templated_specs_at_the_built_tags(repo: E2ERepo) -> None:
    config = (repo.root / "pachhook.toml").read_text().replace(', "pipelines/*.yaml"', "") + (
        '\n[[pipelines.template]]\nfile = "templates/stages.jsonnet"\n'
        f'args = {{ app = "{repo.app}:dev", tools = "{repo.tools}:dev" }}\n'
    )
    (repo.root / "pipelines/stages.yaml").unlink()
    repo.change({"pachhook.toml": config, "templates/stages.jsonnet": STAGES}, "stages")
    repo.ok("run", "--all")
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}
    built = {i["name"]: i["reference"] for i in repo.last_run()["images"]}
    images = repo.images()
    assert images["features"] == images["clean"] == built[repo.app]
    assert images["stats"] == images["report"] == built[repo.tools]
    if isinstance(repo.pachd, DoubleTarget):
        (applied,) = repo.pachd.double.applied_transactions()
        order = [r.create_pipeline.pipeline.name for r in applied.requests]
        assert order == ["clean", "features", "stats", "report"]

    repo.change({"tools/tool.sh": "echo tools v2\n"}, "tools v2")
    repo.ok("run", "--from", "HEAD~1")
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 2, "report": 2}
    assert repo.images()["stats"] != images["stats"]
