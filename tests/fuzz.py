"""Seeded generators of hostile input for the fault-and-fuzz suite: Dockerfiles and pipeline
spec files, each from a grammar of what users write plus what breaks parsers (unknown words,
broken quoting, heredocs, NUL bytes, deep nesting, alias bombs, duplicate keys, odd names).

Every case is a dict of repository files; the same seed gives the same cases.
"""

from __future__ import annotations

import json
import random
from typing import Any

CONTEXT_FILES: dict[str, str | bytes] = {
    "app/main.sh": "echo main\n",
    "app/lib/a.py": "A = 1\n",
    "app/lib/b.py": "B = 2\n",
    "app/é.txt": "unicode name\n",
    "app/data.bin": b"\x00\x01\xff",
}
LINKS = {"app/link": "main.sh", "app/dangling": "nowhere", "app/loop": "loop", "app/up": "../up"}

_INSTRUCTIONS = [
    "FROM", "from", "COPY", "ADD", "RUN", "ARG", "ENV", "WORKDIR", "ONBUILD", "LABEL", "USER",
    "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME", "SHELL", "HEALTHCHECK", "STOPSIGNAL", "MAINTAINER",
    "COPPY", "FORM", "run", "Copy",
]  # fmt: skip
_SOURCES = [
    "main.sh", "lib/", "lib/*.py", "*", "missing.txt", "../outside", "/main.sh", "./main.sh",
    "http://example.invalid/x", "lib/[a-", "li?", "$SRC", "${SRC:-main.sh}", "${SRC:?no}",
    '"main.sh"', "'main.sh'", "<<EOF", "<<-'EOT'", "a/" * 1500 + "x", "link", "dangling", "loop",
    "up", "~", "\\", "é.txt", "data.bin", "lib/../main.sh", "${", "$", "[", "**", ".",
    "main.sh\x00", "\ufeffmain.sh", "lib\\/a.py",
]  # fmt: skip
_FLAGS = [
    "--from=base", "--from=0", "--from=9", "--from=", "--from", "--chown=1:1", "--chmod=755",
    "--link", "--platform=linux/amd64", "--mount=type=bind,source=main.sh", "--", "--=x",
    "--from=${X}", "--parents",
]  # fmt: skip
_BASES = ["scratch", "local/busybox:1", "base", "${BASE}", "$BASE", "", "a b c", "UPPER/Case"]


_GOOD_SOURCES = ["main.sh", "lib/", "lib/*.py", "*", "./main.sh", "link", "é.txt", "${SRC:-main.sh}",
                 "lib/a.py lib/b.py", "li?/", "data.bin", "/main.sh"]  # fmt: skip
_GOOD_LINES = ["RUN true", "ENV A=1 B='two words'", "ARG SRC=main.sh", "WORKDIR /work",
               'CMD ["sh", "-c", "echo"]', "LABEL a=b", "USER 1000", "EXPOSE 80",
               "COPY --chown=1:1 main.sh /dst/", "ONBUILD COPY main.sh /o/"]  # fmt: skip


def dockerfile(rng: random.Random) -> dict[str, Any]:
    """Files for one case: the Dockerfile (text or bytes), maybe a .dockerignore, and
    the image's configuration (target, build args). About half are Dockerfiles as users
    write them, lightly varied; the rest come from the hostile grammar."""
    if rng.random() < 0.45:
        return _plausible_dockerfile(rng)
    lines: list[str] = []
    if rng.random() < 0.2:
        lines.append(rng.choice(["# escape=`", "# escape=\\", "# syntax=x", "# escape=x"]))
    if rng.random() < 0.3:
        lines.append(f"ARG BASE={rng.choice(_BASES)}")
    stages = rng.randint(0, 3)
    for stage in range(stages):
        name = rng.choice(["base", "build", "Final", "1bad", "a-b.c", "", "base"])
        lines.append(f"FROM {rng.choice(_BASES)}" + (f" AS {name}" if name else ""))
        for _ in range(rng.randint(0, 6)):
            lines.append(_instruction(rng, stage))
    for _ in range(rng.randint(0, 3)):
        lines.insert(rng.randint(0, len(lines)), _instruction(rng, 0))
    text = "\n".join(lines) + rng.choice(["\n", "", "\r\n", "\\\n", "\n\n"])
    if rng.random() < 0.1:
        text = _flip(rng, text)
    files: dict[str, Any] = {"app/Dockerfile": text}
    if rng.random() < 0.05:
        files["app/Dockerfile"] = text.encode("utf-8", "surrogatepass") + b"\x00\xfe"
    if rng.random() < 0.3:
        files["app/.dockerignore"] = "\n".join(
            rng.choice(["*.py", "!lib/a.py", "lib", "**", "[", "\\", "!", "#", "main.sh", "../x"])
            for _ in range(rng.randint(1, 4))
        )
    target = rng.choice([None, None, "base", "build", "final", "nope", "0"])
    args = rng.choice(
        [{}, {"SRC": "main.sh"}, {"BASE": "scratch"}, {"SRC": "${SRC}"}, {"X": "$(rm -rf /)"}]
    )
    return {"files": files, "target": target, "build_args": args}


