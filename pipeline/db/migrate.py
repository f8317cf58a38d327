"""Schema migrations: Alembic run programmatically (no ``alembic.ini``).

The scripts live in ``<repo>/sql/migrations``; ``upgrade(engine)`` brings any
database (empty or older) to the head revision. ``schema_diff(engine)`` lists
the differences between the ORM models and the database (empty when in sync).

From a shell: ``python -m pipeline.db {upgrade,current,check,revision} URL``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, Index, text

import pipeline
from pipeline.db.models import Base

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(pipeline.__file__).resolve().parents[1] / "sql" / "migrations"

# PostGIS's own tables and views, never part of our models
POSTGIS_TABLES = frozenset(
    {
        "spatial_ref_sys",
        "geometry_columns",
        "geography_columns",
        "raster_columns",
        "raster_overviews",
        "topology",
        "layer",
    }
)
_PG_LOCK_KEY = 0x6765_6F61  # "geoa": serialises concurrent upgrades on one PostgreSQL database


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic config pointing at ``sql/migrations``; ``connection`` is used by ``env.py``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def include_object_for(dialect_name: str) -> Any:
    """Autogenerate filter: skip PostGIS's tables and indexes meant for another dialect."""

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table" and name in POSTGIS_TABLES:
            return False
        if type_ == "index" and isinstance(obj, Index) and not reflected:
            ddl_if = getattr(obj, "_ddl_if", None)
            if ddl_if is not None and ddl_if.dialect is not None:
                return ddl_if.dialect == dialect_name
        return True

    return include_object


def context_options(dialect_name: str) -> dict[str, Any]:
    """Options for ``context.configure`` shared by ``env.py`` and :func:`schema_diff`."""
    return {
        "target_metadata": Base.metadata,
        "include_object": include_object_for(dialect_name),
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
    }


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run ``alembic upgrade <revision>`` on ``engine`` in one transaction.

    PostgreSQL: concurrent callers wait on an advisory lock. SQLite: foreign-key
    enforcement is paused while batch migrations copy tables, then checked.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            _upgrade_sqlite(conn, revision)
            return
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            command.upgrade(alembic_config(conn), revision)
    log.debug("database %s upgraded to %s", engine.url.render_as_string(), revision)


def _upgrade_sqlite(conn: Connection, revision: str) -> None:
    raw = conn.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")  # outside any transaction: takes effect
    try:
        with conn.begin():
            command.upgrade(alembic_config(conn), revision)
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(
                    f"migration to {revision} left broken foreign keys: {broken[:5]}"
                )
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, ``None`` when it was never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision in ``sql/migrations``."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def schema_diff(engine: Engine) -> list[Any]:
    """Alembic autogenerate diff between the ORM models and the database (``[]`` = in sync)."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts=context_options(conn.dialect.name))
        return compare_metadata(ctx, Base.metadata)


def new_revision(engine: Engine, message: str) -> Path:
    """Autogenerate the next migration (``NNNN_<message>.py``) against an up-to-date database."""
    head = head_revision()
    rev_id = f"{int(head) + 1:04d}" if head and head.isdigit() else None
    with engine.begin() as conn:
        script = command.revision(alembic_config(conn), message, autogenerate=True, rev_id=rev_id)
    return Path(script.path)  # type: ignore[union-attr]
