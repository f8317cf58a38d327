"""Quoting of SQL identifiers: the one way a table, view or index name enters SQL text.

Values always travel as bound parameters. DDL cannot bind names, so statements that
name a table (views, GeoPackage R*Tree indexes and triggers) interpolate only names
that went through :func:`quote_name`, which refuses anything but a plain identifier.
"""

from __future__ import annotations

import re

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def quote_name(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (PostgreSQL and SQLite alike).

    Raises ValueError for anything but letters, digits and underscores (at most 63,
    PostgreSQL's limit), so no quote, space or statement separator reaches SQL.
    """
    if not _PLAIN_NAME.fullmatch(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return f'"{name}"'
