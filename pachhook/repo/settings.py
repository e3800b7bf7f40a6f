"""The operator's settings: environment variables `PACHHOOK_*`, else `git config pachhook.*`.

A repository's content is never read here. git config comes from the system file, the
user's global file and the repository's own `.git/config` (and any file they include),
none of which a commit can change: this is where the operator says where credentials
may go, how long to wait, and what the hooks do. Secrets never live in git config; the
host-bound registry credentials are environment variables only (docker/credentials.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pachhook.errors import InputError

BUILD_FAILURE_POLICIES = ("block", "warn")
COMMIT_HOOK_MODES = ("plan", "build", "off")


class Setting(NamedTuple):
    env: str  # the environment variable, which wins
    git: str  # the git config key, as documented (git itself ignores the case)
    kind: str  # flag | seconds | words | choice
    default: Any
    choices: tuple[str, ...] = ()


SETTINGS: dict[str, Setting] = {
    # Where credentials may go (pachyderm/connection.py, docker/registry.py).
    "allow_config_address": Setting(
        "PACHHOOK_ALLOW_CONFIG_ADDRESS", "pachhook.allowConfigAddress", "flag", False
    ),
    "allow_plaintext_token": Setting(
        "PACHHOOK_ALLOW_PLAINTEXT_TOKEN", "pachhook.allowPlaintextToken", "flag", False
    ),
    "token_realm_hosts": Setting(
        "PACHHOOK_TOKEN_REALM_HOSTS", "pachhook.tokenRealmHosts", "words", ()
    ),
    # How long to wait.
    "connect_timeout": Setting(
        "PACHHOOK_CONNECT_TIMEOUT", "pachhook.connectTimeout", "seconds", 10.0
    ),
    "rpc_timeout": Setting("PACHHOOK_RPC_TIMEOUT", "pachhook.rpcTimeout", "seconds", 30.0),
    "transaction_timeout": Setting(
        "PACHHOOK_TRANSACTION_TIMEOUT", "pachhook.transactionTimeout", "seconds", 300.0
    ),
    "registry_timeout": Setting(
        "PACHHOOK_REGISTRY_TIMEOUT", "pachhook.registryTimeout", "seconds", 30.0
    ),
    "lock_timeout": Setting("PACHHOOK_LOCK_TIMEOUT", "pachhook.lockTimeout", "seconds", 900.0),
    # The hook policy (hooks/policy.py); None: not set here.
    "deploy_branches": Setting(
        "PACHHOOK_DEPLOY_BRANCHES", "pachhook.deployBranches", "words", None
    ),
    "on_build_failure": Setting(
        "PACHHOOK_ON_BUILD_FAILURE",
        "pachhook.onBuildFailure",
        "choice",
        None,
        BUILD_FAILURE_POLICIES,
    ),
    "post_push_timeout": Setting(
        "PACHHOOK_POST_PUSH_TIMEOUT", "pachhook.postPushTimeout", "seconds", None
    ),
    "post_commit": Setting(
        "PACHHOOK_POST_COMMIT", "pachhook.postCommit", "choice", None, COMMIT_HOOK_MODES
    ),
    # Whether the deploys hooks run delete the pipelines whose spec is gone.
    "prune": Setting("PACHHOOK_PRUNE", "pachhook.prune", "flag", False),
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class Settings(NamedTuple):
    """Every setting's value and where it came from (`PACHHOOK_X`, `git config pachhook.x`,
    or "default"). A NamedTuple like the other types of the hook's path (a dataclass
    would import `inspect` there)."""

    values: Mapping[str, Any]
    origins: Mapping[str, str]

    def get(self, name: str) -> Any:
        return self.values.get(name, SETTINGS[name].default)

    @property
    def allow_config_address(self) -> bool:
        return bool(self.get("allow_config_address"))

    @property
    def allow_plaintext_token(self) -> bool:
        return bool(self.get("allow_plaintext_token"))

    @property
    def token_realm_hosts(self) -> tuple[str, ...]:
        return tuple(h.lower() for h in self.get("token_realm_hosts"))

    @property
    def connect_timeout(self) -> float:
        return float(self.get("connect_timeout"))

    @property
    def rpc_timeout(self) -> float:
        return float(self.get("rpc_timeout"))

    @property
    def transaction_timeout(self) -> float:
        return float(self.get("transaction_timeout"))

    @property
    def registry_timeout(self) -> float:
        return float(self.get("registry_timeout"))

    @property
    def lock_timeout(self) -> float:
        return float(self.get("lock_timeout"))

    def origin(self, name: str) -> str:
        return self.origins.get(name, "default")

    def how_to_set(self, name: str, value: str = "") -> str:
        """`PACHHOOK_X=value (or git config pachhook.x value)`, for messages."""
        setting = SETTINGS[name]
        if not value:
            return f"{setting.env} (or git config {setting.git})"
        return f"{setting.env}={value} (or git config {setting.git} {value})"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The environment alone (where no repository is at hand)."""
        return cls.load(env, None)

    @classmethod
    def load(cls, env: Mapping[str, str], root: Path | None) -> Settings:
        """The environment, then git config as seen from `root` (one git call)."""
        found = _git_config(root) if root is not None else {}
        values: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for name, setting in SETTINGS.items():
            if setting.env in env:
                raw, where = [env[setting.env]], setting.env
            elif setting.git.lower() in found:
                raw, where = found[setting.git.lower()], f"git config {setting.git}"
            else:
                continue
            values[name] = _value(setting, raw, where)
            origins[name] = where
        return cls(values, origins)


def _git_config(root: Path) -> dict[str, list[str]]:
    """Every `pachhook.*` key git config holds, lower-cased as git reports it."""
    from pachhook.repo.git import run

    out = run(["config", "-z", "--get-regexp", r"^pachhook\."], root, check=False)
    found: dict[str, list[str]] = {}
    for record in out.split("\0"):
        if record:
            key, _, value = record.partition("\n")
            found.setdefault(key.lower(), []).append(value)
    return found


def _value(setting: Setting, raw: list[str], where: str) -> Any:
    last = raw[-1].strip()  # git config: the last value of a key wins
    if setting.kind == "flag":
        if last.lower() in _TRUE:
            return True
        if last.lower() in _FALSE:
            return False
        raise InputError(f"{where}: got {last!r}; expected true or false")
    if setting.kind == "seconds":
        try:
            seconds = float(last)
        except ValueError:
            seconds = -1.0
        if not seconds > 0 or seconds != seconds or seconds == float("inf"):
            raise InputError(f"{where}: got {last!r}; expected a number of seconds, such as 30")
        return seconds
    if setting.kind == "choice":
        if last not in setting.choices:
            expected = ", ".join(repr(c) for c in setting.choices)
            raise InputError(f"{where}: got {last!r}; expected one of {expected}")
        return last
    # words: a multi-valued git key, or one value of words separated by blanks or commas
    words = tuple(w for value in raw for w in re.split(r"[\s,]+", value) if w)
    return words
