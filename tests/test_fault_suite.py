"""The fault-and-fuzz suite: bounded in time, run by CI with the rest (`pytest -m faults`
runs it alone).

- kill -9 at each phase of a run (waiting for the lock, building, pushing, reading the
  cluster, inside the transaction, at its finish, after it was applied), then a rerun
  converges: every pipeline runs its current image, no transaction is left open, and a
  third run has nothing to do;
- two runs and a watcher at once all finish, taking turns, and the cluster ends right;
- a seeded fuzz of 1,000 Dockerfiles and 1,000 spec files through the planner, with zero
  tracebacks (and a sample through the real `pachhook plan`);
- a table of more than 100 bad inputs, each refused with exit 2 in one line that names
  the file, before anything is built, pushed or sent.

The planner is driven in-process where that keeps the assertion honest (the fuzz reads
files from memory through the same workspace loader and planner that `plan` uses), and the
bad-input table runs the real command line in-process against sockets that record anything
that reaches them.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pachhook import cli
from pachhook.config import load as load_config
from pachhook.errors import PachhookError
from pachhook.plan.load import check_specs
from pachhook.plan.planner import Plan, make_plan
from pachhook.plan.workspace import load_workspace
from pachhook.repo.selection import ChangeSet
from pachhook.repo.source import Entry, FolderFiles, Source, blob_id
from pachhook.run import ledger
from pachhook.run.lock import run_lock
from pachhook.run.report import interrupted_entries
from tests import e2e, fuzz, services
from tests.cluster import Target, double_of
from tests.faults import EngineProxy, engine_proxy, logging_registry
from tests.helpers import GIT_ENV, commit, git, init_repo, spec, write
from tests.pachd_double import PachdDouble

pytestmark = pytest.mark.faults

SEED = 20240502


# =============================================================================== the fuzz


class MemorySource(Source):
    """Repository files held in memory: what the fuzz feeds the workspace loader."""

    _attributes = False  # no .gitattributes: files are what a checkout holds

    def __init__(self, files: dict[str, bytes], links: dict[str, str]) -> None:
        self.files = {**files, **{path: target.encode() for path, target in links.items()}}
        self.links = set(links)
        self.commit = None
        self.label = "fuzz"

    @property
    def paths(self) -> list[str]:
        return sorted(self.files)

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)

    def entry(self, path: str) -> Entry:
        mode = "120000" if path in self.links else "100644"
        return Entry(mode, blob_id(self.files[path]))

    @property
    def revision(self) -> str:
        return "fuzz"

    def folder(self, folder: str) -> FolderFiles:
        raise AssertionError("planning builds nothing")


def plan_in_memory(files: dict[str, bytes], links: dict[str, str] | None = None) -> Plan:
    """What `plan --all` does after reading the source: configuration, workspace (images
    and specs), the plan, and the specs read as python-pachyderm will send them."""
    source = MemorySource(files, links or {})
    config = load_config(source.read, {})
    workspace = load_workspace(source, {}, config=config)
    plan = make_plan(workspace, ChangeSet(frozenset(), everything=True, target="fuzz"))
    check_specs(plan)
    return plan


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def _image_toml(target: str | None, build_args: dict[str, str]) -> str:
    lines = ["[[image]]", 'name = "127.0.0.1:1/fuzz/app"', 'context = "app"']
    if target is not None:
        lines.append(f"target = {json.dumps(target)}")
    if build_args:
        pairs = ", ".join(f"{k} = {json.dumps(v)}" for k, v in build_args.items())
        lines.append(f"build_args = {{ {pairs} }}")
    return "\n".join(lines) + '\n[pipelines]\ninclude = ["pipelines/*"]\n'


def _outcome(run: Callable[[], Plan | None]) -> str:
    """ "ok", "note: " and the plan's first note, or the one-line message of a
    PachhookError; anything else escapes."""
    try:
        plan = run()
    except PachhookError as exc:
        assert "\n" not in exc.message, exc.message
        assert exc.message.strip(), "an empty message"
        return exc.message
    return f"note: {plan.notes[0]}" if plan is not None and plan.notes else "ok"


def dockerfile_cases(count: int) -> Iterator[dict[str, bytes]]:
    rng = random.Random(SEED)
    for _ in range(count):
        case = fuzz.dockerfile(rng)
        files = {p: _bytes(v) for p, v in fuzz.CONTEXT_FILES.items()}
        files.update({p: _bytes(v) for p, v in case["files"].items()})
        files["pachhook.toml"] = _image_toml(case["target"], case["build_args"]).encode()
        files["pipelines/p.json"] = json.dumps(spec("p", "127.0.0.1:1/fuzz/app", "raw")).encode()
        yield files


def spec_cases(count: int) -> Iterator[dict[str, bytes]]:
    rng = random.Random(SEED + 1)
    for _ in range(count):
        path, data = fuzz.spec_file(rng)
        yield {
            "pachhook.toml": _image_toml(None, {}).encode(),
            "app/Dockerfile": b"FROM scratch\nCOPY main.sh /main.sh\n",
            "app/main.sh": b"echo\n",
            path: data,
        }


def test_a_thousand_dockerfiles_and_a_thousand_specs_plan_without_a_traceback() -> None:
    outcomes: dict[str, int] = {}
    failures: list[str] = []
    slowest = (0.0, "")
    for kind, cases in (("dockerfile", dockerfile_cases(1000)), ("spec", spec_cases(1000))):
        for number, files in enumerate(cases):
            started = time.monotonic()
            try:
                result = _outcome(lambda files=files: plan_in_memory(files, fuzz.LINKS))
            except Exception as exc:  # a traceback: the case is kept to reproduce it
                failures.append(f"{kind} #{number}: {type(exc).__name__}: {exc} :: {files!r:.600}")
                continue
            took = time.monotonic() - started
            slowest = max(slowest, (took, f"{kind} #{number}"))
            key = "ok" if result == "ok" else result.split(":", 1)[0]
            outcomes[f"{kind} {key}"] = outcomes.get(f"{kind} {key}", 0) + 1
    assert not failures, f"{len(failures)} case(s) raised:\n" + "\n".join(failures[:20])
    # The generators reach both sides: plans that succeed and input that is refused.
    assert outcomes.get("dockerfile ok", 0) > 20 and outcomes.get("spec ok", 0) > 20, outcomes
    assert sum(n for k, n in outcomes.items() if not k.endswith(" ok")) > 500, outcomes
    print(f"\nfuzz outcomes: {sorted(outcomes.items())}\nslowest case: {slowest}")


DEEP = "/".join(["a"] * 1500)
_SPEC = json.dumps(spec("p", "127.0.0.1:1/fuzz/app", "raw")).encode()


def _deep_case(dockerfile: str, **files: bytes) -> dict[str, bytes]:
    return {
        "pachhook.toml": _image_toml(None, {}).replace("pipelines/*", "pipelines/**").encode(),
        "app/main.sh": b"echo\n",
        "app/Dockerfile": dockerfile.encode(),
        "pipelines/p.json": _SPEC,
        **{path.replace("DEEP", DEEP): data for path, data in files.items()},
    }


@pytest.mark.parametrize(
    ("files", "verdict"),
    [
        (_deep_case(f"FROM scratch\nCOPY {DEEP}/f /\n", **{"app/DEEP/f": b"x"}), "ok"),
        (_deep_case(f"FROM scratch\nCOPY {DEEP}/* /\n", **{"app/DEEP/f": b"x"}), "ok"),
        (
            _deep_case(
                "FROM scratch\nCOPY . /\n",
                **{"app/DEEP/f": b"x", "app/.dockerignore": f"{DEEP}\n!{DEEP}/f\n".encode()},
            ),
            "ok",
        ),
        (_deep_case("FROM scratch\nCOPY . /\n", **{"app/.dockerignore": b"**/" * 1500}), "ok"),
        (_deep_case("FROM scratch\n" + "WORKDIR a\n" * 1500 + "COPY main.sh .\n"), "ok"),
        (
            _deep_case("FROM scratch\nCOPY " + "${X:-" * 1500 + "main.sh" + "}" * 1500 + " /\n"),
            "app/Dockerfile:2: variables nested more than 100 deep",
        ),
        (
            _deep_case(
                "FROM scratch\nENV V0=main.sh\n"
                + "".join(f"ENV V{i}=${{V{i - 1}}}\n" for i in range(1, 1500))
                + "COPY ${V1499} /\n"
            ),
            "ok",
        ),
        (
            _deep_case("FROM scratch\nCOPY main.sh /\n", **{"pipelines/DEEP/p.json": _SPEC}),
            # Defined twice: a note, and the pipeline is left out of the plan.
            "note: pipeline default/p is defined 2 times (pipelines/",
        ),
    ],
)
def test_paths_and_nesting_thousands_deep_never_crash(
    files: dict[str, bytes], verdict: str
) -> None:
    """1,500-folder paths (in the context, the ignore file, the specs), 1,500 nested
    variables: planned, or refused in one line, never a RecursionError."""
    result = _outcome(lambda: plan_in_memory(files))
    assert result == verdict or (verdict != "ok" and result.startswith(verdict)), result


@pytest.mark.parametrize(
    ("dockerfile", "builder", "says"),
    [
        ("FROM scratch\nCOPY missing.txt /\n", "buildkit", "does not exist in the build context"),
        ("FROM scratch\nCOPY missing.txt /\n", "classic", "does not exist in the build context"),
        ("FROM scratch\nCOPY nothing* /\n", "classic", "matches nothing in the build context"),
    ],
)
def test_a_source_the_source_lacks_is_a_broken_image_not_bad_input(
    dockerfile: str, builder: str, says: str
) -> None:
    """A file that is not in the source (a build output, an LFS object not fetched) makes
    its image one that cannot be built: reported and held, while the rest is planned."""
    files = {
        **{p: _bytes(v) for p, v in fuzz.CONTEXT_FILES.items()},
        "app/Dockerfile": dockerfile.encode(),
        "pachhook.toml": (
            _image_toml(None, {}).replace(
                "[pipelines]", f'[build]\nbuilder = "{builder}"\n[pipelines]'
            )
        ).encode(),
        "pipelines/p.json": _SPEC,
    }
    plan = plan_in_memory(files)
    (broken,) = plan.broken
    (reason,) = broken.reasons
    assert reason.why.startswith("app/Dockerfile:2: COPY") and says in reason.why, reason
    (held,) = plan.pipelines
    assert held.action == "held"


def test_a_sample_of_the_fuzz_through_the_real_plan_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every 40th case of each kind, written to a real repository's working tree and
    planned by `pachhook plan --working-tree --all` in this process: exit 0 or 2, never a
    traceback or an internal error."""
    root = init_repo(tmp_path / "repo")
    commit(root, "empty", {"README.md": "x\n"})
    monkeypatch.chdir(root)
    for name in list(os.environ):
        if name.startswith(("PACHYDERM_", "DOCKER_IMAGE_TAG", "PACHHOOK_")):
            monkeypatch.delenv(name)
    cases = [c for n, c in enumerate(dockerfile_cases(1000)) if n % 40 == 0]
    cases += [c for n, c in enumerate(spec_cases(1000)) if n % 40 == 0]
    for files in cases:
        for path in list(root.iterdir()):
            if path.name != ".git":
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        for path, data in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for path, link in fuzz.LINKS.items():
            (root / path).symlink_to(link)
        code = run_cli(["plan", "--working-tree", "--all"])
        out, err = capsys.readouterr()
        assert code in (0, 2), err
        assert "internal error" not in err and "Traceback" not in err, err
        if code == 2:
            assert len(err.strip().splitlines()) == 1, err


