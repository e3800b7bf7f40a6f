"""After the push: wait until the remote has accepted it, then update the pipelines.

git has no post-push hook. The pre-push hook builds and pushes the images, records
one pending "post-push" entry per ref to deploy, and starts a detached process that
waits, at most `[hooks] post_push_timeout` seconds, until the push has landed: the
remote-tracking ref reaches the pushed commit (git moves it once the remote has
accepted the push), or the remote itself names the commit (`git ls-remote`) once the
`git push` process has ended. Only then does it run the same selection with deploy
on; the images are found in the registry and nothing is rebuilt. A push that was
refused or never confirmed deploys nothing, and the ledger says why.

Every pending entry gets a final one (done, failed, rejected or timeout), even when
the process fails or is told to stop; first, the process writes its pid ("waiting"), so
that one killed outright shows in `pachhook status` as interrupted, with the command
that does the deploy by hand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from pachhook.errors import PachhookError, error_handler
from pachhook.repo.git import Repo, ls_remote, run
from pachhook.repo.selection import Selection
from pachhook.run import ledger

KIND = "post-push"
URL_VARIABLE = "PACHHOOK_PUSH_URL"  # the push URL of an unnamed remote, for the child only
LS_REMOTE_EVERY = 2.0  # seconds between asking the remote, when nothing local can tell


class PushProcess(NamedTuple):
    """The `git push` that ran the hook, so the waiting side knows when it has ended."""

    pid: int
    start: str  # the kernel's start time: a reused pid is not mistaken for the push

    @classmethod
    def find(cls) -> PushProcess | None:
        """The nearest `git push` among this process's ancestors (the hook's parent, or
        the pre-commit framework's); None where /proc cannot tell."""
        pid = os.getppid()
        for _ in range(6):
            info = _stat(pid)
            if info is None:
                return None
            comm, ppid, start = info
            if comm == "git" and b"push" in _argv(pid):
                return cls(pid, start)
            if ppid <= 1:
                return None
            pid = ppid
        return None

    def dry_run(self) -> bool:
        """`git push --dry-run` (or `-n`) runs the pre-push hook too, and pushes nothing."""
        for arg in _argv(self.pid)[2:]:
            if arg == b"--":
                break
            if arg == b"--dry-run" or (
                arg[:1] == b"-" and arg[1:2] != b"-" and b"n" in arg and arg[1:].isalpha()
            ):
                return True
        return False

    def alive(self) -> bool:
        info = _stat(self.pid, zombie_is_gone=True)
        return info is not None and info[2] == self.start

    @property
    def arg(self) -> str:
        return f"{self.pid}:{self.start}"

    @classmethod
    def parse(cls, text: str) -> PushProcess:
        pid, _, start = text.partition(":")
        return cls(int(pid), start)


def _stat(pid: int, *, zombie_is_gone: bool = False) -> tuple[str, int, str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    if zombie_is_gone and fields[0] == "Z":
        return None
    return comm, int(fields[1]), fields[19]


def _argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def redacted(url: str) -> str:
    """A URL without the credentials it may carry (`https://user:token@host/...`)."""
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=host))
    return url


