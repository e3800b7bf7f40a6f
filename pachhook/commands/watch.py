"""`pachhook watch`: watch the working tree and, once a burst of changes settles, run the
same planner and executor as `pachhook run --working-tree`.

A save that leaves a file as it was, or that touches only files no image, spec or the
configuration uses, starts no run. A run never overlaps another: changes made during
a run make exactly one run after it. A broken configuration is reported and no run is
attempted until it is fixed; the watcher goes on with the last good one.

Ctrl-C or SIGTERM stops it once the run in progress (if any) is done, with exit code
0; a second one interrupts that run (exit 130 for SIGINT, 143 for SIGTERM). Pipelines
are only ever updated in one transaction at a run's end, so an interrupted run leaves
all of its changes on the cluster or none.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from pachhook.commands import config_note, env, repo

# The session (and with it the watcher) is imported in `run`: every command's start-up
# (a git hook's too) imports this module to build the parser.


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of milliseconds")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "watch",
        help="watch the working tree and run on every settled change",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--debounce",
        type=non_negative,
        default=200,
        metavar="MS",
        help="quiet period before a run, in milliseconds (default: 200; a folder that never "
        "stops changing runs after 10 s at most)",
    )
    parser.add_argument(
        "--no-deploy", action="store_true", help="build, push and verify images; update no pipeline"
    )
    parser.add_argument(
        "--once", action="store_true", help="exit after the first run, with its exit code"
    )
    parser.add_argument(
        "--poll",
        action="store_true",
        help="poll the folders instead of asking the kernel for events "
        "(network and some container filesystems)",
    )
    parser.add_argument(
        "--log",
        metavar="FILE",
        help="append all output to FILE (for running in the background)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also say why a change started no run",
    )
    parser.set_defaults(func=run)


def say(line: str) -> None:
    sys.stdout.write(f"{time.strftime('%H:%M:%S')} {line}\n")
    sys.stdout.flush()


def log_to(path: str) -> None:
    """Send this process's output (and its children's) to the end of `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def own_outputs(root: Path) -> list[str]:
    """Where this process's output goes, when that is a file in the repository: writing
    it must not look like a change (the log would feed itself)."""
    out = []
    for fd in (1, 2):
        try:
            target = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
        if target.is_relative_to(root):
            out.append(target.relative_to(root).as_posix())
    return out


def run(args: argparse.Namespace) -> int:
    from pachhook.watch.session import watch_and_run

    if args.log:
        log_to(args.log)
    # Lines reach a log file as they are written, not a buffer-full later.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    found = repo()
    config_note(found, True)
    return watch_and_run(
        found,
        env(),
        debounce=args.debounce,
        deploy=not args.no_deploy,
        once=args.once,
        poll=args.poll,
        verbose=args.verbose,
        log=args.log,
        own_files=own_outputs(found.root),
        say=say,
    )