def run_cli(argv: Sequence[str]) -> int:
    try:
        cli.main(list(argv))
    except SystemExit as exit:
        return int(exit.code or 0)
    raise AssertionError("cli.main returned")


# ======================================================================= bad-input table


class Recorder:
    """A unix socket standing in for the Docker engine: it answers nothing and counts every
    connection. A run that reaches it has started to build."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.connections = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        self._server.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._server.close()


@dataclass
class BadInputWorld:
    template: Path  # a good repository, committed
    env: dict[str, str]
    engine: Recorder
    cluster: PachdDouble
    registry_log: Callable[[], str]
    image: str


GOOD_SPEC = "pipelines/clean.json"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadInputWorld]:
    folder = services.short_tempdir("bad-")
    engine = Recorder(str(folder / "engine.sock"))
    with PachdDouble(token="tok-" + uuid.uuid4().hex) as cluster, logging_registry() as trap:
        image = f"{trap.address}/acme/app"
        template = init_repo(tmp_path_factory.mktemp("bad") / "template")
        write(
            template,
            {
                "pachhook.toml": f'[[image]]\nname = "{image}"\ncontext = "app"\n\n'
                '[pipelines]\ninclude = ["pipelines/*.json", "pipelines/*.yaml"]\n',
                "app/Dockerfile": "FROM scratch\nCOPY main.sh /main.sh\n",
                "app/main.sh": "echo 1\n",
                GOOD_SPEC: spec("clean", image, "raw"),
                "pipelines/extra.yaml": "pipeline: {name: extra}\n"
                "transform: {image: busybox, cmd: [sh]}\n"
                "input: {pfs: {repo: raw, glob: /*}}\n",
            },
        )
        commit(template, "good")
        home = tmp_path_factory.mktemp("home")
        (home / ".docker").mkdir()
        env = {
            "HOME": str(home),
            "DOCKER_CONFIG": str(home / ".docker"),
            "DOCKER_HOST": f"unix://{engine.path}",
            "PACHYDERM_CLUSTER_URL": cluster.address,
            "PACHYDERM_TOKEN": cluster.token or "",
            **GIT_ENV,
        }
        try:
            yield BadInputWorld(template, env, engine, cluster, trap.text, image)
        finally:
            engine.close()
            services.remove_tree(folder)


def _case(files: dict[str, Any], names: str, *, env: dict[str, str] | None = None,
          args: Sequence[str] = (), says: str = "", commit_it: bool = True) -> Any:  # fmt: skip
    return pytest.param(files, names, env or {}, tuple(args), says, commit_it)


def _toml(extra: str = "", image: str = "{image}", context: str = "app") -> str:
    return (
        f'[[image]]\nname = "{image}"\ncontext = "{context}"\n{extra}\n'
        '[pipelines]\ninclude = ["pipelines/*.json", "pipelines/*.yaml"]\n'
    )


def _spec_with(**extra: Any) -> dict[str, Any]:
    return spec("clean", "{image}", "raw", **extra)


def _named(name: Any, project: Any = None) -> dict[str, Any]:
    doc = spec("x", "{image}", "raw")
    doc["pipeline"] = {"name": name, **({"project": {"name": project}} if project else {})}
    return doc


BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]\n" for n in range(1, 9)
)

CLASSIC = _toml('[build]\nbuilder = "classic"')

BAD_INPUTS = [
    # -- the configuration file
    _case({"pachhook.toml": "jobs = [\n"}, "pachhook.toml:1", says="not valid TOML"),
    _case({"pachhook.toml": "jobz = 1\n"}, "pachhook.toml:1", says="unknown key"),
    _case({"pachhook.toml": "jobs = 0\n"}, "pachhook.toml:1", says="jobs: got 0"),
    _case({"pachhook.toml": 'jobs = "2"\n'}, "pachhook.toml:1"),
    _case({"pachhook.toml": 'tag_policy = "latest"\n'}, "pachhook.toml:1"),
    _case(
        {"pachhook.toml": "a = " + "[" * 600 + "]" * 600 + "\n"},
        "pachhook.toml",
        says="nested too deeply",
    ),
    _case({"pachhook.toml": "image = 3\n"}, "pachhook.toml", says="[[image]]"),
    _case({"pachhook.toml": "[[image]]\ncontext = 'app'\n"}, "pachhook.toml", says="has no name"),
    _case({"pachhook.toml": _toml(image="{image}:latest")}, "pachhook.toml", says="tag or digest"),
    _case(
        {"pachhook.toml": _toml(context="../elsewhere")},
        "pachhook.toml",
        says="outside the repository",
    ),
    _case({"pachhook.toml": _toml(context="nope")}, "pachhook.toml", says="has no files"),
    _case(
        {"pachhook.toml": _toml('dockerfile = "Nope.Dockerfile"')},
        "pachhook.toml",
        says="does not exist",
    ),
    _case(
        {"pachhook.toml": _toml('dockerfile = "../../x"')},
        "pachhook.toml",
        says="outside the repository",
    ),
    _case(
        {"pachhook.toml": _toml("build_args = { N = 3 }")}, "pachhook.toml", says="table of strings"
    ),
    _case(
        {"pachhook.toml": _toml("build_args = { N = true }")},
        "pachhook.toml",
        says="table of strings",
    ),
    _case({"pachhook.toml": _toml("build_args = 5")}, "pachhook.toml"),
    _case({"pachhook.toml": _toml("target = 3")}, "pachhook.toml"),
    _case({"pachhook.toml": _toml('target = "nope"')}, "app/Dockerfile", says="no stage"),
    _case({"pachhook.toml": _toml("platform = []")}, "pachhook.toml"),
    _case({"pachhook.toml": _toml("colour = 1")}, "pachhook.toml", says="unknown key"),
    _case(
        {"pachhook.toml": _toml() + '[pachyderm]\naddress = "ftp://x:1"\n'},
        "pachhook.toml",
        says="unknown scheme",
    ),
    _case(
        {"pachhook.toml": _toml() + '[pachyderm]\naddress = "grpc://u:p@x:1"\n'},
        "pachhook.toml",
        says="login credentials",
    ),
    _case(
        {"pachhook.toml": _toml() + '[pachyderm]\naddress = "grpc://x:99999"\n'},
        "pachhook.toml",
        says="port",
    ),
    _case(
        {"pachhook.toml": _toml() + '[pachyderm]\naddress = "unix:///s"\n'},
        "pachhook.toml",
        says="unix socket",
    ),
    _case(
        {"pachhook.toml": _toml() + '[pachyderm]\naddress = "grpc://x:1/p"\n'},
        "pachhook.toml",
        says="a path",
    ),
    _case(
        {"pachhook.toml": _toml() + '[pachyderm]\naddress = "  "\n'}, "pachhook.toml", says="empty"
    ),
    _case(
        {"pachhook.toml": _toml() + '[pachyderm]\naddress = "grpcs://elsewhere.example:443"\n'},
        "pachhook.toml",
        says="chosen by the repository",
    ),
    _case(
        {"pachhook.toml": _toml() + '[pachyderm]\nproject = "a/b"\n'},
        "pachhook.toml",
        says="project 'a/b'",
    ),
    _case(
        {"pachhook.toml": _toml() + '[pachyderm]\nproject = "' + "p" * 60 + '"\n'},
        "pachhook.toml",
        says="more than pachd's",
    ),
    _case(
        {"pachhook.toml": _toml() + '[pachyderm]\nproject = "-p"\n'},
        "pachhook.toml",
        says="start with a letter",
    ),
    _case({"pachhook.toml": _toml() + "[pachyderm]\nreprocess = 1\n"}, "pachhook.toml"),
    _case({"pachhook.toml": _toml() + "[pipelines]\ninclude = 'x'\n"}, "pachhook.toml"),
    _case(
        {
            "pachhook.toml": _toml()
            .replace("pipelines/*.json", "nothing/*.json")
            .replace(', "pipelines/*.yaml"', "")
        },
        "pachhook.toml",
        says="matches no file",
    ),
    _case({"pachhook.toml": _toml() + "[hooks]\non_build_failure = 'ignore'\n"}, "pachhook.toml"),
    _case({"pachhook.toml": _toml() + "[hooks]\npost_push_timeout = -1\n"}, "pachhook.toml"),
    _case({"pachhook.toml": _toml() + "[hooks]\ndeploy_branches = 'main'\n"}, "pachhook.toml"),
    _case(
        {"pachhook.toml": _toml() + "[[image]]\nname = '{image}'\ncontext = 'app'\n"},
        "pachhook.toml",
        says="each image needs its own name",
    ),
    _case(
        {"pachhook.toml": None, "pyproject.toml": "[tool]\npachhook.jobz = 1\n"},
        "pyproject.toml",
        says="tool.pachhook.jobz",
    ),
    _case(
        {"pachhook.toml": None, "pyproject.toml": "[tool]\npachhook = { jobs = 0 }\n"},
        "pyproject.toml",
        says="tool.pachhook.jobs",
    ),
    _case(
        {"pachhook.toml": None, "pyproject.toml": "[tool.pachhook]\njobs = -3\n"}, "pyproject.toml"
    ),
    # -- image names: Docker's reference grammar
    *[
        _case({"pachhook.toml": _toml(image=name)}, "pachhook.toml", says="no image name")
        for name in (
            "Acme/App",
            "acme/app ",
            "acme//app",
            "-acme/app",
            "acme/app_",
            "acme/ap p",
            "127.0.0.1:5000/Acme/app",
            "acme/" + "a" * 300,
            "acme/app!",
            "",
        )  # fmt: skip
    ],
    # -- Dockerfiles
    _case({"app/Dockerfile": "FORM scratch\n"}, "app/Dockerfile:1", says="unknown instruction"),
    _case({"app/Dockerfile": "COPY main.sh /\n"}, "app/Dockerfile:1", says="before the first FROM"),
    _case({"app/Dockerfile": "# just a comment\n"}, "app/Dockerfile", says="no FROM"),
    _case(
        {"app/Dockerfile": "FROM scratch\nCOPY ../x /\n"},
        "app/Dockerfile:2",
        says="outside the build context",
    ),
    # The classic builder refuses what BuildKit builds (tests/test_buildkit.py builds them).
    *[
        _case({"app/Dockerfile": dockerfile, "pachhook.toml": CLASSIC}, "app/Dockerfile:2")
        for dockerfile in (
            "FROM scratch\nCOPY --chmod=755 main.sh /\n",
            "FROM scratch\nCOPY --link main.sh /\n",
        )
    ],
    _case({"app/Dockerfile": "FROM scratch\nCOPY --from main.sh /\n"}, "app/Dockerfile:2"),
    _case(
        {"app/Dockerfile": "FROM scratch\nCOPY --from=7 main.sh /\n"},
        "app/Dockerfile:2",
        says="no stage 7",
    ),
    _case({"app/Dockerfile": "FROM scratch\nCOPY main.sh\n"}, "app/Dockerfile:2"),
    _case(
        {"app/Dockerfile": "FROM scratch\nCOPY main.sh main.sh /x\n", "pachhook.toml": CLASSIC},
        "app/Dockerfile:2",
        says="end the destination with /",
    ),
    _case(
        {"app/Dockerfile": "FROM scratch\nCOPY http://x/y /\n"},
        "app/Dockerfile:2",
        says="can't be a URL",
    ),
    _case({"app/Dockerfile": "FROM scratch\nCOPY ${MISSING:?is required} /\n"}, "app/Dockerfile:2"),
    _case({"app/Dockerfile": "FROM scratch AS 1bad\n"}, "app/Dockerfile:1", says="stage name"),
    _case({"app/Dockerfile": "FROM a b\n"}, "app/Dockerfile:1"),
    _case({"app/Dockerfile": "FROM --bogus=1 scratch\n"}, "app/Dockerfile:1"),
    _case({"app/Dockerfile": "FROM scratch\nONBUILD FROM x\n"}, "app/Dockerfile:2"),
    _case({"app/Dockerfile": "FROM scratch\nARG\n"}, "app/Dockerfile:2"),
    _case({"app/Dockerfile": "FROM scratch\nENV\n"}, "app/Dockerfile:2"),
    _case(
        {"app/Dockerfile": "# escape=x\nFROM scratch\n"}, "app/Dockerfile:1", says="invalid escape"
    ),
    _case({"app/Dockerfile": "# escape=`\n# escape=`\nFROM scratch\n"}, "app/Dockerfile:2"),
    _case(
        {"app/Dockerfile": "FROM scratch\nCOPY <<EOF /x\nhello\nEOF\n"},
        "app/Dockerfile:2",
        says="heredoc",
    ),
    _case(
        {"app/Dockerfile": "FROM scratch\nRUN <<EOF\necho hi\nEOF\n"},
        "app/Dockerfile:2",
        says="heredoc",
    ),
    _case(
        {"app/Dockerfile": "FROM scratch\nRUN <<EOF\necho hi\n"},
        "app/Dockerfile:2",
        says="unterminated heredoc",
    ),
    _case(
        {"app/Dockerfile": b"FROM scratch\nCOPY main.sh /\x00\n"},
        "app/Dockerfile:2",
        says="NUL byte",
    ),
    _case({"app/Dockerfile": b"\x00\x00\x00"}, "app/Dockerfile:1", says="NUL byte"),
    _case(
        {"app/Dockerfile": 'FROM scratch\nCOPY ["main.sh", 3, "/"]\n'},
        "app/Dockerfile:2",
        says="other than strings",
    ),
    _case(
        {"app/Dockerfile": "FROM scratch\nCOPY main.sh /\n", "app/.dockerignore": "main.sh\n"},
        "app/Dockerfile:2",
        says="excluded by app/.dockerignore",
    ),
    # -- spec files
    _case({GOOD_SPEC: "{"}, f"{GOOD_SPEC}:1", says="not valid JSON"),
    _case(
        {GOOD_SPEC: '{"pipeline": {"name": "a"}, "pipeline": {"name": "b"}, "transform": {}}'},
        f"{GOOD_SPEC}:1",
        says="appears twice",
    ),
    _case(
        {GOOD_SPEC: '{"pipeline": {"name": "x"}, "transform": ' + "[" * 600 + "]" * 600 + "}"},
        GOOD_SPEC,
        says="nested more than",
    ),
    _case(
        {GOOD_SPEC: '{"pipeline": {"name": "x"}, "transform": ' + "[" * 3000 + "]" * 3000 + "}"},
        GOOD_SPEC,
        says="nested more than",
    ),
    _case({GOOD_SPEC: "[1, 2]"}, f"{GOOD_SPEC}:1", says="not a pipeline spec"),
    _case(
        {GOOD_SPEC: json.dumps({"pipeline": {"name": "x"}})},
        f"{GOOD_SPEC}:1",
        says="not a pipeline spec",
    ),
    _case(
        {GOOD_SPEC: "x" * (1 << 20) + "{}"},
        GOOD_SPEC,
        says="more than a pipeline spec file may hold",
    ),
    _case(
        {"pipelines/b.yaml": BOMB + "pipeline: {name: b}\ntransform: {image: x, cmd: [*a8]}\n"},
        "pipelines/b.yaml",
        says="expands to more than",
    ),
    _case(
        {"pipelines/b.yaml": "pipeline: &p {name: loop, me: *p}\ntransform: {image: x}\n"},
        "pipelines/b.yaml",
    ),
    _case(
        {"pipelines/b.yaml": "pipeline: {name: a}\npipeline: {name: b}\ntransform: {image: x}\n"},
        "pipelines/b.yaml:2",
        says="appears twice",
    ),
    _case({"pipelines/b.yaml": "pipeline: [\n"}, "pipelines/b.yaml", says="not valid YAML"),
    _case(
        {"pipelines/b.yaml": "pipeline: {name: t}\ntransform: {image: x, cmd: [!!binary aGk=]}\n"},
        "pipelines/b.yaml",
        says="bytes value",
    ),
    _case(
        {"pipelines/b.yaml": "pipeline: {name: t}\ntransform: {image: x, cmd: [2001-12-14]}\n"},
        "pipelines/b.yaml",
        says="date value",
    ),
    _case(
        {"pipelines/b.yaml": "pipeline: {name: t}\ntransform: {image: x}\n1: int\n"},
        "pipelines/b.yaml",
        says="not a string",
    ),
    _case(
        {
            "pipelines/b.yaml": "pipeline: {name: t}\ntransform: {image: x, cmd: [!!python/object:os.system x]}\n"
        },
        "pipelines/b.yaml",
    ),
    *[
        _case({GOOD_SPEC: _named(name)}, f"{GOOD_SPEC}:1", says="rename it")
        for name in ("a/b", "a b", "a.b", "é", "-x", "_x", "x" * 52, "")
    ],
    _case({GOOD_SPEC: _named("x" * 40, "p" * 20)}, f"{GOOD_SPEC}:1", says="Kubernetes name"),
    _case({GOOD_SPEC: _named("ok", "a/b")}, f"{GOOD_SPEC}:1", says="project 'a/b'"),
    _case({GOOD_SPEC: _named("ok", 7)}, f"{GOOD_SPEC}:1", says="must be a string"),
    _case({GOOD_SPEC: _named("ok", ["x"])}, f"{GOOD_SPEC}:1", says="must be a string"),
    *[
        _case({GOOD_SPEC: spec("clean", image, "raw")}, f"{GOOD_SPEC}:1", says="transform.image")
        for image in ("Busy/Box:1", "a b", "a//b", "x:" + "1" * 200, 5)
    ],
    _case(
        {GOOD_SPEC: _spec_with(frobnicate=True)},
        f"{GOOD_SPEC}:1",
        says="field 'frobnicate' is not known",
    ),
    _case(
        {GOOD_SPEC: _spec_with(parallelism_spec={"constant": "many"})},
        f"{GOOD_SPEC}:1",
        says="parallelism_spec.constant",
    ),
    _case({GOOD_SPEC: _spec_with(datum_tries="3x")}, f"{GOOD_SPEC}:1", says="datum_tries"),
    _case({GOOD_SPEC: _spec_with(transform={"image": "{image}", "cmd": "true"})}, f"{GOOD_SPEC}:1"),
    _case(
        {GOOD_SPEC: _spec_with(input={"pfs": {"repo": "raw", "glob": "/*", "lazzy": True}})},
        f"{GOOD_SPEC}:1",
        says="lazzy",
    ),
    _case({GOOD_SPEC: _spec_with(resource_requests={"memory": 5})}, f"{GOOD_SPEC}:1"),
    _case(
        {GOOD_SPEC: spec("clean", "{image}", "clean")},
        f"{GOOD_SPEC}:1",
        says="reads its own output repo",
    ),
    # -- the environment: where the operator's settings are wrong
    _case(
        {}, "PACHYDERM_CLUSTER_URL", env={"PACHYDERM_CLUSTER_URL": "ftp://x"}, says="unknown scheme"
    ),
    _case(
        {},
        "PACHYDERM_CLUSTER_URL",
        env={"PACHYDERM_CLUSTER_URL": "pachd.corp:30650"},
        says="plain grpc:// beyond this machine",
    ),
    _case({}, "PACHHOOK_RPC_TIMEOUT", env={"PACHHOOK_RPC_TIMEOUT": "soon"}),
    _case({}, "PACHHOOK_LOCK_TIMEOUT", env={"PACHHOOK_LOCK_TIMEOUT": "-1"}),
    _case({}, "PACHHOOK_ALLOW_CONFIG_ADDRESS", env={"PACHHOOK_ALLOW_CONFIG_ADDRESS": "perhaps"}),
    _case(
        {},
        "PACHHOOK_REGISTRY_AUTH_",
        env={"PACHHOOK_REGISTRY_AUTH_x": "1"},
        says="expected USERNAME:TOKEN",
    ),
    _case(
        {},
        "config.json",
        env={"DOCKER_CONFIG": "{docker_config}"},
        says="docker-credential-nowhere",
    ),
    # -- usage
    _case({}, "--to needs --from", args=["--to", "HEAD"]),
    _case({}, "git", args=["--from", "no-such-ref"], says="no commit named"),
    _case({}, "run", args=["--jobs", "0"], says="at least 1"),
    _case({}, "--bogus", args=["--bogus"], says="unrecognized arguments"),
    # -- a working tree in a merge conflict
    _case({}, "app/main.sh", args=["--working-tree"], says="in a merge conflict", commit_it=False),
]


def _render(value: Any, world: BadInputWorld) -> Any:
    if isinstance(value, str):
        return value.replace("{image}", world.image)
    if isinstance(value, dict | list):
        return json.loads(json.dumps(value).replace("{image}", world.image))
    return value


def test_the_table_has_more_than_a_hundred_cases_and_its_repository_is_good(
    world: BadInputWorld, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(BAD_INPUTS) > 100
    monkeypatch.chdir(world.template)
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    assert run_cli(["plan", "--all"]) == 0, capsys.readouterr()


@pytest.mark.parametrize(("files", "names", "env", "args", "says", "commit_it"), BAD_INPUTS)
def test_bad_input_is_refused_in_one_line_before_any_work(
    world: BadInputWorld,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    files: dict[str, Any],
    names: str,
    env: dict[str, str],
    args: tuple[str, ...],
    says: str,
    commit_it: bool,
) -> None:
    root = tmp_path / "repo"
    shutil.copytree(world.template, root, symlinks=True)
    if "in a merge conflict" in says:
        _conflict(root)
    elif files:
        for path in [p for p, v in files.items() if v is None]:
            (root / path).unlink()
        write(root, {p: _render(v, world) for p, v in files.items() if v is not None})
        if commit_it:
            commit(root, "bad")
    environment = {**world.env, **env}
    if environment.get("DOCKER_CONFIG") == "{docker_config}":
        docker_config = tmp_path / "docker"
        docker_config.mkdir()
        (docker_config / "config.json").write_text('{"credsStore": "nowhere"}')
        environment["DOCKER_CONFIG"] = str(docker_config)
        write(root, {"app/main.sh": "echo changed\n"})
        commit(root, "something to build")
    for name in list(os.environ):
        if name.startswith(("PACHYDERM_", "DOCKER", "PACHHOOK_", "PACH_", "PRE_COMMIT")):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(root)
    calls, connections, trapped = (
        world.cluster.call_count(),
        world.engine.connections,
        world.registry_log(),
    )
    code = run_cli(["run", "--all", *args] if "--from" not in args else ["run", *args])
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pachhook: ") and names in lines[0], lines[0]
    assert says in lines[0], lines[0]
    assert "internal error" not in err and "Traceback" not in err
    # Nothing built, pushed or sent; nothing recorded as a run.
    assert world.engine.connections == connections
    assert world.cluster.call_count() == calls
    assert world.registry_log() == trapped
    assert not [e for e in ledger.read(root / ".git" / "pachhook") if e.get("kind") == "run"]
    assert out == ""


def _conflict(root: Path) -> None:
    git(root, "checkout", "-q", "-b", "theirs")
    commit(root, "theirs", {"app/main.sh": "echo theirs\n"})
    git(root, "checkout", "-q", "main")
    commit(root, "ours", {"app/main.sh": "echo ours\n"})
    proc = subprocess.run(
        ["git", "merge", "-q", "theirs"], cwd=root, capture_output=True,
        env={**os.environ, **GIT_ENV},
    )  # fmt: skip
    assert proc.returncode != 0  # the conflict this case is about


# ============================================================= kill -9, then the rerun converges


class Lines:
    """A process the test started, its output read line by line as it comes."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            bufsize=1,
        )  # fmt: skip
        self.lines: list[str] = []
        self.events: dict[str, threading.Event] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            for text, event in list(self.events.items()):
                if text in line:
                    event.set()

    def when(self, text: str) -> threading.Event:
        event = self.events.setdefault(text, threading.Event())
        if any(text in line for line in self.lines):
            event.set()
        return event

    def wait(self, timeout: float = 300) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