class Job(NamedTuple):
    """One ref to deploy once its push has landed; stored in its pending entry."""

    id: str
    commit: str
    remote: str  # a remote's name, or a URL without credentials
    remote_ref: str  # refs/heads/...
    selection: Selection
    timeout: float

    @classmethod
    def new(
        cls, commit: str, remote: str, remote_ref: str, selection: Selection, timeout: float
    ) -> Job:
        return cls(uuid.uuid4().hex[:12], commit, remote, remote_ref, selection, timeout)

    def entry(self, state: str, **fields: Any) -> dict[str, Any]:
        return {
            "kind": KIND,
            "id": self.id,
            "state": state,
            "time": time.time(),
            "commit": self.commit,
            "remote": self.remote,
            "ref": self.remote_ref,
            "by_hand": self.by_hand,
            **fields,
        }

    def pending(self, log: Path) -> dict[str, Any]:
        selection = {
            "from": self.selection.from_ref,
            "to": self.selection.to_ref,
            "everything": self.selection.everything,
        }
        return self.entry("pending", selection=selection, timeout=self.timeout, log=str(log))

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> Job:
        selection = entry.get("selection") or {}
        return cls(
            id=str(entry["id"]),
            commit=str(entry["commit"]),
            remote=str(entry["remote"]),
            remote_ref=str(entry["ref"]),
            selection=Selection(
                from_ref=selection.get("from"),
                to_ref=selection.get("to"),
                everything=bool(selection.get("everything")),
            ),
            timeout=float(entry.get("timeout", 120)),
        )

    @property
    def branch(self) -> str:
        return self.remote_ref.removeprefix("refs/heads/")

    @property
    def by_hand(self) -> str:
        """The command that does this deploy by hand."""
        s = self.selection
        if s.everything:
            return f"pachhook run --all --from {s.to_ref} --to {s.to_ref}"
        return f"pachhook run --from {s.from_ref} --to {s.to_ref}"


# -- the pre-push side -----------------------------------------------------------------------


def start(
    repo: Repo,
    jobs: Sequence[Job],
    *,
    push: PushProcess | None,
    url: str | None,
    env: Mapping[str, str],
) -> Path:
    """Record the jobs as pending, then start the detached process that does them; its log."""
    log = ledger.logs_dir(repo.state_dir) / f"post-push-{jobs[0].id}.log"
    # Pending first: whatever happens to the process from here on, the ledger knows.
    for job in jobs:
        ledger.append(repo.state_dir, job.pending(log))
    args = [sys.executable, "-m", "pachhook", "hook", "post-push-deploy", *(j.id for j in jobs)]
    if push is not None:
        args += ["--push-process", push.arg]
    child_env = {**env, **({URL_VARIABLE: url} if url else {})}
    # Nothing is prompted for with no one to answer.
    child_env.setdefault("GIT_TERMINAL_PROMPT", "0")
    try:
        with open(log, "ab") as out:
            # A session of its own, and no descriptor of the hook's: git (and the
            # pre-commit framework, which reads the hook's output to its end) go on at once.
            subprocess.Popen(
                args,
                cwd=repo.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env=child_env,
            )
    except OSError as exc:
        for job in jobs:
            ledger.append(
                repo.state_dir,
                job.entry("failed", error=f"could not start the post-push process: {exc}"),
            )
        raise PachhookError(
            f"could not start the post-push process ({exc}); nothing will be deployed: "
            f"run {jobs[0].by_hand} once the push has landed"
        ) from None
    return log


# -- the detached side ---------------------------------------------------------------------


class Verdict(NamedTuple):
    state: str  # accepted | rejected | timeout
    reason: str


def tracking_commit(repo: Repo, remote: str, branch: str) -> str | None:
    """Where the remote-tracking ref of `branch` points, if there is one."""
    # For a URL rather than a remote's name the ref name is not valid: no answer.
    out = run(
        ["rev-parse", "--verify", "--quiet", f"refs/remotes/{remote}/{branch}"],
        repo.root,
        check=False,
    )
    return out.strip() or None


def remote_commit(repo: Repo, where: str, ref: str) -> tuple[str | None, str | None]:
    """(the commit the remote's `ref` is at, None if it has no such ref), or (None, why)
    when the remote could not be asked."""
    try:
        out = ls_remote(repo.root, where, ref)
    except PachhookError as exc:
        return None, exc.message
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha, None
    return None, None


