"""A small, strict emulator of how a GitHub Actions runner runs a composite action.

tests/test_action.py runs pachhook's ``action.yml`` with it. It parses an ``action.yml``
whose ``runs.using`` is ``composite``, computes the inputs, and runs each ``run:`` step
the way ``actions/runner`` does (its ``src/Runner.Worker``: ``CompositeActionHandler.cs``,
``Handlers/ScriptHandler.cs``, ``FileCommandManager.cs``, ``ActionCommandManager.cs``;
GitHub's documentation of metadata syntax, workflow commands and variables):

* inputs reach the steps only through ``${{ inputs.x }}`` expressions: the runner sets
  no ``INPUT_*`` variables for composite actions (it does for JavaScript and Docker
  actions only);
* every step is written to ``$RUNNER_TEMP/<uuid>.sh`` and run as
  ``bash --noprofile --norc -e -o pipefail FILE`` in ``working-directory`` (relative to
  ``GITHUB_WORKSPACE``), with the job's env, the step's ``env:``, the ``GITHUB_*``
  variables and ``PATH`` prefixed with what earlier steps appended to ``GITHUB_PATH``;
* each step gets fresh, empty ``GITHUB_OUTPUT``, ``GITHUB_ENV``, ``GITHUB_PATH``,
  ``GITHUB_STEP_SUMMARY`` and ``GITHUB_STATE`` files, read after the step (also when it
  failed); ``NAME=VALUE`` and ``NAME<<DELIMITER`` forms, the last value of a name wins;
* workflow commands on stdout and stderr (``::add-mask::``, ``::error ...::``,
  ``::group::`` ...) are interpreted; the log this module builds is what the runner would
  show: the step header with its script and env, then the output, with every secret and
  masked value replaced by ``***``;
* a step's ``if:`` gets an implicit ``success() &&`` unless it calls a status function;
  status functions look at the composite action's own steps; after a failed step the
  remaining steps are skipped unless their condition says otherwise;
* the action's ``outputs:`` are evaluated once all steps have run (also after a failure).

What it does not support it refuses with :class:`RunnerError` rather than guessing: a
``uses:`` step, a shell other than ``bash``, contexts or functions it does not model
(``matrix``, ``strategy``, ``job``, ``hashFiles()``, ``contains()`` ...), comparison
operators other than ``==``/``!=``, object filters, deprecated ``::set-output::``-style
commands, an ``if:`` that mixes text with ``${{ }}``.

Two deliberate departures from GitHub, both on by default and both switchable:
``enforce_required`` (GitHub does *not* fail a missing ``required: true`` input) and
``strict_inputs`` (GitHub only warns about an undeclared input).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ZERO_SHA = "0" * 40
SUMMARY_LIMIT = 1024 * 1024  # bytes per step, as the runner enforces


class RunnerError(Exception):
    """The action (or the way it is called) is invalid, or uses something this emulator
    does not model. Never a step failure: those are reported in :class:`ActionRun`."""


# --------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """YAML as GitHub reads it: only true/false are booleans (``yes``, ``on`` stay strings),
    and a key given twice is an error instead of silently keeping the last one."""


_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise RunnerError(f"line {key_node.start_mark.line + 1}: '{key}' is already defined")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _scalar(value: Any, where: str) -> str:
    """A YAML scalar where GitHub expects a string: booleans and integers read as their text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise RunnerError(f"{where}: expected a string, got {type(value).__name__} {value!r}; quote it")


