"""`ADD <url>`: what a URL's server says of its content, for images whose tag follows it.

An `ADD https://...` source is downloaded by the builder at build time: no file of the
repository holds it, so the input digest cannot see it change. With `add_urls = "check"`
an image's digest takes in each URL's validators (ETag, Last-Modified, length), asked
with a HEAD request when the image is planned; a server that gives none is read whole
and hashed.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Sequence

from pachhook.errors import InputError, one_line

URL_TIMEOUT = 20  # seconds for one URL's answer
_VALIDATORS = ("ETag", "Last-Modified", "Content-Length")


def url_versions(urls: Sequence[str], dockerfile: str) -> str:
    """One line per URL naming the version of its content; InputError when a URL cannot
    be asked (the image's tag could not follow it)."""
    return "\n".join(f"{url} {_version(url, dockerfile)}" for url in urls)


def _version(url: str, dockerfile: str) -> str:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, method="HEAD"), timeout=URL_TIMEOUT
        ) as answer:
            found = [
                f"{name}={answer.headers[name]}" for name in _VALIDATORS if answer.headers[name]
            ]
        if any(not v.startswith("Content-Length=") for v in found):
            return " ".join(found)
        # Neither an ETag nor a date: only the content itself tells a change.
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT) as answer:
            for chunk in iter(lambda: answer.read(1 << 20), b""):
                digest.update(chunk)
        return f"sha256={digest.hexdigest()}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InputError(
            f"{dockerfile}: ADD {url}: cannot ask the server for its version "
            f'({one_line(str(reason), 100)}); make it reachable, or set add_urls = "fixed" '
            "for this image"
        ) from None