def wait_for_acceptance(
    repo: Repo,
    job: Job,
    *,
    where: str,
    push: PushProcess | None,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """Wait until the push of `job` has landed, has been refused, or `deadline` passes."""
    asked = float("-inf")
    while True:
        if tracking_commit(repo, job.remote, job.branch) == job.commit:
            return Verdict("accepted", f"{job.remote}/{job.branch} reached {job.commit[:12]}")
        ended = push is not None and not push.alive()
        late = clock() >= deadline
        # Ask the remote when the push is over (the last word), when time is up, or now
        # and then when no push process can be watched.
        if ended or late or (push is None and clock() - asked >= LS_REMOTE_EVERY):
            asked = clock()
            at, problem = remote_commit(repo, where, job.remote_ref)
            if at == job.commit:
                return Verdict("accepted", f"the remote's {job.remote_ref} is {job.commit[:12]}")
            if ended or late:
                if problem:
                    state = "rejected" if ended else "timeout"
                    return Verdict(state, f"could not confirm the push: {problem}")
                found = f"is at {at[:12]}" if at else "does not exist"
                if ended:
                    return Verdict(
                        "rejected",
                        f"the push ended and the remote's {job.remote_ref} {found}, "
                        f"not {job.commit[:12]}",
                    )
                return Verdict(
                    "timeout",
                    f"after {job.timeout:.0f}s the remote's {job.remote_ref} {found}, "
                    f"not {job.commit[:12]}",
                )
        sleep(0.1)


def deploy(
    repo: Repo,
    ids: Sequence[str],
    *,
    push: PushProcess | None,
    env: Mapping[str, str],
    say: Callable[[str], None],
) -> int:
    """The detached process: for each pending job, wait for its push, then deploy it."""
    from pachhook.hooks.policy import hooks_prune
    from pachhook.run.executor import RunOptions
    from pachhook.run.runner import run_selection

    latest = {
        e.get("id"): e
        for e in ledger.read(repo.state_dir)
        if e.get("kind") == KIND and e.get("state") == "pending"
    }
    jobs = [Job.from_entry(latest[i]) for i in ids if i in latest]
    open_jobs = {job.id: job for job in jobs}
    # With this process's pid: one killed outright shows as interrupted, not pending forever.
    for job in jobs:
        ledger.append(repo.state_dir, job.entry("waiting", pid=os.getpid(), timeout=job.timeout))

    def final(job: Job, state: str, **fields: Any) -> None:
        open_jobs.pop(job.id, None)
        ledger.append(repo.state_dir, job.entry(state, **fields))
        detail = fields.get("reason") or fields.get("error") or ""
        say(f"{job.remote_ref} at {job.commit[:12]}: {state}: {detail}")

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    where = env.get(URL_VARIABLE)
    started = time.monotonic()
    outcome = 0

    def fail_open_jobs(message: str, code: int) -> None:
        nonlocal outcome
        outcome = code
        for job in list(open_jobs.values()):
            final(job, "failed", error=f"{message}; run {job.by_hand} once the push has landed")

    try:
        with error_handler(fail_open_jobs, traceback_to=sys.stderr):
            for job in jobs:
                say(f"waiting for {job.remote} to accept {job.remote_ref} at {job.commit[:12]}")
                verdict = wait_for_acceptance(
                    repo, job, where=where or job.remote, push=push, deadline=started + job.timeout
                )
                if verdict.state != "accepted":
                    final(
                        job,
                        verdict.state,
                        reason=f"{verdict.reason}; nothing was deployed "
                        f"(once the commit is on the remote: {job.by_hand})",
                    )
                    continue
                say(f"accepted: {verdict.reason}")
                options = RunOptions(prune=hooks_prune(repo, env))
                record = run_selection(repo, job.selection, options, env, trigger=KIND)
                applied = sum(1 for p in record.pipelines if p.status == "applied")
                if record.ok:
                    final(job, "done", run=record.id, reason=f"{applied} pipeline(s) applied")
                else:
                    final(job, "failed", run=record.id, error=record.error)
    except BaseException:
        # Stopped (a signal, Ctrl-C), or a bug raised for its traceback: still no job is
        # left pending.
        fail_open_jobs("the post-push process was stopped", 1)
        raise
    return outcome