# --------------------------------------------------------------------------- expressions

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<number>0x[0-9a-fA-F]+|-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<op>==|!=|&&|\|\||<=|>=|[()\[\].!,<>*])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_-]*)
    )""",
    re.VERBOSE,
)

STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})
GITHUB_FUNCTIONS = frozenset(
    {
        "contains",
        "startswith",
        "endswith",
        "format",
        "join",
        "tojson",
        "fromjson",
        "hashfiles",
        "case",
    }
)
GITHUB_KEYS = frozenset(
    {
        "action", "action_path", "action_ref", "action_repository", "action_status", "actor",
        "actor_id", "api_url", "base_ref", "env", "event", "event_name", "event_path",
        "graphql_url", "head_ref", "job", "output", "path", "ref", "ref_name", "ref_protected",
        "ref_type", "repository", "repository_id", "repository_owner", "repository_owner_id",
        "repositoryurl", "retention_days", "run_attempt", "run_id", "run_number",
        "secret_source", "server_url", "sha", "state", "step_summary", "token",
        "triggering_actor", "workflow", "workflow_ref", "workflow_sha", "workspace",
    }
)  # fmt: skip
RUNNER_KEYS = frozenset({"temp", "os", "arch"})
STEP_KEYS = frozenset({"outputs", "outcome", "conclusion"})

# What each field of a composite action may use (actions/runner src/Runner.Worker/action_yaml.json);
# the values GitHub allows there but this emulator does not model are listed apart.
_FIELD_CONTEXTS = {
    "default": ({"github", "runner"}, {"strategy", "matrix", "job"}),
    "step": ({"github", "inputs", "steps", "env", "runner"}, {"strategy", "matrix", "job"}),
    "if": ({"github", "inputs", "steps", "env", "runner"}, {"strategy", "matrix", "job"}),
    "output": ({"github", "inputs", "steps", "env", "runner"}, {"strategy", "matrix", "job"}),
}


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise RunnerError(f"expression {text!r}: unexpected character at position {pos + 1}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent over GitHub's expression grammar, the part this emulator supports.

    AST nodes are tuples: ('lit', value), ('name', ident), ('prop', node, key),
    ('index', node, node), ('not', node), ('eq'|'ne'|'and'|'or', left, right),
    ('call', name, [args]).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def fail(self, why: str) -> RunnerError:
        return RunnerError(f"expression {self.text.strip()!r}: {why}")

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise self.fail(f"expected {value or 'more'}, found {token[1] if token else 'the end'}")
        self.pos += 1
        return token

    def parse(self) -> tuple:
        if not self.tokens:
            raise self.fail("empty expression")
        node = self.or_()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def or_(self) -> tuple:
        node = self.and_()
        while self.peek() == ("op", "||"):
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> tuple:
        node = self.eq()
        while self.peek() == ("op", "&&"):
            self.take()
            node = ("and", node, self.eq())
        return node

    def eq(self) -> tuple:
        node = self.unary()
        while True:
            token = self.peek()
            if token in (("op", "=="), ("op", "!=")):
                self.take()
                node = ("eq" if token[1] == "==" else "ne", node, self.unary())
            elif token is not None and token[0] == "op" and token[1] in ("<", "<=", ">", ">="):
                raise self.fail(f"operator {token[1]} is not supported by this emulator")
            else:
                return node

    def unary(self) -> tuple:
        if self.peek() == ("op", "!"):
            self.take()
            return ("not", self.unary())
        return self.postfix()

    def postfix(self) -> tuple:
        node = self.primary()
        while True:
            token = self.peek()
            if token == ("op", "."):
                self.take()
                nxt = self.take()
                if nxt == ("op", "*"):
                    raise self.fail("object filters (.*) are not supported by this emulator")
                if nxt[0] != "ident":
                    raise self.fail(f"expected a property name after '.', found {nxt[1]!r}")
                node = ("prop", node, nxt[1])
            elif token == ("op", "["):
                self.take()
                if self.peek() == ("op", "*"):
                    raise self.fail("object filters ([*]) are not supported by this emulator")
                index = self.or_()
                self.take("]")
                node = ("index", node, index)
            else:
                return node

    def primary(self) -> tuple:
        kind, value = self.take()
        if kind == "string":
            return ("lit", value[1:-1].replace("''", "'"))
        if kind == "number":
            return ("lit", float(int(value, 16)) if value.startswith("0x") else float(value))
        if kind == "op" and value == "(":
            node = self.or_()
            self.take(")")
            return node
        if kind == "ident":
            lowered = value.lower()
            if self.peek() == ("op", "("):
                self.take()
                args: list[tuple] = []
                if self.peek() != ("op", ")"):
                    args.append(self.or_())
                    while self.peek() == ("op", ","):
                        self.take()
                        args.append(self.or_())
                self.take(")")
                if lowered in STATUS_FUNCTIONS:
                    if args:
                        raise self.fail(f"{value}() takes no arguments")
                    return ("call", lowered, args)
                if lowered in GITHUB_FUNCTIONS:
                    raise self.fail(f"function {value}() is not supported by this emulator")
                raise self.fail(f"Unrecognized function: '{value}'")
            if lowered in ("true", "false"):
                return ("lit", lowered == "true")
            if lowered == "null":
                return ("lit", None)
            return ("name", lowered)
        raise self.fail(f"unexpected {value!r}")


def parse_expression(text: str) -> tuple:
    return _Parser(text).parse()


def _walk(node: tuple) -> Iterable[tuple]:
    yield node
    for child in node[1:]:
        if isinstance(child, tuple):
            yield from _walk(child)
        elif isinstance(child, list):
            for item in child:
                yield from _walk(item)


def _chain(node: tuple) -> list[str] | None:
    """['steps', 'id', 'outputs', 'x'] for steps.id.outputs.x (and steps['id'] with a literal)."""
    if node[0] == "name":
        return [node[1]]
    if node[0] == "prop":
        head = _chain(node[1])
        return None if head is None else [*head, node[2].lower()]
    if node[0] == "index" and node[2][0] == "lit" and isinstance(node[2][1], str):
        head = _chain(node[1])
        return None if head is None else [*head, node[2][1].lower()]
    return None


def _template_parts(text: str) -> list[tuple[bool, str]]:
    """Split a string into literal text and ``${{ ... }}`` expressions (True, inner text);
    a ``}}`` inside a quoted string literal does not close the expression."""
    parts: list[tuple[bool, str]] = []
    pos = 0
    while True:
        start = text.find("${{", pos)
        if start < 0:
            if pos < len(text):
                parts.append((False, text[pos:]))
            return parts
        if start > pos:
            parts.append((False, text[pos:start]))
        i = start + 3
        in_string = False
        while i < len(text):
            ch = text[i]
            if in_string:
                if ch == "'":
                    if text[i + 1 : i + 2] == "'":
                        i += 1
                    else:
                        in_string = False
            elif ch == "'":
                in_string = True
            elif text.startswith("}}", i):
                break
            i += 1
        else:
            raise RunnerError(f"unclosed ${{{{ in {text!r}")
        parts.append((True, text[start + 3 : i]))
        pos = i + 2


class _Ctx:
    """What an expression can see: the contexts by lower-case name, and the status."""

    def __init__(self, values: dict[str, Any], failed: bool = False) -> None:
        self.values = values
        self.failed = failed


class _CI(dict):
    """A context object whose keys GitHub matches without regard to case."""


def _get(obj: Any, key: Any) -> Any:
    if isinstance(obj, dict):
        if not isinstance(key, str):
            return None
        if key in obj:
            return obj[key]
        if isinstance(obj, _CI):
            folded = key.casefold()
            for k, v in obj.items():
                if k.casefold() == folded:
                    return v
        return None
    if isinstance(obj, list) and isinstance(key, float) and key.is_integer():
        index = int(key)
        return obj[index] if 0 <= index < len(obj) else None
    return None


def _truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, (int, float)):
        return not (value == 0 or math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


_JSON_NUMBER = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$")


def _to_number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == "":
            return 0.0
        if _JSON_NUMBER.match(text):
            return float(text)
        if re.match(r"^0x[0-9a-fA-F]+$", text):
            return float(int(text, 16))
        return math.nan
    return math.nan


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"


def _equal(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka == kb:
        if ka == "string":
            return a.casefold() == b.casefold()
        if ka == "object":
            return a is b
        return a == b
    return _to_number(a) == _to_number(b)


def to_string(value: Any) -> str:
    """How GitHub turns a value into text in a template."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return value
    raise RunnerError(
        "an object or array cannot be used as text (GitHub: 'A mapping was not expected')"
    )


def _evaluate(node: tuple, ctx: _Ctx) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "name":
        if node[1] not in ctx.values:
            raise RunnerError(f"Unrecognized named-value: '{node[1]}'")
        return ctx.values[node[1]]
    if kind == "prop":
        obj = _evaluate(node[1], ctx)
        if isinstance(obj, _Strict):
            return obj.get(node[2])
        return _get(obj, node[2])
    if kind == "index":
        obj = _evaluate(node[1], ctx)
        key = _evaluate(node[2], ctx)
        if isinstance(obj, _Strict):
            return obj.get(key)
        return _get(obj, key)
    if kind == "not":
        return not _truthy(_evaluate(node[1], ctx))
    if kind in ("eq", "ne"):
        same = _equal(_evaluate(node[1], ctx), _evaluate(node[2], ctx))
        return same if kind == "eq" else not same
    if kind == "and":
        left = _evaluate(node[1], ctx)
        return _evaluate(node[2], ctx) if _truthy(left) else left
    if kind == "or":
        left = _evaluate(node[1], ctx)
        return left if _truthy(left) else _evaluate(node[2], ctx)
    if kind == "call":
        name = node[1]
        if name == "always":
            return True
        if name == "cancelled":
            return False
        if name == "success":
            return not ctx.failed
        return ctx.failed  # failure()
    raise AssertionError(node)


class _Strict:
    """A context whose keys must be ones this emulator was given (github, runner)."""

    def __init__(self, name: str, values: dict[str, Any]) -> None:
        self.name = name
        self.values = {k.lower(): v for k, v in values.items()}

    def get(self, key: Any) -> Any:
        if not isinstance(key, str):
            return None
        lowered = key.lower()
        if lowered not in self.values:
            raise RunnerError(
                f"{self.name}.{key} is not modeled by this emulator; "
                f"pass it explicitly (run_action({self.name}={{{key!r}: ...}}))"
            )
        return self.values[lowered]


# --------------------------------------------------------------------------- the action


@dataclass(frozen=True)
class Input:
    name: str
    description: str
    required: bool
    default: str | None
    deprecation: str | None


@dataclass(frozen=True)
class Output:
    name: str
    description: str
    value: str


@dataclass(frozen=True)
class Step:
    index: int
    id: str | None
    name: str | None
    run: str
    shell: str
    env: dict[str, str]
    condition: str | None
    working_directory: str | None
    continue_on_error: bool

    @property
    def label(self) -> str:
        return f"step {self.index + 1}" + (f" ({self.id})" if self.id else "")


