"""Named read-side SQL queries kept in ``<repo>/sql/queries/<name>.sql``.

The dashboard's aggregations run in the database, in SQL that PostgreSQL and
SQLite both accept; results come back as pandas frames with geometries as
shapely objects, timestamps as aware UTC datetimes and JSON as Python values.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.types import TypeEngine

import pipeline
from pipeline.db.types import Geometry, JSONType, UtcDateTime
from pipeline.errors import NotFoundError

if TYPE_CHECKING:
    import pandas as pd

QUERIES_DIR = Path(pipeline.__file__).resolve().parents[1] / "sql" / "queries"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

# result columns that need a type to come back the same from both databases
_COLUMN_TYPES: dict[str, TypeEngine[Any]] = {
    "geometry": Geometry(),
    "statistics": JSONType(),
    "failed": JSONType(),
    **{
        name: UtcDateTime()
        for name in (
            "started_at",
            "finished_at",
            "created_at",
            "reviewed_at",
            "last_started_at",
            "last_finished_at",
        )
    },
}


@functools.cache
def load_query(name: str) -> str:
    """The SQL of ``sql/queries/<name>.sql``, without its comment lines."""
    if not _NAME.match(name):
        raise NotFoundError(f"query name {name!r} is not a lowercase identifier")
    path = QUERIES_DIR / f"{name}.sql"
    if not path.is_file():
        raise NotFoundError(f"no query {name!r}: {path} does not exist")
    # comments go: text() would take a ``:name`` in them for a bind parameter
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("--"))


def read_query(bind: Engine | Connection, name: str, **params: Any) -> pd.DataFrame:
    """Run query ``name`` with bound ``params``; one row per result row."""
    import pandas as pd

    sql = load_query(name)
    used = {k: v for k, v in _COLUMN_TYPES.items() if re.search(rf"\b{k}\b", sql)}
    statement = text(sql).columns(**used) if used else text(sql)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            result = conn.execute(statement, params)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    result = bind.execute(statement, params)
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
