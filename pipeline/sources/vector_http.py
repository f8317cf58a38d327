"""HTTP for the open-data sources: requests with retries, downloads streamed to disk.

Every failure is a :class:`~pipeline.errors.VectorDataError` that names the input by
its masked URL (:func:`pipeline.sources.urls.mask_url`) and says what failed::

    http_bytes(url, what="WFS https://h/wfs?***", action="GetFeature failed")
    # VectorDataError: WFS https://h/wfs?***: GetFeature failed after 3 attempts (HTTP ...)

Transient failures are tried again by :func:`pipeline.sources.retry.with_retries`.
urllib underneath: it needs no client to close and its errors are what retry.py knows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipeline.errors import VectorDataError
from pipeline.sources.retry import with_retries
from pipeline.sources.urls import mask_url, scrub

log = logging.getLogger(__name__)

USER_AGENT = "GeoAudit (building footprint audit)"
_CHUNK = 1 << 20
_BODY_CHARS = 300


def http_bytes(
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
    what: str | None = None,
    action: str = "request failed",
) -> bytes:
    """The body of a GET (POST when ``data`` is given) of ``url``, tried again on
    transient failures; any failure raises :class:`VectorDataError`
    ``"{what}: {action}[ after N attempts] ({reason})"``, ``what`` defaulting to the
    masked URL."""
    what = what or mask_url(url)

    def read() -> bytes:
        with urllib.request.urlopen(_request(url, data, headers), timeout=timeout) as resp:  # noqa: S310
            return resp.read()

    try:
        return with_retries(read, what)
    except (OSError, ValueError) as exc:
        raise _failure(exc, url, what, action) from exc


def http_json(url: str, **kwargs: Any) -> Any:
    """:func:`http_bytes` parsed as JSON; a body that is no JSON raises
    :class:`VectorDataError` quoting its start."""
    body = http_bytes(url, **kwargs)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        what = kwargs.get("what") or mask_url(url)
        raise VectorDataError(
            f"{what}: the answer is not JSON ({exc}); it starts {snippet(body, url)!r}"
        ) from exc


def stream_to_file(
    url: str,
    dest: Path,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
    what: str | None = None,
    action: str = "cannot download",
) -> str:
    """Stream ``url`` to ``dest`` in 1 MiB chunks (http(s) with urllib, other schemes such as
    ``s3://`` with fsspec) and return the sha256 of the bytes; never holds the whole
    body in memory. Failures raise :class:`VectorDataError` ``"{what}: {action} ..."``."""
    what = what or mask_url(url)

    def copy() -> str:
        digest = hashlib.sha256()
        if url.startswith(("http://", "https://")):
            request = _request(url, data, headers)
            source = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
        else:
            import fsspec

            source = fsspec.open(url, "rb").open()
        with source, open(dest, "wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    try:
        return with_retries(copy, what)
    except ImportError as exc:
        raise VectorDataError(f"{what}: {action} ({exc}); install the fsspec backend") from exc
    except (OSError, ValueError) as exc:
        raise _failure(exc, url, what, action) from exc


def _request(
    url: str, data: bytes | None, headers: dict[str, str] | None
) -> urllib.request.Request:
    head = {"User-Agent": USER_AGENT, **(headers or {})}
    if data is not None and "Content-Type" not in head:
        head["Content-Type"] = "application/x-www-form-urlencoded"
    return urllib.request.Request(url, data=data, headers=head)  # noqa: S310 (the user's URL)


def _failure(exc: BaseException, url: str, what: str, action: str) -> VectorDataError:
    tries = getattr(exc, "geoaudit_attempts", None)
    after = f" after {tries} attempts" if tries else ""
    reason = scrub(str(exc), url)
    if isinstance(exc, urllib.error.HTTPError):
        try:
            body = exc.read()
        except OSError:
            body = b""
        if body:
            reason += f"; the server said: {snippet(body, url)}"
    return VectorDataError(f"{what}: {action}{after} ({reason})")


def snippet(body: bytes, url: str) -> str:
    """The start of a response body as one line of text, tags stripped, secrets masked."""
    text = body[: _BODY_CHARS * 4].decode("utf-8", "replace")
    text = re.sub(r"<[^>]*>", " ", text)
    text = re.sub(r"\s+", " ", text).strip()
    return scrub(text[:_BODY_CHARS], url)
