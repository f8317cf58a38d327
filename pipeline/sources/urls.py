"""Service URLs as they may be shown: query string and password masked.

A URL's query string often carries a key or token (``?token=...``, ``?apikey=...``) and
a database URL a password, so every message, log line and snapshot ``source`` names a
service by :func:`mask_url`, never by the URL itself::

    mask_url("https://h/arcgis/rest/services/B/FeatureServer/0?token=abc")
    # 'https://h/arcgis/rest/services/B/FeatureServer/0?***'
    mask_url("postgresql://u:secret@db/gis")   # 'postgresql://u:***@db/gis'

Standard library only: the specs import it.
"""

from __future__ import annotations

import urllib.parse

from pipeline.redact import MASK, redact


def mask_url(url: str) -> str:
    """``url`` with its whole query string (and fragment) replaced by ``***`` and a
    password in its authority masked; text that is no URL goes through
    :func:`pipeline.redact.redact`."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact(url.split("?", 1)[0] + (f"?{MASK}" if "?" in url else ""))
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
    query = MASK if parts.query else ""
    fragment = MASK if parts.fragment else ""
    return redact(urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, fragment)))


def with_params(url: str, params: dict[str, str | int | float]) -> str:
    """``url`` with ``params`` added to its query string (the URL's own parameters, e.g. a
    token, are kept; a parameter of the same name, compared case-insensitively as OGC
    services do, is replaced)."""
    parts = urllib.parse.urlsplit(url)
    ours = {k.lower() for k in params}
    kept = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in ours
    ]
    query = urllib.parse.urlencode([*kept, *((k, str(v)) for k, v in params.items())])
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def scrub(text: str, url: str) -> str:
    """Exception text safe to show: ``url`` (and its query string) replaced by the masked
    form, then :func:`pipeline.redact.redact`."""
    query = urllib.parse.urlsplit(url).query if "://" in url else ""
    text = text.replace(url, mask_url(url))
    if query:
        text = text.replace(query, MASK)
    return redact(text)
