"""The cheap first look: could any changed path matter?

A changed path matters when it lies in an image's context, is an image's Dockerfile or
the ignore file beside it (BuildKit's `<Dockerfile>.dockerignore`, which may lie outside
the context), may hold pipeline specs, is a Jsonnet template or a file a template's
evaluation read, or is a configuration file. Everything else is left unread: a hook on a
commit that touches none of these stops here.

What a template reads is known only from evaluating it: the traces its evaluations left
in the template cache (templates_unchanged) tell, without evaluating, loading Jsonnet or
reading a blob, whether a change can reach one.

What the answer needs of the configuration is small, and the same for the same config
file: it is kept under the state dir keyed by the file's text (and the environment
variables that feed the configuration), so a no-op run neither imports a TOML parser nor
parses a 100-image config.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from pachhook.config import Config, Found, files_read, parse_found
from pachhook.pachyderm.specs import spec_candidate
from pachhook.repo.cachefile import read_json, write_json
from pachhook.repo.git import Repo, zsplit
from pachhook.repo.selection import ChangeSet

CACHE = "relevance.json"  # under the state dir
CACHE_KEPT = 8  # configurations remembered (branches switched back and forth)
IGNORE_SUFFIX = ".dockerignore"  # BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile
ENV_INPUTS = ("PACHYDERM_PIPELINE_FILES", "DOCKER_IMAGE_TAG")  # environment that shapes a config


class Relevance(NamedTuple):
    config_files: tuple[str, ...]
    contexts: tuple[str, ...]  # "" for the root, else "folder/"
    dockerfiles: tuple[str, ...]
    include: tuple[str, ...] | None
    exclude: tuple[str, ...]
    images: tuple[str, ...]  # names, for the plan that reads nothing
    templates: tuple[str, ...] = ()  # template files
    instances: tuple[str, ...] = ()  # template instances, as the template cache names them

    @classmethod
    def of(cls, config: Config) -> Relevance:
        from pachhook.pachyderm.template_cache import instance_id

        templates = config.pipelines.templates
        return cls(
            config_files=files_read(config),
            contexts=tuple("" if i.context == "." else i.context + "/" for i in config.images),
            dockerfiles=tuple(i.dockerfile_path for i in config.images),
            include=config.pipelines.include,
            exclude=config.pipelines.exclude,
            images=tuple(i.name for i in config.images),
            templates=tuple(dict.fromkeys(t.file for t in templates)),
            instances=tuple(instance_id(t.file, t.args) for t in templates),
        )

    def matters(self, paths: Iterable[str]) -> list[str]:
        """The paths that could matter; everything else is left unread."""
        configs = set(self.config_files)
        dockerfiles = set(self.dockerfiles)
        templates = set(self.templates)
        return [
            path
            for path in paths
            if path in configs
            or path in dockerfiles
            or path in templates
            or path.removesuffix(IGNORE_SUFFIX) in dockerfiles
            or any(path.startswith(c) for c in self.contexts)
            or spec_candidate(path, self.include, self.exclude)
        ]


def relevance(
    found: Found, env: Mapping[str, str], state_dir: Path
) -> tuple[Relevance, Config | None]:
    """What the first look needs of `found`, from the cache when it knows this config;
    the parsed config too when it had to be parsed (None otherwise)."""
    key = _key(found, env)
    cache = _read(state_dir)
    known = cache.get(key)
    if isinstance(known, list) and len(known) == len(Relevance._fields):
        include = known[3]
        return Relevance(
            tuple(known[0]),
            tuple(known[1]),
            tuple(known[2]),
            tuple(include) if include is not None else None,
            tuple(known[4]),
            tuple(known[5]),
            tuple(known[6]),
            tuple(known[7]),
        ), None
    config = parse_found(found, env)
    answer = Relevance.of(config)
    cache.pop(key, None)
    cache[key] = list(answer)
    _write(state_dir, dict(list(cache.items())[-CACHE_KEPT:]))
    return answer, config


def templates_unchanged(
    first_look: Relevance, changes: ChangeSet, repo: Repo, target: str | None
) -> bool:
    """Whether no changed path can reach any template instance, as far as the recorded
    traces tell (False when they cannot). `target`: the commit planned, if it is one.

    A trace that holds at the base (or at the target commit) and holds none of the
    changed paths holds at both ends: the evaluation would read the same bytes and give
    the same specs. Known commits are remembered; otherwise one `git ls-tree` at the base
    checks the traces."""
    if not first_look.instances:
        return True
    from pachhook.pachyderm.template_cache import Index, trace_holds

    index = Index(repo.state_dir)
    ends = {c for c in (changes.base, target) if c}
    unknown = []
    for instance in first_look.instances:
        traces = index.traces(instance)
        known = next((trace for trace, seen in traces if ends.intersection(seen)), None)
        if known is None:
            unknown.append((instance, traces))
        elif any(path in changes.paths for path, _, _ in known):
            return False
    if not unknown:
        return True
    paths = sorted({path for _, ts in unknown for trace, _ in ts for path, _, _ in trace})
    if changes.base is None or not paths or any(not ts for _, ts in unknown):
        return False  # never evaluated here: only an evaluation can tell
    entries = _entries_at(repo, changes.base, paths)
    for instance, traces in unknown:
        holding = next((trace for trace, _ in traces if trace_holds(trace, entries)), None)
        if holding is None or any(path in changes.paths for path, _, _ in holding):
            return False
        index.note(instance, holding, changes.base)
    index.save()
    return True


def _entries_at(repo: Repo, commit: str, paths: list[str]) -> dict[str, tuple[str, str]]:
    """(mode, blob id) of each of `paths` that `commit` has, in one git call."""
    out = repo.git("--literal-pathspecs", "ls-tree", "-z", "--full-tree", commit, "--", *paths)
    entries = {}
    for record in zsplit(out):
        meta, path = record.split("\t", 1)
        mode, kind, oid = meta.split(" ")
        if kind == "blob":
            entries[path] = (mode, oid)
    return entries


def _key(found: Found, env: Mapping[str, str]) -> str:
    """The config file's path and text, and the variables that feed it: compared whole,
    since hashing them would load OpenSSL on the no-op path for a few kilobytes."""
    return "\0".join([found.path or "", found.text, *(env.get(n, "") for n in ENV_INPUTS)])


def _read(state_dir: Path) -> dict[str, object]:
    data = read_json(state_dir / CACHE)
    return data if isinstance(data, dict) else {}


def _write(state_dir: Path, cache: dict[str, object]) -> None:
    write_json(state_dir / CACHE, cache)  # only a cache: lost, the config is parsed again