def _plausible_dockerfile(rng: random.Random) -> dict[str, Any]:
    lines = ["ARG BASE=scratch"] if rng.random() < 0.3 else []
    named = rng.random() < 0.4
    lines.append(
        "FROM ${BASE} AS base" if lines else "FROM scratch" + (" AS base" if named else "")
    )
    for _ in range(rng.randint(1, 5)):
        if rng.random() < 0.6:
            lines.append(f"COPY {rng.choice(_GOOD_SOURCES)} /dst/")
        else:
            lines.append(rng.choice(_GOOD_LINES))
    target = None
    if named or lines[0].startswith("ARG"):
        lines.append("FROM base AS final" if rng.random() < 0.5 else "FROM scratch AS final")
        lines.append(
            rng.choice(["COPY --from=base /dst /dst", "COPY --from=0 /dst /x", "RUN true"])
        )
        target = rng.choice([None, "base", "final"])
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.2:
        text = _flip(rng, text)
    files: dict[str, Any] = {"app/Dockerfile": text}
    if rng.random() < 0.2:
        files["app/.dockerignore"] = rng.choice(["*.bin\n", "lib/b.py\n", "!main.sh\n", "# c\n"])
    return {"files": files, "target": target, "build_args": rng.choice([{}, {"SRC": "lib/"}])}


def _instruction(rng: random.Random, stage: int) -> str:
    cmd = rng.choice(_INSTRUCTIONS)
    flags = " ".join(rng.choice(_FLAGS) for _ in range(rng.choice([0, 0, 0, 1, 2])))
    if cmd.upper() in ("COPY", "ADD"):
        count = rng.randint(0, 3)
        words = [rng.choice(_SOURCES) for _ in range(count)] + [rng.choice(["/dst/", "/dst", "."])]
        if rng.random() < 0.2:
            args = json.dumps(words) if rng.random() < 0.7 else "[" + ",".join(words)
        else:
            args = " ".join(words)
        if any(w.startswith("<<") for w in words):
            args += "\nline one\n" + rng.choice(["EOF", "EOT", "", "  EOF"])
    elif cmd.upper() in ("ARG", "ENV"):
        args = rng.choice(["SRC=main.sh", "SRC", "=x", "A=1 B=2", 'Q="a b"', "", "X ${Y:+z}"])
    elif cmd.upper() == "ONBUILD":
        args = _instruction(rng, stage)
    elif cmd.upper() == "RUN":
        args = rng.choice(["true", "<<EOF\necho hi\nEOF", '["sh", "-c", 1]', "echo \\", ""])
    else:
        args = rng.choice(["x", "", '["a"]', "[", "a " * 200, "\t", "é"])
    line = f"{cmd} {flags} {args}".rstrip()
    if rng.random() < 0.05:
        line = line + " \\\n  # comment\n\n  more"
    if rng.random() < 0.02:
        line += "x" * 20000
    return line


def _flip(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 5)):
        if chars:
            chars[rng.randrange(len(chars))] = rng.choice(["\\", '"', "'", "$", "{", "\x00", "\n"])
    return "".join(chars)


# -- specs ----------------------------------------------------------------------------------------

_ODD_VALUES: list[Any] = [
    None, [], {}, "", -1, 0, 2**64, 1.5, True, "x" * 5000, "é", "\x00", "a/b", "A B",
    {"nested": {"deeper": [1, 2, {"x": None}]}}, [[[]]], "latest", "ph-1",
]  # fmt: skip
_NAMES = [
    "clean", "a/b", "x" * 60, "-lead", "_lead", "ok_name-2", "", "a b", "é", "UPPER", "a.b",
    "x" * 45, 7, None, ["l"],
]  # fmt: skip
_IMAGES = [
    "127.0.0.1:1/a/app:1", "127.0.0.1:1/a/app", "busybox", "Busy/Box", "a b", "", "x@sha256:1",
    "docker.io/library/busybox:1.36", 5, None, "a//b", "a:" + "1" * 200,
]  # fmt: skip
_FIELDS = [
    "parallelism_spec", "datum_tries", "description", "frobnicate", "resourceRequests",
    "transform", "input", "metadata", "reprocess_spec", "salt", "autoscaling", "pipeline",
]  # fmt: skip


def _deep(kind: str, depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"d": value}
    return value


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    if not isinstance(doc.get(key), dict):
        doc[key] = {}
    table: dict[str, Any] = doc[key]
    return table