def pachhook_lines(repo: e2e.Repo, *args: str, **env: str) -> Lines:
    return Lines([e2e.PACHHOOK, *args], repo.root, {**repo.env, **env})


@dataclass
class Converging:
    repo: e2e.Repo
    double: PachdDouble
    proxy: EngineProxy

    def assert_converged(self) -> None:
        """Every pipeline runs the image its spec and HEAD call for, nothing is left open,
        one more run has nothing to do, and no run is left looking interrupted."""
        assert self.double.open_transactions() == {}
        again = json.loads(self.repo.ok("run", "--all", "--json").stdout)
        planned = {p["name"]: p["image"] for p in again["plan"]["pipelines"]}
        assert self.repo.images() == planned
        run = again["run"]
        assert run["transaction"] is None, run
        assert {i["status"] for i in run["images"]} <= {"exists"}, run["images"]
        assert {p["status"] for p in run["pipelines"]} == {"unchanged"}, run["pipelines"]
        assert interrupted_entries(ledger.read(self.repo.root / ".git" / "pachhook")) == []


@pytest.fixture
def converging(
    e2e_repo: Callable[..., e2e.Repo],
    registry: services.Registry,
    pachd: Target,
    docker_engine: services.DockerEngine,
) -> Iterator[Converging]:
    double = double_of(pachd)
    repo = e2e_repo(registry.address)
    with engine_proxy(docker_engine.host) as proxy:
        # Every build and push goes through the proxy; a held call waits for the kill.
        repo.env.update(DOCKER_HOST=proxy.host, PACHHOOK_RPC_TIMEOUT="120")
        e2e.first_run(repo)
        yield Converging(repo, double, proxy)


