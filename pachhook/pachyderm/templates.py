"""Jsonnet pipeline templates of the configuration, instantiated at a source.

`[[pipelines.template]]` names a template file and its args, as `pachctl create pipeline
--jsonnet FILE --arg K=V...` would. An instance's result (one spec, or an array of
specs) becomes pipelines like the documents of a spec file, with the instance as their
origin. Results are cached (template_cache.py): a template is evaluated only where a
file it read changed, and all the templates that must be evaluated share one evaluator
process (jsonnet.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from pachhook.config import Config, TemplateConfig
from pachhook.errors import InputError, located
from pachhook.pachyderm import template_cache
from pachhook.pachyderm.specs import Pipeline, parse_documents
from pachhook.repo.source import CommitSource, Source


class Instance(NamedTuple):
    """One evaluated template instance."""

    template: TemplateConfig
    documents: list[dict[str, Any]]
    trace: template_cache.Trace  # (path, mode, blob id) of every file read, the template first

    @property
    def files(self) -> tuple[str, ...]:
        """The template, then every other file its evaluation read (imports, symlinks)."""
        rest = sorted(path for path, _, _ in self.trace if path != self.template.file)
        return (self.template.file, *rest)

    @property
    def id(self) -> str:
        return template_cache.instance_id(self.template.file, self.template.args)

    def pipelines(self, default_project: str) -> list[Pipeline]:
        return parse_documents(
            self.template.file, self.template.label, self.files, self.documents, default_project
        )


def instantiate(
    source: Source,
    config: Config,
    templates: Sequence[TemplateConfig] | None = None,
    *,
    skip_failures: bool = False,
) -> list[Instance]:
    """The configuration's template instances (or just `templates`) at `source`, from the
    cache where a trace holds, else evaluated. `skip_failures`: leave out an instance
    that cannot be evaluated here (as at the base of a change) instead of failing."""
    wanted = list(config.pipelines.templates if templates is None else templates)
    if not wanted:
        return []
    from pachhook.pachyderm import jsonnet

    state_dir = source.repo.state_dir
    evaluator_stamp = jsonnet.stamp()
    found: dict[int, Instance] = {}
    misses: list[tuple[int, str]] = []
    for n, template in enumerate(wanted):
        if template.file not in source.path_set:
            if skip_failures:
                continue
            raise InputError(
                f"{located(config.path or 'pachhook.toml', template.line)}: pipelines.template: "
                f"{template.file!r} does not exist in {source.label}; fix the path (relative "
                "to the repository root) or add the template"
            )
        key = template_cache.entry_key(
            evaluator_stamp, template.file, source.entry(template.file).oid, template.args
        )
        hit = template_cache.lookup(state_dir, key, lambda trace: _holds(source, trace))
        if hit is not None:
            found[n] = Instance(template, hit.documents, hit.trace)
        else:
            misses.append((n, key))
    if misses:
        found.update(_evaluate(source, config, wanted, misses, skip_failures))
    instances = [found[n] for n in range(len(wanted)) if n in found]
    _remember(source, config, instances)
    return instances


def _holds(source: Source, trace: template_cache.Trace) -> bool:
    paths = source.path_set
    for path, mode, blob in trace:
        if path not in paths:
            return False
        entry = source.entry(path)
        if (entry.mode, entry.oid) != (mode, blob):
            return False
    return True


def _evaluate(
    source: Source,
    config: Config,
    wanted: list[TemplateConfig],
    misses: list[tuple[int, str]],
    skip_failures: bool,
) -> dict[int, Instance]:
    from pachhook.pachyderm.jsonnet import Evaluator, Job, TemplateError

    paths = source.path_set

    def read(path: str) -> bytes | None:
        # Only the source's files: never an ignored file of the working tree, nor a
        # folder of a commit read as a blob.
        return source.read(path) if path in paths else None

    def is_link(path: str) -> bool:
        return path in paths and source.is_link(path)

    found = {}
    limits = config.pipelines
    with Evaluator(
        read, is_link, timeout=limits.template_timeout, memory_mb=limits.template_memory_mb
    ) as evaluator:
        for n, key in misses:
            template = wanted[n]
            try:
                result = evaluator.evaluate(Job(template.file, template.args, template.label))
                documents = _documents(template, result.value)
            except TemplateError:
                if skip_failures:
                    continue
                raise
            trace = tuple(
                (path, source.entry(path).mode, blob) for path, blob in result.reads.items()
            )
            template_cache.store(source.repo.state_dir, key, template.label, trace, documents)
            found[n] = Instance(template, documents, trace)
    return found


def _documents(template: TemplateConfig, value: Any) -> list[dict[str, Any]]:
    """One spec object or an array of spec objects, as pachd's RenderTemplate takes."""
    from pachhook.pachyderm.jsonnet import TemplateError

    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return value
    if isinstance(value, list) and not value:
        what = "an empty array"
    elif isinstance(value, list):
        index, item = next((i, v) for i, v in enumerate(value) if not isinstance(v, dict))
        what = f"an array whose element {index} is {_kind(item)}"
    else:
        what = _kind(value)
    raise TemplateError(
        f"{template.label}: the template returned {what}; return a pipeline spec (an object) "
        "or an array of specs"
    )


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list) else "an object"


def _remember(source: Source, config: Config, instances: list[Instance]) -> None:
    """Record the traces in the index, for the hook's first look (plan/relevance.py)."""
    index = template_cache.Index(source.repo.state_dir)
    commit = source.commit if isinstance(source, CommitSource) else None
    for instance in instances:
        index.note(instance.id, instance.trace, commit)
    index.keep_only(template_cache.instance_id(t.file, t.args) for t in config.pipelines.templates)
    index.save()
