"""Small repositories laid out as real Pachyderm repositories are, one per situation that
`init` and a first `run` must get right (tests/test_corpus.py):

- `opencv`: one Dockerfile at the root, alternative specs of one pipeline (edges, and a
  GPU variant of it), a pipeline on an image pachhook does not build;
- `tfdemo`: JSON specs separated by `---` in one file, and a Dockerfile in a folder whose
  sources are named from the repository root (a root context);
- `book`: `R_Dockerfile` and `python.dockerfile` side by side, YAML specs beside a YAML file
  that is no spec;
- `iris`: several Dockerfiles building one repository under different tags
  (`iris-train:python-svm`, `iris-train:julia-tree`), with one spec per language;
- `weights`: a model file stored with Git LFS;
- `services`: a Dockerfile that copies a build output git ignores, beside one that builds.

Images are named in the test's registry (`{registry}`) and start from the local busybox
base image (`{base}`): the layouts are otherwise as their public patterns have them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

LFS_SIZE = 3000  # bytes of the LFS-tracked model file


def spec(name: str, image: str, *inputs: str, **extra: Any) -> dict[str, Any]:
    pfs = [{"pfs": {"repo": repo, "glob": "/*"}} for repo in inputs]
    doc: dict[str, Any] = {
        "pipeline": {"name": name},
        "transform": {"image": image, "cmd": ["sh", "-c", "true"]},
    }
    if pfs:
        doc["input"] = pfs[0] if len(pfs) == 1 else {"cross": pfs}
    doc.update(extra)
    return doc


def js(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


@dataclass
class Layout:
    name: str  # the repository's folder name (a root Dockerfile is named after it)
    files: dict[str, str | bytes]
    images: dict[str, tuple[str, str]]  # label (name[:variant]) -> (context, dockerfile)
    input_repos: tuple[str, ...]
    deployed: dict[str, str]  # pipeline -> the image label it runs (or the reference as written)
    run_exit: int = 0
    lfs: tuple[str, ...] = ()  # patterns tracked with Git LFS
    notes: list[str] = field(default_factory=list)  # words the plan's notes must hold


def opencv(registry: str, base: str) -> Layout:
    image = f"{registry}/demo/opencv"
    magick = f"{registry}/demo/imagemagick:7"
    return Layout(
        "opencv",
        {
            "Dockerfile": f"FROM {base}\nCOPY edges.py /edges.py\n",
            "edges.py": "print('edges')\n",
            "README.md": "# OpenCV edge detection\n",
            "edges.json": js(spec("edges", f"{image}:1.0", "images")),
            "edges-gpu.json": js(
                spec("edges", f"{image}:1.0", "images", description="the same on a GPU")
            ),
            "montage.json": js(spec("montage", magick, "images", "edges")),
        },
        {image: (".", "Dockerfile")},
        ("images",),
        {"edges": image, "montage": magick},
        notes=[],
    )


def tfdemo(registry: str, base: str) -> Layout:
    image = f"{registry}/demo/tensorflow"
    stream = (
        js(spec("train", f"{image}:2", "data"))
        + "---\n"
        + js(spec("infer", f"{image}:2", "train", "data"))
    )
    return Layout(
        "tfdemo",
        {
            "tensorflow/Dockerfile": f"FROM {base}\nCOPY tensorflow/train.py tensorflow/infer.py /code/\n",
            "tensorflow/train.py": "print('train')\n",
            "tensorflow/infer.py": "print('infer')\n",
            "tensorflow/tensorflow.pipeline.json": stream,
        },
        {image: (".", "tensorflow/Dockerfile")},
        ("data",),
        {"train": image, "infer": image},
    )


def book(registry: str, base: str) -> Layout:
    r, py = f"{registry}/book/r", f"{registry}/book/python"

    def yaml_spec(name: str, image: str, repo: str) -> str:
        return (
            f"pipeline:\n  name: {name}\ntransform:\n  image: {image}\n  cmd: [sh, -c, 'true']\n"
            f"input:\n  pfs:\n    repo: {repo}\n    glob: /*\n"
        )

    return Layout(
        "book",
        {
            "analysis/R_Dockerfile": f"FROM {base}\nCOPY model.R /model.R\n",
            "analysis/python.dockerfile": f"FROM {base}\nCOPY clean.py /clean.py\n",
            "analysis/model.R": "lm(y ~ x)\n",
            "analysis/clean.py": "print('clean')\n",
            "specs/clean.yaml": yaml_spec("clean", f"{py}:3.11", "raw"),
            "specs/model.yaml": yaml_spec("model", f"{r}:4.3", "clean"),
            "specs/params.yaml": "alpha: 0.5\nfolds: 10\n",
        },
        {
            r: ("analysis", "R_Dockerfile"),
            py: ("analysis", "python.dockerfile"),
        },
        ("raw",),
        {"clean": py, "model": r},
    )


def iris(registry: str, base: str) -> Layout:
    train, infer = f"{registry}/pachyderm/iris-train", f"{registry}/pachyderm/iris-infer"
    return Layout(
        "iris",
        {
            "python/iris-train-python-svm/Dockerfile": f"FROM {base}\nCOPY pytrain.py /code/\n",
            "python/iris-train-python-svm/pytrain.py": "print('svm')\n",
            "python/iris-infer-python/Dockerfile": f"FROM {base}\nCOPY pyinfer.py /code/\n",
            "python/iris-infer-python/pyinfer.py": "print('infer')\n",
            "julia/iris-train-julia-tree/Dockerfile": f"FROM {base}\nCOPY train.jl /code/\n",
            "julia/iris-train-julia-tree/train.jl": "println(1)\n",
            "python_train.json": js(spec("model", f"{train}:python-svm", "training")),
            "julia_train.json": js(spec("model", f"{train}:julia-tree", "training")),
            "python_infer.json": js(spec("inference", f"{infer}:python", "attributes", "model")),
        },
        {
            f"{train}:python-svm": ("python/iris-train-python-svm", "Dockerfile"),
            f"{train}:julia-tree": ("julia/iris-train-julia-tree", "Dockerfile"),
            infer: ("python/iris-infer-python", "Dockerfile"),
        },
        ("training", "attributes"),
        # Two specs define `model`: init keeps the first and excludes the other.
        {"model": f"{train}:julia-tree", "inference": infer},
    )


def weights(registry: str, base: str) -> Layout:
    image = f"{registry}/demo/model"
    return Layout(
        "weights",
        {
            ".gitattributes": "*.bin filter=lfs diff=lfs merge=lfs -text\n",
            "model/Dockerfile": f"FROM {base}\nCOPY weights.bin predict.sh /model/\n",
            "model/weights.bin": os.urandom(LFS_SIZE),
            "model/predict.sh": "wc -c /model/weights.bin\n",
            "pipelines/predict.json": js(spec("predict", f"{image}:1", "inputs")),
        },
        {image: ("model", "Dockerfile")},
        ("inputs",),
        {"predict": image},
        lfs=("*.bin",),
    )


def services(registry: str, base: str) -> Layout:
    server, web = f"{registry}/demo/server", f"{registry}/demo/web"
    return Layout(
        "services",
        {
            ".gitignore": "bin/\n",
            "Makefile": "server/bin/server: server/main.go\n\tmkdir -p server/bin\n\tcp $< $@\n",
            "server/Dockerfile": f"FROM {base}\nCOPY bin/server /usr/local/bin/server\n",
            "server/main.go": "package main\nfunc main() {}\n",
            "web/Dockerfile": f"FROM {base}\nCOPY index.html /www/\n",
            "web/index.html": "<h1>hi</h1>\n",
            "pipelines/serve.json": js(spec("serve", f"{server}:1", "requests")),
            "pipelines/web.json": js(spec("web", f"{web}:1", "pages")),
            # Reads serve's output: it waits with serve.
            "pipelines/report.json": js(spec("report", f"{web}:1", "serve")),
        },
        {server: ("server", "Dockerfile"), web: ("web", "Dockerfile")},
        ("requests", "pages"),
        {"web": web},
        run_exit=1,
    )


LAYOUTS = (opencv, tfdemo, book, iris, weights, services)