def _hold_the_lock(
    world: Converging,
) -> tuple[Callable[[Lines], threading.Event], Callable[[], None]]:
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with run_lock(world.repo.root / ".git" / "pachhook", "another run"):
            entered.set()
            leave.wait(120)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert entered.wait(10)

    def release() -> None:
        leave.set()
        thread.join(10)

    return (lambda run: run.when("waiting for another run")), release


def _proxy_hold(pattern: str) -> Callable[[Converging], Any]:
    def arm(world: Converging) -> tuple[Callable[[Lines], threading.Event], Callable[[], None]]:
        rule = world.proxy.hold(pattern)
        return (lambda run: rule.seen), world.proxy.clear

    return arm


def _hang(method: str, after: bool = False) -> Callable[[Converging], Any]:
    def arm(world: Converging) -> tuple[Callable[[Lines], threading.Event], Callable[[], None]]:
        hang = world.double.hang(method, after=after)
        return (lambda run: hang.entered), world.double.unhang

    return arm


PHASES: list[tuple[str, Callable[[Converging], Any]]] = [
    ("waiting for the lock", _hold_the_lock),
    ("sending the context and building", _proxy_hold(r"POST /v[\d.]+/build")),
    ("pushing", _proxy_hold(r"/push")),
    ("reading the cluster", _hang("ListPipeline")),
    ("inside the transaction", _hang("CreatePipeline")),
    ("finishing the transaction", _hang("FinishTransaction")),
    ("after the transaction was applied", _hang("FinishTransaction", after=True)),
]