@dataclass(frozen=True)
class CompositeAction:
    path: Path  # the directory: github.action_path
    file: Path
    name: str
    description: str
    inputs: dict[str, Input]  # key: lower-case input id
    outputs: dict[str, Output]
    steps: tuple[Step, ...]
    warnings: tuple[str, ...] = ()


_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_TOP_KEYS = {"name", "author", "description", "inputs", "outputs", "runs", "branding"}
_INPUT_KEYS = {"description", "required", "default", "deprecationMessage"}
_OUTPUT_KEYS = {"description", "value"}
_RUN_STEP_KEYS = {
    "name",
    "id",
    "if",
    "run",
    "env",
    "continue-on-error",
    "working-directory",
    "shell",
}


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RunnerError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _unknown_keys(found: Iterable[Any], allowed: set[str], where: str) -> None:
    extra = [str(k) for k in found if k not in allowed]
    if extra:
        raise RunnerError(
            f"{where}: Unexpected value '{extra[0]}' (allowed: {', '.join(sorted(allowed))})"
        )


def load_action(path: str | os.PathLike[str]) -> CompositeAction:
    """Parse and check a composite action: ``path`` is its directory (or its action.yml)."""
    path = Path(path)
    if path.is_dir():
        file = path / "action.yml"
        if not file.exists():
            file = path / "action.yaml"
        if not file.exists():
            raise RunnerError(f"{path}: no action.yml or action.yaml")
        folder = path
    else:
        file, folder = path, path.parent
    try:
        doc = yaml.load(file.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (safe loader subclass)
    except yaml.YAMLError as exc:
        raise RunnerError(f"{file}: not valid YAML: {exc}") from None
    where = file.name
    doc = _mapping(doc, where)
    _unknown_keys(doc, _TOP_KEYS, where)
    if not isinstance(doc.get("name"), str) or not doc["name"].strip():
        raise RunnerError(f"{where}: name is required")

    inputs: dict[str, Input] = {}
    for key, raw in _mapping(doc.get("inputs"), f"{where}: inputs").items():
        key = _scalar(key, f"{where}: inputs")
        if not _ID.match(key):
            raise RunnerError(
                f"{where}: input id {key!r} must start with a letter or _ and hold only letters, digits, - and _"
            )
        if key.lower() in inputs:
            raise RunnerError(
                f"{where}: input {key!r} is declared twice (ids are case-insensitive)"
            )
        raw = _mapping(raw, f"{where}: inputs.{key}")
        _unknown_keys(raw, _INPUT_KEYS, f"{where}: inputs.{key}")
        required = raw.get("required", False)
        if not isinstance(required, bool):
            raise RunnerError(f"{where}: inputs.{key}.required must be true or false")
        default = raw.get("default")
        inputs[key.lower()] = Input(
            name=key,
            description=_scalar(raw.get("description", ""), f"{where}: inputs.{key}.description"),
            required=required,
            default=None if default is None else _scalar(default, f"{where}: inputs.{key}.default"),
            deprecation=raw.get("deprecationMessage"),
        )

    runs = _mapping(doc.get("runs"), f"{where}: runs")
    using = runs.get("using")
    if not isinstance(using, str) or using.lower() != "composite":
        raise RunnerError(
            f"{where}: runs.using is {using!r}; this emulator runs composite actions only"
        )
    _unknown_keys(runs, {"using", "steps"}, f"{where}: runs (composite actions have no pre/post)")
    raw_steps = runs.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise RunnerError(f"{where}: runs.steps must be a non-empty list")

    steps: list[Step] = []
    ids: set[str] = set()
    for index, raw in enumerate(raw_steps):
        label = f"{where}: runs.steps[{index}]"
        raw = _mapping(raw, label)
        if "uses" in raw:
            raise RunnerError(
                f"{label} uses {raw['uses']!r}: uses steps are not supported by this emulator"
            )
        _unknown_keys(raw, _RUN_STEP_KEYS, label)
        if "run" not in raw:
            raise RunnerError(f"{label}: run is required (or uses)")
        if "shell" not in raw:
            raise RunnerError(f"{label}: shell is required in a composite action's run step")
        shell = _scalar(raw["shell"], f"{label}.shell")
        if shell != "bash":
            raise RunnerError(
                f"{label}: shell {shell!r} is not supported by this emulator (only bash)"
            )
        step_id = raw.get("id")
        if step_id is not None:
            step_id = _scalar(step_id, f"{label}.id")
            if not _ID.match(step_id) or step_id.startswith("__"):
                raise RunnerError(
                    f"{label}: id {step_id!r} must start with a letter or _ (not __) and hold only letters, digits, - and _"
                )
            if step_id.lower() in ids:
                raise RunnerError(f"{label}: id {step_id!r} is used twice")
            ids.add(step_id.lower())
        coe = raw.get("continue-on-error", False)
        if not isinstance(coe, bool):
            raise RunnerError(f"{label}: continue-on-error must be a literal true or false here")
        env = {
            _scalar(k, f"{label}.env"): _scalar(v, f"{label}.env.{k}")
            for k, v in _mapping(raw.get("env"), f"{label}.env").items()
        }
        condition = raw.get("if")
        steps.append(
            Step(
                index=index,
                id=step_id,
                name=None if raw.get("name") is None else _scalar(raw["name"], f"{label}.name"),
                run=_scalar(raw["run"], f"{label}.run"),
                shell=shell,
                env=env,
                condition=None if condition is None else _scalar(condition, f"{label}.if"),
                working_directory=None
                if raw.get("working-directory") is None
                else _scalar(raw["working-directory"], f"{label}.working-directory"),
                continue_on_error=coe,
            )
        )

    outputs: dict[str, Output] = {}
    for key, raw in _mapping(doc.get("outputs"), f"{where}: outputs").items():
        key = _scalar(key, f"{where}: outputs")
        if not _ID.match(key):
            raise RunnerError(
                f"{where}: output id {key!r} must start with a letter or _ and hold only letters, digits, - and _"
            )
        raw = _mapping(raw, f"{where}: outputs.{key}")
        _unknown_keys(raw, _OUTPUT_KEYS, f"{where}: outputs.{key}")
        if "value" not in raw:
            raise RunnerError(f"{where}: outputs.{key}.value is required in a composite action")
        outputs[key.lower()] = Output(
            name=key,
            description=_scalar(raw.get("description", ""), f"{where}: outputs.{key}.description"),
            value=_scalar(raw["value"], f"{where}: outputs.{key}.value"),
        )

    action = CompositeAction(
        path=folder.resolve(),
        file=file.resolve(),
        name=doc["name"],
        description=_scalar(doc.get("description", ""), f"{where}: description"),
        inputs=inputs,
        outputs=outputs,
        steps=tuple(steps),
    )
    warnings = _check_expressions(action, ids)
    return CompositeAction(**{**action.__dict__, "warnings": tuple(warnings)})


def _condition_ast(text: str, where: str) -> tuple:
    """The expression of an ``if:``, with the implicit ``success() &&`` added."""
    stripped = text.strip()
    parts = _template_parts(stripped)
    if len(parts) == 1 and parts[0][0]:
        inner = parts[0][1]
    elif any(is_expr for is_expr, _ in parts):
        raise RunnerError(
            f"{where}: if: {text!r} mixes text with ${{{{ }}}}; GitHub evaluates that as a "
            "non-empty string (always true). Not supported: write the whole condition as one expression"
        )
    else:
        inner = stripped
    node = parse_expression(inner)
    if not any(n[0] == "call" for n in _walk(node)):
        node = ("and", ("call", "success", []), node)
    return node


def _check_expressions(action: CompositeAction, step_ids: set[str]) -> list[str]:
    """Parse every expression once, up front, and check each name it uses."""
    warnings: list[str] = []

    def check(text: str, field_kind: str, where: str, *, condition: bool = False) -> None:
        if condition:
            nodes = [_condition_ast(text, where)]
        else:
            nodes = [parse_expression(inner) for is_expr, inner in _template_parts(text) if is_expr]
        allowed, unmodeled = _FIELD_CONTEXTS[field_kind]
        for node in nodes:
            for sub in _walk(node):
                if sub[0] == "call" and not condition:
                    raise RunnerError(f"{where}: {sub[1]}() can only be used in if:")
                if sub[0] != "name":
                    continue
                name = sub[1]
                if name in unmodeled:
                    raise RunnerError(
                        f"{where}: the {name} context is not modeled by this emulator"
                    )
                if name not in allowed:
                    raise RunnerError(f"{where}: Unrecognized named-value: '{name}'")
            for sub in _walk(node):
                chain = _chain(sub)
                if not chain or len(chain) < 2:
                    continue
                head = chain[0]
                if head == "inputs" and chain[1] not in action.inputs:
                    raise RunnerError(f"{where}: inputs.{chain[1]} is not declared in inputs:")
                if head == "steps":
                    if chain[1] not in step_ids:
                        raise RunnerError(f"{where}: steps.{chain[1]}: no step has that id")
                    if len(chain) > 2 and chain[2] not in STEP_KEYS:
                        raise RunnerError(
                            f"{where}: steps.{chain[1]}.{chain[2]}: a step has only outputs, outcome and conclusion"
                        )
                if head == "github" and chain[1] not in GITHUB_KEYS:
                    raise RunnerError(
                        f"{where}: github.{chain[1]} is not a property of the github context"
                    )
                if head == "runner" and chain[1] not in RUNNER_KEYS:
                    raise RunnerError(f"{where}: runner.{chain[1]} is not modeled by this emulator")

    for item in action.inputs.values():
        if item.default is not None:
            check(item.default, "default", f"inputs.{item.name}.default")
    for step in action.steps:
        where = f"runs.steps[{step.index}]"
        check(step.run, "step", f"{where}.run")
        for is_expr, inner in _template_parts(step.run):
            if is_expr and any(
                (_chain(n) or [""])[0] in ("inputs", "env", "steps")
                or (_chain(n) or [""])[:2] in (["github", "event"], ["github", "head_ref"])
                for n in _walk(parse_expression(inner))
            ):
                warnings.append(
                    f"{where}.run inserts ${{{{{inner.strip()}}}}} into the script text: the value "
                    "becomes shell code and is printed in the log; pass it through env: instead"
                )
        for key, value in step.env.items():
            check(value, "step", f"{where}.env.{key}")
        if step.name is not None:
            check(step.name, "step", f"{where}.name")
        if step.working_directory is not None:
            check(step.working_directory, "step", f"{where}.working-directory")
        if step.condition is not None:
            check(step.condition, "if", f"{where}.if", condition=True)
    for out in action.outputs.values():
        check(out.value, "output", f"outputs.{out.name}.value")
    return warnings


# --------------------------------------------------------------------------- file commands


def parse_env_file(text: str) -> list[tuple[str, str]]:
    """The pairs in a GITHUB_OUTPUT / GITHUB_ENV / GITHUB_STATE file, in order, as the
    runner reads them (its EnvFileKeyValuePairs, Linux line endings)."""
    pairs: list[tuple[str, str]] = []
    index = 0

    def read_line() -> tuple[str | None, str | None]:
        nonlocal index
        if index >= len(text):
            return None, None
        lf = text.find("\n", index)
        if lf < 0:
            line, index = text[index:], len(text)
            return line, None
        line, index = text[index:lf], lf + 1
        return line, "\n"

    line, _ = read_line()
    while line is not None:
        if line:
            eq, heredoc = line.find("="), line.find("<<")
            if eq >= 0 and (heredoc < 0 or eq < heredoc):
                key, value = line.split("=", 1)
                if not key:
                    raise RunnerError(f"Invalid format '{line}'. Name must not be empty")
            elif heredoc >= 0:
                key, delimiter = line.split("<<", 1)
                if not key or not delimiter:
                    raise RunnerError(
                        f"Invalid format '{line}'. Name must not be empty and delimiter must not be empty"
                    )
                start = end = index
                temp, newline = read_line()
                while temp != delimiter:
                    if temp is None:
                        raise RunnerError(
                            f"Invalid value. Matching delimiter not found '{delimiter}'"
                        )
                    if newline is None:
                        raise RunnerError("Invalid value. EOF marker missing new line.")
                    end = index - len(newline)
                    temp, newline = read_line()
                value = text[start:end] if end > start else ""
            else:
                raise RunnerError(f"Invalid format '{line}'")
            pairs.append((key, value))
        line, _ = read_line()
    return pairs


# --------------------------------------------------------------------------- workflow commands

_PROPERTY_ESCAPES = [("%0D", "\r"), ("%0A", "\n"), ("%3A", ":"), ("%2C", ","), ("%25", "%")]
_DATA_ESCAPES = [("%0D", "\r"), ("%0A", "\n"), ("%25", "%")]
_REGISTERED = {
    "add-mask", "error", "warning", "notice", "debug", "group", "endgroup", "echo",
    "set-output", "set-env", "save-state", "add-path", "add-matcher", "remove-matcher",
    "internal-set-repo-path",
}  # fmt: skip


def _unescape(text: str, table: list[tuple[str, str]]) -> str:
    for escaped, plain in table:
        text = text.replace(escaped, plain)
    return text


def escape_data(text: str) -> str:
    """Escape a workflow command's message (``%`` first, then CR and LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command's property value (also ``:`` and ``,``)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str = "", **properties: str | int) -> str:
    """One workflow command line, e.g. ``workflow_command('error', 'bad', file='a', line=3)``."""
    props = ",".join(f"{k}={escape_property(str(v))}" for k, v in properties.items())
    return f"::{command}{' ' + props if props else ''}::{escape_data(message)}"


def _parse_command(line: str, registered: set[str]) -> tuple[str, dict[str, str], str] | None:
    message = line.lstrip()
    if not message.startswith("::"):
        return None
    end = message.find("::", 2)
    if end < 0:
        return None
    info = message[2:end]
    space = info.find(" ")
    name = info if space < 0 else info[:space]
    if name not in registered:
        return None
    props: dict[str, str] = {}
    if space > 0:
        for item in info[space + 1 :].strip().split(","):
            if not item:
                continue
            pair = [p for p in item.split("=", 1) if p]
            if len(pair) == 2:
                props[pair[0].lower()] = _unescape(pair[1], _PROPERTY_ESCAPES)
    return name, props, _unescape(message[end + 2 :], _DATA_ESCAPES)


@dataclass(frozen=True)
class Annotation:
    level: str  # error, warning, notice
    message: str  # masked, as GitHub shows it
    properties: dict[str, str]  # file, line, endLine, col, endColumn, title (masked)
    step: int  # index of the step that printed it


# --------------------------------------------------------------------------- events


def push_event(
    *,
    before: str,
    after: str,
    ref: str = "refs/heads/main",
    created: bool | None = None,
    forced: bool = False,
    deleted: bool = False,
    base_ref: str | None = None,
    repository: str = "acme/app",
    default_branch: str = "main",
) -> dict[str, Any]:
    """The fields of a push payload that matter to pachhook. A new branch has the
    all-zero ``before`` and ``created: true``; a deleted one the all-zero ``after``."""
    owner, name = repository.split("/", 1)
    return {
        "ref": ref,
        "before": before,
        "after": after,
        "created": (before == ZERO_SHA) if created is None else created,
        "deleted": deleted,
        "forced": forced,
        "base_ref": base_ref,
        "compare": f"https://github.com/{repository}/compare/{before[:12]}...{after[:12]}",
        "commits": [],
        "head_commit": None if deleted else {"id": after},
        "repository": {
            "full_name": repository,
            "name": name,
            "owner": {"login": owner},
            "default_branch": default_branch,
        },
    }


def pull_request_event(
    *,
    number: int,
    base_sha: str,
    head_sha: str,
    base_ref: str = "main",
    head_ref: str = "feature",
    action: str = "synchronize",
    repository: str = "acme/app",
    head_repository: str | None = None,
) -> dict[str, Any]:
    """The fields of a pull_request payload that matter to pachhook."""
    head_repo = head_repository or repository
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "base": {"ref": base_ref, "sha": base_sha, "repo": {"full_name": repository}},
            "head": {"ref": head_ref, "sha": head_sha, "repo": {"full_name": head_repo}},
        },
        "repository": {"full_name": repository},
    }


# --------------------------------------------------------------------------- results


@dataclass
class StepRun:
    index: int
    id: str | None
    name: str
    outcome: str  # success, failure, skipped (before continue-on-error)
    conclusion: str  # success, failure, skipped (after continue-on-error)
    exit_code: int | None = None
    argv: list[str] = field(default_factory=list)
    script: str = ""
    script_path: Path | None = None
    working_directory: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # the process's environment
    stdout: str = ""  # raw, as the process wrote it
    stderr: str = ""
    log: list[str] = field(default_factory=list)  # as GitHub shows it: commands applied, masked
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""  # raw contents of GITHUB_STEP_SUMMARY
    files: dict[str, Path] = field(default_factory=dict)  # output, env, path, step_summary, state
    errors: list[str] = field(default_factory=list)  # runner-side failures (file commands, ...)
    seconds: float = 0.0  # wall time of the step's process


@dataclass
class ActionRun:
    action: CompositeAction
    conclusion: str
    inputs: dict[str, str]
    outputs: dict[str, str]
    steps: list[StepRun]
    env: dict[str, str]  # the job's env context afterwards (including GITHUB_ENV exports)
    path: list[str]  # GITHUB_PATH entries, first = searched first
    annotations: list[Annotation]
    log: list[str]
    warnings: list[str]
    masks: list[str]
    runner_temp: Path
    event_path: Path
    secrets: list[str]

    @property
    def ok(self) -> bool:
        return self.conclusion == "success"

    @property
    def summary(self) -> str:
        return "".join(step.summary for step in self.steps)

    def step(self, step_id: str) -> StepRun:
        for step in self.steps:
            if step.id and step.id.lower() == step_id.lower():
                return step
        raise KeyError(step_id)

    def errors(self) -> list[Annotation]:
        return [a for a in self.annotations if a.level == "error"]

    def find_secret(self, value: str, *extra_paths: str | os.PathLike[str]) -> list[str]:
        """Where the literal ``value`` can be read: the steps' raw stdout and stderr (an
        ``::add-mask::`` line is consumed by the runner and is not counted), their file
        commands, scripts and outputs, the action's outputs, and every file under
        ``extra_paths``. An empty list means no leak was found."""
        if not value:
            raise ValueError("find_secret needs a non-empty value")
        found: list[str] = []
        for step in self.steps:
            for stream in ("stdout", "stderr"):
                for number, line in enumerate(getattr(step, stream).splitlines(), 1):
                    if _parse_command(line, {"add-mask"}) is not None:
                        continue  # the runner consumes the line; it never reaches the log
                    if value in line:
                        found.append(f"{step.name}: {stream} line {number}")
            if value in step.script:
                found.append(f"{step.name}: script text")
            for kind, file in step.files.items():
                if file.exists() and value in file.read_text(encoding="utf-8", errors="replace"):
                    found.append(f"{step.name}: {kind} file {file}")
            for key, out in step.outputs.items():
                if value in out:
                    found.append(f"{step.name}: output {key}")
            for number, line in enumerate(step.log, 1):
                if value in line:
                    found.append(f"{step.name}: log line {number} (not masked)")
        for key, out in self.outputs.items():
            if value in out:
                found.append(f"action output {key}")
        for root in extra_paths:
            root = Path(root)
            files = (
                [root]
                if root.is_file()
                else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
            )
            for file in files:
                try:
                    if value.encode() in file.read_bytes():
                        found.append(f"file {file}")
                except OSError:
                    continue
        return found


# --------------------------------------------------------------------------- running

_BASE_ENV_KEYS = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "TZ",
)


def _masker(values: Iterable[str]) -> Callable[[str], str]:
    ordered = sorted({v for v in values if v}, key=len, reverse=True)

    def mask(text: str) -> str:
        for value in ordered:
            text = text.replace(value, "***")
        return text

    return mask


class _Session:
    def __init__(
        self,
        action: CompositeAction,
        inputs: dict[str, str],
        *,
        workspace: Path,
        github: dict[str, Any],
        env: dict[str, str],
        base_env: dict[str, str],
        secrets: list[str],
        runner_temp: Path,
        timeout: float,
        tool_cache: Path | None = None,
    ) -> None:
        self.action = action
        self.inputs = inputs
        self.workspace = workspace
        self.github = github
        self.job_env = dict(env)  # env context: job env + GITHUB_ENV exports
        self.base_env = base_env
        self.secrets = secrets
        self.masks: list[str] = []
        self.runner_temp = runner_temp
        self.tool_cache = tool_cache
        self.timeout = timeout
        self.prepend_path: list[str] = []  # in order added; the last one is searched first
        self.steps_context: dict[str, dict[str, Any]] = {}
        self.annotations: list[Annotation] = []
        self.log: list[str] = []
        self.warnings: list[str] = list(action.warnings)
        self.failed = False

    # contexts -----------------------------------------------------------
    def mask(self, text: str) -> str:
        return _masker([*self.secrets, *self.masks])(text)

    def runner_context(self) -> dict[str, str]:
        machine = platform.machine().lower()
        arch = {"x86_64": "X64", "amd64": "X64", "aarch64": "ARM64", "arm64": "ARM64"}.get(
            machine, machine.upper()
        )
        return {"temp": str(self.runner_temp), "os": "Linux", "arch": arch}

    def contexts(self, *, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        steps = _CI({k: _CI(v) for k, v in self.steps_context.items()})
        for step in self.action.steps:  # a declared step that has not run reads as null
            if step.id and step.id.lower() not in steps:
                steps[step.id.lower()] = None
        return {
            "github": _Strict("github", self.github),
            "runner": _Strict("runner", self.runner_context()),
            "inputs": _CI(self.inputs),
            "env": dict(self.job_env if env is None else env),  # case-sensitive on Linux
            "steps": steps,
        }

    def render(self, text: str, *, env: Mapping[str, str] | None = None) -> str:
        ctx = _Ctx(self.contexts(env=env), self.failed)
        out = []
        for is_expr, part in _template_parts(text):
            out.append(to_string(_evaluate(parse_expression(part), ctx)) if is_expr else part)
        return "".join(out)

    # one step -----------------------------------------------------------
    def run_step(self, step: Step) -> StepRun:
        name = step.name or ("Run " + (step.run.strip().splitlines() or [""])[0])
        if step.name is not None:
            name = self.render(step.name)
        record = StepRun(
            index=step.index, id=step.id, name=name, outcome="skipped", conclusion="skipped"
        )

        # The step's env joins the env context before its condition and script are evaluated
        # (CompositeActionHandler merges it first), so if: and run: can read env.X of the step.
        step_env = dict(self.job_env)
        for key, value in step.env.items():
            step_env[key] = self.render(value)
        try:
            condition = _condition_ast(step.condition or "success()", step.label)
            go = _truthy(_evaluate(condition, _Ctx(self.contexts(env=step_env), self.failed)))
        except RunnerError as exc:
            if "not modeled" in str(exc):
                raise
            record.outcome = record.conclusion = "failure"
            record.errors.append(f"the condition could not be evaluated: {exc}")
            record.log.append(
                self.mask(f"##[error]{step.label}: the condition could not be evaluated: {exc}")
            )
            return record
        if not go:
            self._record_context(step, record)
            return record

        script = self.render(step.run, env=step_env)
        wd_text = (
            self.render(step.working_directory, env=step_env)
            if step.working_directory is not None
            else ""
        )
        working_directory = (self.workspace / wd_text) if wd_text else self.workspace
        record.script, record.working_directory = script, working_directory

        files_dir = self.runner_temp / "_runner_file_commands"
        files_dir.mkdir(parents=True, exist_ok=True)
        suffix = str(uuid.uuid4())
        files = {
            "path": files_dir / f"add_path_{suffix}",
            "env": files_dir / f"set_env_{suffix}",
            "output": files_dir / f"set_output_{suffix}",
            "step_summary": files_dir / f"step_summary_{suffix}",
            "state": files_dir / f"save_state_{suffix}",
        }
        for file in files.values():
            file.write_bytes(b"")
        record.files = files
        script_path = self.runner_temp / f"{uuid.uuid4()}.sh"
        script_path.write_text(script, encoding="utf-8")
        record.script_path = script_path

        process_env = dict(self.base_env)
        process_env.update(step_env)
        runtime = {
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_OUTPUT": str(files["output"]),
            "GITHUB_ENV": str(files["env"]),
            "GITHUB_PATH": str(files["path"]),
            "GITHUB_STEP_SUMMARY": str(files["step_summary"]),
            "GITHUB_STATE": str(files["state"]),
            "RUNNER_TEMP": str(self.runner_temp),
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": self.runner_context()["arch"],
        }
        if self.tool_cache is not None:
            runtime["RUNNER_TOOL_CACHE"] = str(self.tool_cache)
        for key, value in self.github.items():  # the runner's GitHubContext allow-list
            if key in _GITHUB_ENV_KEYS and isinstance(value, (str, bool, int, float)):
                runtime[f"GITHUB_{key.upper()}"] = to_string(value)
        process_env.update(runtime)
        if self.prepend_path:
            base_path = process_env.get("PATH", "")
            process_env["PATH"] = os.pathsep.join(
                [*reversed(self.prepend_path), *([base_path] if base_path else [])]
            )
        record.env = process_env

        bash = shutil.which("bash", path=process_env.get("PATH", ""))
        if bash is None:
            raise RunnerError(
                f"{step.label}: bash is not on PATH ({process_env.get('PATH', '')!r})"
            )
        record.argv = [bash, "--noprofile", "--norc", "-e", "-o", "pipefail", str(script_path)]

        # The runner prints the step before running it: the script and the env, masked.
        first = script.lstrip(" \t\r\n").splitlines()[0] if script.strip() else ""
        header = [f"##[group]Run {first}", *script.replace("\r\n", "\n").rstrip("\n").split("\n")]
        header.append(f"shell: {bash} --noprofile --norc -e -o pipefail {{0}}")
        if step_env:
            header += ["env:"] + [f"  {k}: {v}" for k, v in step_env.items()]
        header.append("##[endgroup]")
        record.log.extend(self.mask(line) for line in header)

        if not working_directory.is_dir():
            record.exit_code = None
            record.outcome = "failure"
            record.errors.append(f"working directory {working_directory} does not exist")
            record.log.append(
                f"##[error]An error occurred trying to start process '{bash}' with working directory '{working_directory}'. No such file or directory"
            )
        else:
            started = time.monotonic()
            record.exit_code, lines = self._execute(
                record.argv, working_directory, process_env, step.label
            )
            record.seconds = time.monotonic() - started
            record.stdout = "".join(text for stream, text in lines if stream == "stdout")
            record.stderr = "".join(text for stream, text in lines if stream == "stderr")
            self._commands(step, record, lines)
            record.outcome = "success" if record.exit_code == 0 else "failure"
            if record.exit_code != 0:
                record.log.append(f"##[error]Process completed with exit code {record.exit_code}.")

        self._file_commands(step, record)
        if record.errors and record.outcome == "success":
            record.outcome = "failure"
        record.conclusion = (
            "success" if (record.outcome == "success" or step.continue_on_error) else "failure"
        )
        self._record_context(step, record)
        return record

    def _record_context(self, step: Step, record: StepRun) -> None:
        if step.id:
            self.steps_context[step.id.lower()] = {
                "outputs": _CI(record.outputs),
                "outcome": record.outcome,
                "conclusion": record.conclusion,
            }

    def _execute(
        self, argv: list[str], cwd: Path, env: dict[str, str], label: str
    ) -> tuple[int, list[tuple[str, str]]]:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ, "stdout")
        selector.register(process.stderr, selectors.EVENT_READ, "stderr")
        pending = {"stdout": b"", "stderr": b""}
        lines: list[tuple[str, str]] = []
        deadline = time.monotonic() + self.timeout
        open_streams = 2
        while open_streams:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.killpg(process.pid, signal.SIGKILL)  # the group this call started
                process.wait()
                raise RunnerError(f"{label} did not finish within {self.timeout} s (killed)")
            for key, _ in selector.select(timeout=min(remaining, 1.0)):
                stream = key.data
                chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                    if pending[stream]:
                        lines.append((stream, pending[stream].decode("utf-8", errors="replace")))
                        pending[stream] = b""
                    continue
                pending[stream] += chunk
                while b"\n" in pending[stream]:
                    line, pending[stream] = pending[stream].split(b"\n", 1)
                    lines.append((stream, line.decode("utf-8", errors="replace") + "\n"))
        selector.close()
        process.stdout.close()
        process.stderr.close()
        try:
            return process.wait(timeout=max(deadline - time.monotonic(), 0.1)), lines
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise RunnerError(f"{label} did not finish within {self.timeout} s (killed)") from None

    def _commands(self, step: Step, record: StepRun, lines: list[tuple[str, str]]) -> None:
        registered = set(_REGISTERED)
        stop_token: str | None = None
        for _, raw in lines:
            line = raw.rstrip("\n").rstrip("\r")
            if stop_token is not None:
                if line.strip() == f"::{stop_token}::":
                    stop_token = None
                    record.log.append(self.mask(line))
                    continue
                record.log.append(self.mask(line))
                continue
            if line.lstrip().startswith("::stop-commands::"):
                token = line.lstrip()[len("::stop-commands::") :]
                if not token or token in registered or token.lower() == "pause-logging":
                    record.errors.append(f"invalid stop-commands token {token!r}")
                    record.log.append(
                        self.mask(f"##[error]Unable to process command '{line}' successfully.")
                    )
                    continue
                stop_token = token
                if len(token) > 6:
                    self.masks.append(token)
                record.log.append(self.mask(line))
                continue
            parsed = _parse_command(line, registered)
            if parsed is None:
                record.log.append(self.mask(line))
                continue
            name, props, data = parsed
            if name in ("set-output", "set-env", "save-state", "add-path"):
                raise RunnerError(
                    f"{step.label} printed the deprecated ::{name}:: command; write to the "
                    f"$GITHUB_{'OUTPUT' if name == 'set-output' else 'ENV' if name == 'set-env' else 'STATE' if name == 'save-state' else 'PATH'} file instead"
                )
            if name in ("add-matcher", "remove-matcher", "internal-set-repo-path"):
                raise RunnerError(f"{step.label}: ::{name}:: is not supported by this emulator")
            if name == "add-mask":
                if not data.strip():
                    record.log.append(
                        "##[warning]Can't add secret mask for empty string in ##[add-mask] command."
                    )
                    continue
                self.masks.append(data)
                self.masks.extend(p.strip() for p in re.split(r"[\r\n]+", data) if p.strip())
            elif name in ("error", "warning", "notice"):
                masked_props = {k: self.mask(v) for k, v in props.items()}
                self.annotations.append(Annotation(name, self.mask(data), masked_props, step.index))
                record.log.append(self.mask(f"##[{name}]{data}"))
            elif name == "debug":
                record.log.append(self.mask(f"##[debug]{data}"))
            elif name == "group":
                record.log.append(self.mask(f"##[group]{data}"))
            elif name == "endgroup":
                record.log.append("##[endgroup]")
            elif name == "echo" and data.lower() not in ("on", "off"):
                record.errors.append(f"Invalid echo command value {data!r}")

    def _file_commands(self, step: Step, record: StepRun) -> None:
        files = record.files
        if not files:
            return
        for kind in ("path", "env", "step_summary", "output"):  # the runner's extension order
            file = files[kind]
            if not file.exists():
                continue
            try:
                if kind == "path":
                    for line in file.read_text(encoding="utf-8").splitlines():
                        if line:
                            if line in self.prepend_path:
                                self.prepend_path.remove(line)
                            self.prepend_path.append(line)
                elif kind == "env":
                    for key, value in parse_env_file(file.read_text(encoding="utf-8")):
                        if key.upper() == "NODE_OPTIONS":
                            msg = "Can't store NODE_OPTIONS output parameter using '$GITHUB_ENV' command."
                            self.annotations.append(Annotation("error", msg, {}, step.index))
                            continue
                        self.job_env[key] = value
                elif kind == "step_summary":
                    data = file.read_bytes()
                    if len(data) > SUMMARY_LIMIT:
                        msg = f"$GITHUB_STEP_SUMMARY upload aborted, supports content up to a size of {SUMMARY_LIMIT // 1024}k, got {len(data) // 1024}k."
                        self.annotations.append(Annotation("error", msg, {}, step.index))
                    else:
                        record.summary = data.decode("utf-8", errors="replace")
                else:
                    for key, value in parse_env_file(file.read_text(encoding="utf-8")):
                        record.outputs[key] = value
            except RunnerError as exc:
                name = {
                    "path": "path",
                    "env": "env",
                    "step_summary": "step_summary",
                    "output": "output",
                }[kind]
                record.errors.append(f"Unable to process file command '{name}' successfully. {exc}")
                record.log.append(
                    self.mask(f"##[error]Unable to process file command '{name}' successfully.")
                )
                record.log.append(self.mask(f"##[error]{exc}"))


_GITHUB_ENV_KEYS = frozenset(
    {
        "action_path", "action_ref", "action_repository", "action", "actor", "actor_id",
        "api_url", "base_ref", "event_name", "event_path", "graphql_url", "head_ref", "job",
        "ref_name", "ref_protected", "ref_type", "ref", "repository", "repository_id",
        "repository_owner", "repository_owner_id", "retention_days", "run_attempt", "run_id",
        "run_number", "server_url", "sha", "triggering_actor", "workflow", "workflow_ref",
        "workflow_sha", "workspace",
    }
)  # fmt: skip


def run_action(
    action: CompositeAction | str | os.PathLike[str],
    *,
    inputs: Mapping[str, str | bool | int] | None = None,
    workspace: str | os.PathLike[str],
    event_name: str = "push",
    event: Mapping[str, Any] | None = None,
    sha: str | None = None,
    ref: str | None = None,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    github: Mapping[str, Any] | None = None,
    runner_temp: str | os.PathLike[str] | None = None,
    tool_cache: str | os.PathLike[str] | None = None,
    enforce_required: bool = True,
    strict_inputs: bool = True,
    timeout: float = 600.0,
) -> ActionRun:
    """Run a composite action as a step ``uses: ./action`` with ``with: inputs``.

    ``env`` is the env context of the calling step (workflow, job and step ``env:``);
    ``base_env`` is the runner machine's own environment (default: PATH, HOME, LANG and a
    few more from this process, never its GITHUB_*/RUNNER_*/INPUT_* variables);
    ``secrets`` are values the runner masks from the start, as it does every
    ``${{ secrets.X }}``; ``github`` adds or overrides properties of the github context
    (``repository``, ``token``, ``run_id`` ...). ``sha`` and ``ref`` default to the push
    payload's ``after`` and ``ref``.
    """
    if not isinstance(action, CompositeAction):
        action = load_action(action)
    workspace = Path(workspace).resolve()
    if not workspace.is_dir():
        raise RunnerError(f"workspace {workspace} is not a directory")
    event = dict(event or {})
    if sha is None:
        sha = event.get("after") if event_name == "push" else None
    if ref is None:
        if event_name == "push":
            ref = event.get("ref")
        elif event_name in ("pull_request", "pull_request_target") and "number" in event:
            ref = f"refs/pull/{event['number']}/merge"
    if not sha or not ref:
        raise RunnerError(
            "sha and ref are needed (for a pull_request, sha is the test merge commit)"
        )

    warnings: list[str] = []
    given: dict[str, str] = {}
    for key, value in (inputs or {}).items():
        if key.lower() in given:
            raise RunnerError(f"input {key!r} is given twice (input names are case-insensitive)")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int):
            value = str(value)
        elif not isinstance(value, str):
            raise RunnerError(
                f"input {key!r}: with: values are strings, got {type(value).__name__}"
            )
        given[key.lower()] = value
    unexpected = [k for k in given if k not in action.inputs]
    if unexpected:
        msg = (
            f"Unexpected input(s) '{', '.join(unexpected)}', valid inputs are "
            f"['{', '.join(i.name for i in action.inputs.values())}']"
        )
        if strict_inputs:
            raise RunnerError(msg + " (GitHub only warns; strict_inputs=False to do the same)")
        warnings.append(msg)

    temp_root = (
        Path(runner_temp)
        if runner_temp is not None
        else Path(tempfile.mkdtemp(prefix="runner-temp-"))
    )
    temp_root.mkdir(parents=True, exist_ok=True)
    temp_root = temp_root.resolve()
    event_path = temp_root / "_github_workflow" / "event.json"
    event_path.parent.mkdir(parents=True, exist_ok=True)
    event_path.write_text(json.dumps(event, indent=2), encoding="utf-8")

    github_ctx: dict[str, Any] = {
        "action_path": str(action.path),
        "workspace": str(workspace),
        "event_name": event_name,
        "event": _ci_tree(event),
        "event_path": str(event_path),
        "sha": sha,
        "ref": ref,
        "ref_name": ref.split("/", 2)[2] if ref.count("/") >= 2 else ref,
        "ref_type": "tag" if ref.startswith("refs/tags/") else "branch",
    }
    if event_name in ("pull_request", "pull_request_target") and isinstance(
        event.get("pull_request"), dict
    ):
        pr = event["pull_request"]
        github_ctx["base_ref"] = pr.get("base", {}).get("ref", "")
        github_ctx["head_ref"] = pr.get("head", {}).get("ref", "")
    for key, value in (github or {}).items():
        github_ctx[key.lower()] = value

    if base_env is None:
        base_env = {k: os.environ[k] for k in _BASE_ENV_KEYS if k in os.environ}
    leaked = [
        k for k in base_env if k.startswith(("GITHUB_", "RUNNER_", "INPUT_", "STATE_", "ACTIONS_"))
    ]
    if leaked:
        raise RunnerError(
            f"base_env holds runner-owned variables {leaked}; pass them through github=/env= instead"
        )

    session = _Session(
        action,
        {},
        workspace=workspace,
        github=github_ctx,
        env=dict(env or {}),
        base_env=dict(base_env),
        secrets=[s for s in secrets if s],
        runner_temp=temp_root,
        timeout=timeout,
        tool_cache=None if tool_cache is None else Path(tool_cache),
    )
    values: dict[str, str] = {}
    for key, item in action.inputs.items():
        if key in given:
            values[item.name] = given[key]
            if item.deprecation:
                warnings.append(
                    f"Input '{item.name}' has been deprecated with message: {item.deprecation}"
                )
        elif item.default is not None:
            values[item.name] = session.render(item.default)
        else:
            if item.required and enforce_required:
                raise RunnerError(
                    f"Input required and not supplied: {item.name} (GitHub itself does not enforce "
                    "required: true; enforce_required=False to do the same)"
                )
            values[item.name] = ""
    session.inputs = values
    session.warnings.extend(warnings)

    records: list[StepRun] = []
    for step in action.steps:
        record = session.run_step(step)
        records.append(record)
        session.log.extend(record.log)
        if record.conclusion == "failure":
            session.failed = True
            if any(e.startswith("the condition could not be evaluated") for e in record.errors):
                break  # the runner stops the composite action on a condition error

    outputs: dict[str, str] = {}
    for out in action.outputs.values():
        outputs[out.name] = session.render(out.value)
    for out_name in action.outputs:
        for is_expr, inner in _template_parts(action.outputs[out_name].value):
            if not is_expr:
                continue
            for node in _walk(parse_expression(inner)):
                chain = _chain(node)
                if chain and len(chain) == 4 and chain[0] == "steps" and chain[2] == "outputs":
                    ctx = session.steps_context.get(chain[1])
                    if ctx is not None and chain[3] not in {k.lower() for k in ctx["outputs"]}:
                        session.warnings.append(
                            f"outputs.{action.outputs[out_name].name}: step {chain[1]} set no output {chain[3]}"
                        )

    return ActionRun(
        action=action,
        conclusion="failure" if session.failed else "success",
        inputs=values,
        outputs=outputs,
        steps=records,
        env=dict(session.job_env),
        path=list(reversed(session.prepend_path)),
        annotations=session.annotations,
        log=session.log,
        warnings=session.warnings,
        masks=list(session.masks),
        runner_temp=temp_root,
        event_path=event_path,
        secrets=list(session.secrets),
    )


def _ci_tree(value: Any) -> Any:
    """A JSON payload as the github context holds it: objects match keys without case."""
    if isinstance(value, dict):
        return _CI({k: _ci_tree(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_ci_tree(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# --------------------------------------------------------------------------- actions/checkout


def checkout(
    remote: str,
    dest: str | os.PathLike[str],
    *,
    sha: str,
    ref: str,
    fetch_depth: int = 1,
    env: Mapping[str, str] | None = None,
) -> Path:
    """Check out ``sha`` of ``remote`` into ``dest`` with the git commands that
    ``actions/checkout`` runs by default for the repository that triggered the workflow
    (src/ref-helper.ts, src/git-command-manager.ts): ``init``, ``remote add origin``, one
    ``fetch --depth=1`` of ``+SHA:refs/remotes/origin/BRANCH``, then
    ``checkout --force -B BRANCH refs/remotes/origin/BRANCH`` (so HEAD is a branch whose
    upstream is the very same commit) or, for ``refs/pull/N/merge``, a detached HEAD at
    ``refs/remotes/pull/N/merge``. ``remote`` should be a ``file://`` URL for a local
    repository, so that the fetch is really shallow."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    def git(*args: str) -> None:
        done = subprocess.run(
            ["git", *args], cwd=dest, env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            raise RunnerError(f"git {' '.join(args)} failed: {done.stderr.strip()}")

    git("init", "-q")
    git("remote", "add", "origin", remote)
    upper = ref.upper()
    start_point: str | None = None
    if fetch_depth <= 0:
        refspecs = ["+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"]
        if upper.startswith("REFS/PULL/"):
            refspecs.append(f"+{sha}:refs/remotes/pull/{ref[len('refs/pull/') :]}")
        depth: list[str] = []
    else:
        if upper.startswith("REFS/HEADS/"):
            refspecs = [f"+{sha}:refs/remotes/origin/{ref[len('refs/heads/') :]}"]
        elif upper.startswith("REFS/PULL/"):
            refspecs = [f"+{sha}:refs/remotes/pull/{ref[len('refs/pull/') :]}"]
        elif upper.startswith("REFS/TAGS/"):
            refspecs = [f"+{ref}:{ref}"]
        else:
            refspecs = [sha]
        depth = [f"--depth={fetch_depth}"]
    git(
        "-c",
        "protocol.version=2",
        "fetch",
        "--no-tags",
        "--prune",
        "--no-recurse-submodules",
        *depth,
        "origin",
        *refspecs,
    )
    if upper.startswith("REFS/HEADS/"):
        branch = ref[len("refs/heads/") :]
        target, start_point = branch, f"refs/remotes/origin/{branch}"
    elif upper.startswith("REFS/PULL/"):
        target = f"refs/remotes/pull/{ref[len('refs/pull/') :]}"
    elif upper.startswith("REFS/TAGS/"):
        target = ref
    else:
        target = sha
    if start_point:
        git("checkout", "--progress", "--force", "-B", target, start_point)
    else:
        git("checkout", "--progress", "--force", target)
    return dest
