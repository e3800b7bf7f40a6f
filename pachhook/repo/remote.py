"""Which repository this is, as the pipelines pachhook applies name it: origin's URL
without credentials, else the repository's own path."""

from __future__ import annotations

import re

from pachhook.repo.git import Repo

_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def repository_url(repo: Repo) -> str:
    url = repo.git("config", "--get", "remote.origin.url", check=False).strip()
    return without_credentials(url) if url else str(repo.root)


def without_credentials(url: str) -> str:
    """`https://user:token@host/x` -> `https://host/x`; scp-like `git@host:x` keeps its
    user name, which is no secret and part of how such URLs are written."""
    return _USERINFO.sub(r"\1", url)
