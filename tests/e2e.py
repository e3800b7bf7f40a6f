"""The end-to-end repository: a real git repository with two images and four pipelines in
a DAG, in JSON and in a multi-document YAML file, run through the real `pachhook` command:

    raw -> clean (app) -> features (app) -> report (tools)
                       -> stats (tools)  ->

Shared by tests/test_run_e2e.py, tests/test_hooks.py and tests/test_watch.py; the
`e2e_repo` fixture (tests/conftest.py) makes one against the test's cluster and engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.helpers import GIT_ENV, commit, init_repo, write

if TYPE_CHECKING:
    from tests.cluster import Target

PACHHOOK = str(Path(sys.executable).with_name("pachhook"))


@dataclass
class Repo:
    root: Path
    env: dict[str, str]
    pachd: Target
    project: str
    app: str  # image names, as in pachhook.toml
    tools: str
    seconds: float = 0.0  # wall time of the last run

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """The real command, in a process of its own; also timed."""
        started = time.monotonic()
        proc = subprocess.run(
            [PACHHOOK, *args],
            cwd=self.root,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.seconds = time.monotonic() - started
        return proc

    def ok(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        proc = self.run(*args, **env)
        assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    def versions(self) -> dict[str, int]:
        return {name: p.version for name, p in self.pachd.pipelines(self.project).items()}

    def images(self) -> dict[str, str]:
        return {name: p.image for name, p in self.pachd.pipelines(self.project).items()}

    def last_run(self) -> dict[str, Any]:
        lines = (self.root / ".git" / "pachhook" / "runs.jsonl").read_text().splitlines()
        return json.loads(lines[-1])

    def change(self, files: dict[str, Any], message: str = "change") -> None:
        commit(self.root, message, files)


def pipeline_specs(app: str, tools: str) -> dict[str, Any]:
    def spec(name: str, image: str, *inputs: str) -> dict[str, Any]:
        pfs = [{"pfs": {"repo": repo, "glob": "/*"}} for repo in inputs]
        return {
            "pipeline": {"name": name},
            "transform": {"image": image, "cmd": ["sh", "/app/main.sh"]},
            "input": pfs[0] if len(pfs) == 1 else {"cross": pfs},
        }

    stages = "\n---\n".join(
        json.dumps(doc, indent=2)
        for doc in (spec("features", app, "clean"), spec("stats", tools, "clean"))
    )
    return {
        "pipelines/clean.json": spec("clean", app, "raw"),
        # In file order `report` comes before the pipelines it reads.
        "pipelines/report.json": spec("report", tools, "features", "stats"),
        "pipelines/stages.yaml": "# two stages in one file\n" + stages + "\n",
    }


def make_repo(
    path: Path, pachd: Target, project: str, app: str, tools: str, base_image: str, docker: str
) -> Repo:
    root = init_repo(path)
    write(
        root,
        {
            "pachhook.toml": f"""
[pachyderm]
project = "{project}"

[[image]]
name = "{app}"
context = "app"

[[image]]
name = "{tools}"
context = "tools"

[pipelines]
include = ["pipelines/*.json", "pipelines/*.yaml"]
""",
            "app/Dockerfile": f"FROM {base_image}\nCOPY main.sh /app/main.sh\n",
            "app/main.sh": "echo clean v1\n",
            "tools/Dockerfile": f"FROM {base_image}\nCOPY tool.sh /app/main.sh\n",
            "tools/tool.sh": "echo tools v1\n",
            "README.md": "# data project\n",
            **pipeline_specs(app, tools),
        },
    )
    commit(root, "initial")
    home = path.parent / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # no pachctl or docker config of the machine's user
        "DOCKER_HOST": docker,
        "PACHYDERM_CLUSTER_URL": pachd.address,
        **GIT_ENV,
    }
    if pachd.token:
        env["PACHYDERM_TOKEN"] = pachd.token
    return Repo(root, env, pachd, project, app, tools)


def first_run(repo: Repo) -> None:
    repo.ok("run", "--all")
    assert repo.versions() == {"clean": 1, "features": 1, "stats": 1, "report": 1}
