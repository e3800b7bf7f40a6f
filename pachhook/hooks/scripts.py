"""Installing pachhook's hook scripts.

The scripts in `hooks/` are rendered by `script()`; `install` writes them into the
repository's hooks folder (`core.hooksPath` when set, else the common git dir's, which
every worktree shares) and keeps a hook that was there before as
`<hook>.pre-pachhook`, which the script runs first.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from pachhook.errors import InputError
from pachhook.repo.git import Repo, run

HOOK_TYPES = ("pre-push", "post-commit", "post-merge")
DEFAULT_HOOK_TYPES = ("pre-push",)
MARKER = "pachhook-hook"  # how `install` and `uninstall` tell pachhook's script from others
SAVED = ".pre-pachhook"  # suffix of a hook that was there before pachhook's

# -- the scripts ----------------------------------------------------------------------------

_WHAT = {
    "pre-push": "builds and pushes the images this push changes; updates their pipelines\n"
    "# once the remote has accepted the push",
    "post-commit": "shows what the new commit would build and update (see [hooks] post_commit)",
    "post-merge": "shows what the merge would build and update (see [hooks] post_commit)",
}

# The earlier hook runs first and, for pre-push, may stop the push; stdin (the ref lines)
# is read once and given to both.
_CHAIN_PRE_PUSH = """\
saved="${0%/*}/pre-push.pre-pachhook"
if [ -x "$saved" ]; then
    refs=$(cat)
    if [ -n "$refs" ]; then printf '%s\\n' "$refs"; fi | "$saved" "$@" || exit $?
    run_pachhook "$@" <<PACHHOOK_REFS
$refs
PACHHOOK_REFS
fi
run_pachhook "$@"
"""

_CHAIN = """\
saved="${{0%/*}}/{hook}.pre-pachhook"
if [ -x "$saved" ]; then
    "$saved" "$@"
fi
run_pachhook "$@"
"""

_TEMPLATE = """\
#!/bin/sh
# {marker}: {hook}
# pachhook's {hook} hook: {what}.
# Written by `pachhook install`, removed by `pachhook uninstall`.
PACHHOOK_PYTHON={python}
PACHHOOK_OPTIONS={options}

run_pachhook() {{
    # The interpreter pachhook was installed with, else pachhook on PATH.
    if [ -n "$PACHHOOK_PYTHON" ] && [ -x "$PACHHOOK_PYTHON" ]; then
        exec "$PACHHOOK_PYTHON" -m pachhook hook {hook} $PACHHOOK_OPTIONS "$@"
    fi
    if command -v pachhook >/dev/null 2>&1; then
        exec pachhook hook {hook} $PACHHOOK_OPTIONS "$@"
    fi
    echo "pachhook: not found on PATH${{PACHHOOK_PYTHON:+ nor in $PACHHOOK_PYTHON}}; install it and run pachhook install again{bypass}" >&2
    exit {missing_exit}
}}

{chain}"""


def script(hook: str, python: str = "", options: Sequence[str] = ()) -> str:
    """The hook script; `python`, when given, is the interpreter that runs pachhook."""
    chain = _CHAIN_PRE_PUSH if hook == "pre-push" else _CHAIN.format(hook=hook)
    return _TEMPLATE.format(
        marker=MARKER,
        hook=hook,
        what=_WHAT[hook],
        python=shlex.quote(python),
        options=shlex.quote(" ".join(options)),
        # A missing tool must not push code whose images were never built; commits go on.
        bypass=", or push without it: git push --no-verify" if hook == "pre-push" else "",
        missing_exit=1 if hook == "pre-push" else 0,
        chain=chain,
    )


# -- install and uninstall ------------------------------------------------------------------


def hooks_dir(repo: Repo) -> Path:
    """Where git runs hooks from: `core.hooksPath` when set, else `<common dir>/hooks`."""
    out = run(["rev-parse", "--git-path", "hooks"], repo.root).strip()
    path = Path(out)
    return path if path.is_absolute() else (repo.root / path).resolve()


def is_ours(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return MARKER.encode() in handle.read(512)
    except OSError:
        return False


def _write_executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.pachhook-tmp")
    temporary.write_text(text)
    temporary.chmod(0o755)
    os.replace(temporary, path)


def _describe(path: Path, repo: Repo) -> str:
    try:
        return str(path.relative_to(repo.root))
    except ValueError:
        return str(path)


def install(
    repo: Repo,
    hooks: Iterable[str],
    *,
    python: str,
    options: Sequence[str] = (),
    force: bool = False,
) -> list[str]:
    """Install the hook scripts; one line per hook saying what was done.

    A hook that is not pachhook's is kept as `<hook>.pre-pachhook` and runs first. When
    that name is taken too, nothing is overwritten unless `force` (the earlier saved
    hook is then replaced by the current one)."""
    folder = hooks_dir(repo)
    lines = []
    for hook in hooks:
        path = folder / hook
        saved = folder / f"{hook}{SAVED}"
        where = _describe(path, repo)
        text = script(hook, python, options if hook == "pre-push" else ())
        exists = path.exists() or path.is_symlink()
        if not exists:
            _write_executable(path, text)
            note = f"; {saved.name} runs first" if saved.exists() else ""
            lines.append(f"{hook}: installed {where}{note}")
            continue
        if is_ours(path):
            _write_executable(path, text)
            lines.append(f"{hook}: updated {where}")
            continue
        if (saved.exists() or saved.is_symlink()) and not force:
            raise InputError(
                f"{where}: not pachhook's, and {saved.name} beside it is taken too; "
                f"move one of them away, or pass --force to replace {saved.name} with {hook}"
            )
        os.replace(path, saved)
        _write_executable(path, text)
        runs = " (not executable: git did not run it, and pachhook will not)"
        if os.access(saved, os.X_OK):
            runs = "; it runs first"
        lines.append(f"{hook}: installed {where}; kept your earlier hook as {saved.name}{runs}")
    return lines


def uninstall(repo: Repo, hooks: Iterable[str]) -> list[str]:
    """Remove pachhook's scripts and put back what was there before; one line per hook."""
    folder = hooks_dir(repo)
    lines = []
    for hook in hooks:
        path = folder / hook
        saved = folder / f"{hook}{SAVED}"
        where = _describe(path, repo)
        present = path.exists() or path.is_symlink()
        if present and not is_ours(path):
            lines.append(f"{hook}: {where} is not pachhook's; left as it is")
            continue
        if present:
            path.unlink()
        if saved.exists() or saved.is_symlink():
            os.replace(saved, path)
            lines.append(f"{hook}: removed pachhook's hook; restored your earlier {where}")
        elif present:
            lines.append(f"{hook}: removed {where}")
    return lines
