"""Keep secrets out of logs, stored errors and messages.

Passwords in URLs (``scheme://user:secret@host``), the whole query string of a URL
(``?key=...&sig=...``: signed URLs put their secret anywhere in it), ``password=`` /
``token=`` / ``signature=`` style pairs and every value registered with
:func:`add_secret` (resolved ``${ENV_VAR}`` references) become ``***``; logging runs
every record through :func:`redact_processor`.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@")
_PAIR = re.compile(
    r"(?P<key>\b[\w.-]*(?:password|passwd|secret|token|api[_-]?key)[\w.-]*\s*[=:]\s*)"
    r"(?P<quote>['\"]?)[^\s'\",;&]+(?P=quote)",
    re.IGNORECASE,
)
_SECRET_KEY = re.compile(r"password|passwd|secret|token|api[_-]?key", re.IGNORECASE)
_URL_QUERY = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"<>]*)\?[^\s'\"<>]+")
_SIGNED = re.compile(
    r"(?P<key>\b(?:x-amz-signature|x-goog-signature|x-amz-credential|signature|sig|key|"
    r"access_token|code)=)[^\s&'\",;]+",
    re.IGNORECASE,
)
#: values resolved from the environment for sources (see pipeline.sources.env)
_SECRETS: set[str] = set()


def add_secret(value: str) -> None:
    """Mask ``value`` wherever :func:`redact` sees it from now on (values shorter than 4
    characters would mask ordinary text and are left alone)."""
    if isinstance(value, str) and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with registered secrets, URL passwords, URL query strings and
    ``key=secret`` values masked."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    text = _URL_QUERY.sub(lambda m: f"{m['head']}?{MASK}", text)
    text = _SIGNED.sub(lambda m: f"{m['key']}{MASK}", text)
    return _PAIR.sub(lambda m: f"{m['key']}{m['quote']}{MASK}{m['quote']}", text)


def redact_value(key: str, value: Any) -> Any:
    """A structured log value: masked outright under a secret-looking key, else
    :func:`redact`-ed when it is text."""
    if _SECRET_KEY.search(key) and value is not None:
        return MASK
    return redact(value) if isinstance(value, str) else value


def redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: :func:`redact_value` on every field of a log event."""
    return {key: redact_value(key, value) for key, value in event_dict.items()}
