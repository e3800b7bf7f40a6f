"""A synthetic monorepo: 100 images, 500 pipeline specs (JSON and YAML), 20,000+ files.

    python bench/monorepo.py DIR     # makes DIR (a git repository with one commit)

Images live under images/imgNNN/ (Dockerfile, .dockerignore, src/, tests/, assets);
specs under pipelines/ (a JSON file per pipeline for half, YAML files of five
documents for the other half), in chains so the DAG has depth; docs/ and data/
hold files that no image or spec uses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

IMAGES = 100
PIPELINES = 500
FILES_PER_IMAGE = 120  # src/ and tests/: 12,000 files
UNUSED_FILES = 8_000  # docs/ and data/

REGISTRY = "127.0.0.1:5999/bench"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def image_name(n: int) -> str:
    return f"{REGISTRY}/img{n:03d}"


def dockerfile(n: int) -> str:
    return (
        "ARG BASE=local/busybox:1\n"
        "FROM ${BASE} AS build\n"
        "WORKDIR /app\n"
        "COPY requirements.txt ./\n"
        "COPY src/ ./src/\n"
        "FROM ${BASE}\n"
        "COPY --from=build /app /app\n"
        f'LABEL bench.image="{n}"\n'
        'CMD ["sh", "-c", "cat /app/src/mod_000.py"]\n'
    )


def pipeline_spec(n: int) -> dict[str, object]:
    image = image_name(n % IMAGES)
    # Chains of five: every fifth pipeline reads a data repo, the others their predecessor.
    repo = f"raw{n // 5:03d}" if n % 5 == 0 else f"pipe{n - 1:03d}"
    return {
        "pipeline": {"name": f"pipe{n:03d}"},
        "description": f"synthetic pipeline {n}",
        "transform": {"image": f"{image}:v0", "cmd": ["sh", "-c", "true"]},
        "input": {"pfs": {"repo": repo, "glob": "/*"}},
        "parallelism_spec": {"constant": 1},
    }


def to_yaml(doc: dict[str, object]) -> str:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False)


def files() -> dict[str, str]:
    out: dict[str, str] = {}
    config = ["# synthetic monorepo", 'tag_policy = "digest"', ""]
    for n in range(IMAGES):
        root = f"images/img{n:03d}"
        out[f"{root}/Dockerfile"] = dockerfile(n)
        out[f"{root}/.dockerignore"] = "tests/\n**/*.pyc\n!src/keep.pyc\n"
        out[f"{root}/requirements.txt"] = f"package-{n}==1.0\n"
        out[f"{root}/README.md"] = f"# image {n}\n"
        for m in range(FILES_PER_IMAGE):
            folder = "src" if m < FILES_PER_IMAGE * 2 // 3 else "tests"
            out[f"{root}/{folder}/mod_{m:03d}.py"] = f"VALUE = {n * 1000 + m}\n"
        config += ["[[image]]", f'name = "{image_name(n)}"', f'context = "{root}"', ""]
    config += ["[pipelines]", 'include = ["pipelines/**/*.json", "pipelines/**/*.yaml"]']
    out["pachhook.toml"] = "\n".join(config) + "\n"
    half = PIPELINES // 2
    for n in range(half):
        out[f"pipelines/json/pipe{n:03d}.json"] = json.dumps(pipeline_spec(n), indent=2) + "\n"
    for start in range(half, PIPELINES, 5):
        docs = [to_yaml(pipeline_spec(n)) for n in range(start, min(start + 5, PIPELINES))]
        out[f"pipelines/yaml/group{start:03d}.yaml"] = "---\n".join(docs)
    for m in range(UNUSED_FILES):
        folder = "docs" if m % 2 else "data"
        out[f"{folder}/part{m // 500:02d}/item_{m:05d}.txt"] = f"unused {m}\n"
    return out


def git(root: Path, *args: str) -> str:
    import os

    return subprocess.run(
        ["git", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    ).stdout.strip()


def make(root: Path) -> Path:
    if (root / ".git").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    for name, text in files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "synthetic monorepo")
    return root


TEMPLATES = 50  # Jsonnet template files added by add_templates, one instance each

TEMPLATE = """\
// A templated stage: one spec, from the shared library.
local common = import "../lib/common.libsonnet";
function(n, src)
  common.stage("tpl" + n, src, %d)
"""

COMMON = """\
local images = import "images.libsonnet";
{
  stage(name, src, image):: {
    pipeline: { name: name },
    description: "templated stage " + name,
    transform: { image: images.image(image), cmd: ["sh", "-c", "true"] },
    input: { pfs: { repo: src, glob: "/*" } },
    parallelism_spec: { constant: 1 },
  },
}
"""


def template_files() -> dict[str, str]:
    """TEMPLATES template files and their shared library, and the config entries that
    instantiate each once (reading the output of one of the synthetic pipelines)."""
    out = {
        "lib/common.libsonnet": COMMON,
        "lib/images.libsonnet": f'{{ image(n):: "{REGISTRY}/img%03d:v0" % n }}\n',
    }
    entries = []
    for n in range(TEMPLATES):
        path = f"templates/stage{n:03d}.jsonnet"
        out[path] = TEMPLATE % (n % IMAGES)
        src = f"pipe{n * (PIPELINES // TEMPLATES):03d}"
        entries += [
            "[[pipelines.template]]",
            f'file = "{path}"',
            f'args = {{ n = "{n:03d}", src = "{src}" }}',
            "",
        ]
    out["pachhook.toml"] = files()["pachhook.toml"] + "\n" + "\n".join(entries)
    return out


def add_templates(root: Path) -> str:
    """Commit the templates into a made monorepo; the new commit id."""
    for name, text in template_files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", f"{TEMPLATES} Jsonnet templates")
    return git(root, "rev-parse", "HEAD")


def commit_change(root: Path, paths: list[str], message: str) -> str:
    """Append a line to each path and commit; the new commit id."""
    for name in paths:
        with open(root / name, "a") as handle:
            handle.write("# touched\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


if __name__ == "__main__":
    target = make(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/.work/monorepo"))
    count = git(target, "ls-files").count("\n") + 1
    print(f"{target}: {count} files, {IMAGES} images, {PIPELINES} pipelines")
