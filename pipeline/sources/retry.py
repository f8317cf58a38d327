"""Retries with exponential backoff for remote sources (tenacity underneath).

Transient failures (connection refused or reset, timeouts, HTTP 429 and 5xx; from urllib
or httpx) are tried again ``GEOAUDIT_SOURCE_ATTEMPTS`` times in all (default 3), waiting
1, 2, 4... seconds (at most ``GEOAUDIT_SOURCE_MAX_WAIT_S``, default 8); anything else
fails at once.
"""

from __future__ import annotations

import logging
import os
import urllib.error
from collections.abc import Callable
from typing import TypeVar

import httpx
import tenacity

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """True for failures that another attempt may not meet (urllib and httpx alike)."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 429 or exc.code >= 500
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return True
    return isinstance(exc, urllib.error.URLError | ConnectionError | TimeoutError)


def attempts() -> int:
    """How many times a remote read is tried (``GEOAUDIT_SOURCE_ATTEMPTS``, at least 1)."""
    return max(int(os.environ.get("GEOAUDIT_SOURCE_ATTEMPTS", "3")), 1)


def with_retries(read: Callable[[], T], what: str) -> T:
    """``read()``, tried again on transient failures; the last failure is re-raised with
    a note of how many attempts were made."""
    n = attempts()
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(n),
        wait=tenacity.wait_exponential(
            multiplier=1, max=float(os.environ.get("GEOAUDIT_SOURCE_MAX_WAIT_S", "8"))
        ),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=lambda state: log.warning(
            "%s: attempt %d failed (%s); retrying",
            what,
            state.attempt_number,
            state.outcome.exception() if state.outcome else "?",
        ),
        reraise=True,
    )
    try:
        return retrying(read)
    except BaseException as exc:
        if is_transient(exc):
            exc.add_note(f"{what}: gave up after {n} attempts")
            exc.geoaudit_attempts = n  # type: ignore[attr-defined]
        raise