def spec_document(rng: random.Random) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "pipeline": {"name": "clean"},
        "transform": {"image": "127.0.0.1:1/a/app:1", "cmd": ["sh", "-c", "true"]},
        "input": {"pfs": {"repo": "raw", "glob": "/*"}},
    }
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.15:
            _table(doc, "pipeline")["name"] = rng.choice(_NAMES)
        elif roll < 0.25:
            _table(doc, "pipeline")["project"] = rng.choice(
                [{"name": rng.choice(_NAMES)}, "p", None, {"name": {"x": 1}}]
            )
        elif roll < 0.4:
            _table(doc, "transform")["image"] = rng.choice(_IMAGES)
        elif roll < 0.55:
            doc[rng.choice(_FIELDS)] = rng.choice(_ODD_VALUES)
        elif roll < 0.65:
            doc["input"] = rng.choice(
                [
                    {"cross": [{"pfs": {"repo": "raw", "glob": "/*"}}, {"pfs": {"repo": 3}}]},
                    {"union": []},
                    {"cron": {"name": "tick", "spec": "@every 1m"}},
                    {"pfs": {"repo": "clean", "glob": "/*"}},
                    {"join": [{"pfs": {}}]},
                    {"group": "x"},
                    None,
                ]
            )
        elif roll < 0.75:
            doc["metadata"] = {
                "annotations": _deep(rng.choice(["list", "dict"]), rng.choice([70, 500, 1200]))
            }
        elif roll < 0.85:
            doc["transform"] = rng.choice(_ODD_VALUES + [{"cmd": "not a list", "image": "x"}])
        else:
            doc.pop(rng.choice(list(doc)), None)
    return doc


def spec_file(rng: random.Random) -> tuple[str, bytes]:
    """(path, content) of one spec file: JSON or YAML, one or several documents, sometimes
    broken on purpose."""
    docs = [spec_document(rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    form = rng.random()
    if form < 0.45:
        path = "pipelines/fuzz.json"
        text = _json_text(rng, docs)
    elif form < 0.85:
        path = rng.choice(["pipelines/fuzz.yaml", "pipelines/fuzz.yml"])
        text = _yaml_text(rng, docs)
    else:
        path = "pipelines/fuzz.yaml"
        text = rng.choice(_YAML_TRAPS)(rng)
    data = text.encode("utf-8", "surrogatepass")
    roll = rng.random()
    if roll < 0.05:
        data = data[: rng.randint(0, len(data))]
    elif roll < 0.08:
        data = b"\xef\xbb\xbf" + data
    elif roll < 0.1:
        data = data.replace(b"e", b"\xff", 1)
    return path, data


def _json_text(rng: random.Random, docs: list[dict[str, Any]]) -> str:
    try:
        if len(docs) == 1 or rng.random() < 0.5:
            return json.dumps(docs if len(docs) > 1 else docs[0], indent=rng.choice([None, 2]))
        return "\n".join(json.dumps(d) for d in docs)
    except (ValueError, RecursionError):
        return '{"pipeline": {"name": "deep"}, "transform": ' + "[" * 3000 + "]" * 3000 + "}"


def _yaml_text(rng: random.Random, docs: list[dict[str, Any]]) -> str:
    import yaml

    try:
        return "\n---\n".join(yaml.safe_dump(d) for d in docs)
    except RecursionError:
        return "pipeline:\n  name: deep\ntransform: " + "[" * 3000 + "]" * 3000 + "\n"


def _alias_bomb(rng: random.Random) -> str:
    levels = rng.randint(4, 10)
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        refs = ", ".join([f"*a{n - 1}"] * 9)
        lines.append(f"a{n}: &a{n} [{refs}]")
    lines.append(f"pipeline: {{name: bomb}}\ntransform: {{image: x, cmd: [*a{levels - 1}]}}")
    return "\n".join(lines) + "\n"


def _recursive_alias(rng: random.Random) -> str:
    return "pipeline: &p {name: loop, self: *p}\ntransform: {image: x}\n"


def _duplicate_keys(rng: random.Random) -> str:
    return "pipeline: {name: a}\npipeline: {name: b}\ntransform: {image: x}\n"


def _tags(rng: random.Random) -> str:
    tag = rng.choice(["!!binary aGk=", "!!timestamp 2001-12-14", "!!python/object:os.system x",
                      "!!set {a, b}", "!custom x", "2001-12-14t21:59:43.10-05:00", ".nan", ".inf"])  # fmt: skip
    return f"pipeline: {{name: tagged}}\ntransform: {{image: x, cmd: [{tag}]}}\n"


def _block_nesting(rng: random.Random) -> str:
    depth = rng.choice([100, 900, 3000])
    body = "".join(" " * n + f"k{n}:\n" for n in range(depth))
    return "pipeline: {name: deep}\ntransform: {image: x}\nmetadata:\n" + body


def _complex_keys(rng: random.Random) -> str:
    return "pipeline: {name: k}\ntransform: {image: x}\n? [a, b]\n: c\n1: int key\n"


_YAML_TRAPS = [_alias_bomb, _recursive_alias, _duplicate_keys, _tags, _block_nesting, _complex_keys]