def test_kill_9_at_each_phase_then_a_rerun_converges(converging: Converging) -> None:
    repo = converging.repo
    for number, (phase, arm) in enumerate(PHASES):
        repo.change({"app/main.sh": f"echo clean v{number + 2}\n"}, f"change before {phase}")
        moment, disarm = arm(converging)
        run = pachhook_lines(repo, "run", "--all")
        try:
            assert moment(run).wait(120), f"{phase}: never reached\n{run.output}"
            os.kill(run.proc.pid, signal.SIGKILL)
            assert run.wait() == -signal.SIGKILL
        finally:
            disarm()
        rerun = repo.run("run", "--all")
        assert rerun.returncode == 0, f"{phase}: the rerun failed\n{rerun.stdout}\n{rerun.stderr}"
        assert "Traceback" not in rerun.stderr
        try:
            converging.assert_converged()
        except AssertionError as exc:
            raise AssertionError(f"after a kill while {phase}: {exc}") from None


# ===================================================== two runs and a watcher, all at once


def test_two_runs_and_a_watcher_at_once_take_turns_and_converge(converging: Converging) -> None:
    """A save that the watcher and two `run --working-tree --all` all act on: the same
    content, three runs taking turns on the lock, one state at the end."""
    repo = converging.repo
    state = repo.root / ".git" / "pachhook"
    before = len(ledger.read(state))
    watcher = pachhook_lines(repo, "watch", "--poll", "--debounce", "100")
    try:
        assert watcher.when("watching").wait(60), watcher.output
        write(repo.root, {"app/main.sh": "echo clean, all at once\n"})
        runs = [pachhook_lines(repo, "run", "--working-tree", "--all") for _ in range(2)]
        codes = [run.wait() for run in runs]
        assert codes == [0, 0], "\n\n".join(run.output for run in runs)
        assert watcher.when("run done in").wait(120), watcher.output
    finally:
        watcher.proc.send_signal(signal.SIGTERM)
        assert watcher.wait(60) == 0, watcher.output
    outputs = [run.output for run in runs] + [watcher.output]
    assert not [o for o in outputs if "Traceback" in o or "internal error" in o]
    # They took turns: a run that found the lock taken said for what it waited.
    assert any("waiting for " in o for o in outputs), outputs
    finished = [
        e for e in ledger.read(state)[before:]
        if e.get("kind") == "run" and e.get("state") in ("done", "failed")
    ]  # fmt: skip
    assert sorted(e["trigger"] for e in finished) == ["cli", "cli", "watch"], finished
    assert all(e["state"] == "done" for e in finished), finished
    applied = [e for e in finished if e["transaction"]]
    assert len(applied) == 1, applied  # the first applied the change; the others found it done
    repo.change({}, "commit what the three deployed")
    converging.assert_converged()
