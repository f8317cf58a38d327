"""Keep secrets out of logs, stored errors and messages.

Passwords in URLs (``scheme://user:secret@host``) and ``password=``/``token=`` style
pairs become ``***``; logging runs every record through :func:`redact_processor`.
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


def redact(text: str) -> str:
    """``text`` with URL passwords and ``key=secret`` values masked."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
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
