"""Real git repositories in temporary folders, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


def init_repo(path: Path, branch: str = "main") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "commit.gpgsign", "false")
    return path


def write(root: Path, files: dict[str, str | bytes | dict[str, Any] | list[Any]]) -> None:
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict | list):
            target.write_text(json.dumps(content, indent=2) + "\n")
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)


def commit(root: Path, message: str = "change", files: dict[str, Any] | None = None) -> str:
    if files:
        write(root, files)
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD")


def spec(name: str, image: str, *inputs: str, **extra: Any) -> dict[str, Any]:
    """A small pipeline spec reading the given repos (crossed when several)."""
    pfs = [{"pfs": {"repo": repo, "glob": "/*"}} for repo in inputs]
    doc: dict[str, Any] = {
        "pipeline": {"name": name},
        "transform": {"image": image, "cmd": ["sh", "-c", "true"]},
    }
    if len(pfs) == 1:
        doc["input"] = pfs[0]
    elif pfs:
        doc["input"] = {"cross": pfs}
    doc.update(extra)
    return doc


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose prerequisite is missing; in CI (CI set) that is a failure."""
    import pytest

    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


VENV_BIN = str(Path(sys.executable).parent)


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No cluster, Docker or pachhook settings from the machine; an empty Docker config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PACHYDERM_", "DOCKER", "PRE_COMMIT", "GIT_", "PACHHOOK_", "PACH_"))
    }
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), DOCKER_CONFIG=str(home / ".docker"))
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    return {**env, **GIT_ENV, **extra}


def pachhook_in(
    cwd: Path, *args: str, env: dict[str, str], input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`pachhook ARGS` in `cwd`, as a process of its own, with exactly `env`."""
    return subprocess.run(
        [sys.executable, "-m", "pachhook", *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=300,
    )
