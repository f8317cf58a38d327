"""The schema revision this code reads and writes, told without loading Alembic: the
head of ``sql/migrations`` (a test holds it to Alembic's own head) and whether a
database is at it, so that opening a database migrates only one that is not."""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

#: the newest revision in ``sql/migrations``; a new migration moves it
SCHEMA_HEAD = "0007"


def at_schema_head(engine: Engine) -> bool:
    """Whether the database has been migrated to :data:`SCHEMA_HEAD` (False when it was
    never migrated, or is at another revision)."""
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except DBAPIError:  # no alembic_version table: never migrated
        return False
    return [row[0] for row in versions] == [SCHEMA_HEAD]
