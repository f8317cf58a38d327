"""Schema migrations: Alembic run programmatically (no ``alembic.ini``).

The scripts live in ``<repo>/sql/migrations``; ``upgrade(engine)`` brings any
database (empty or older) to the head revision, then rebuilds the derived schema:
the views of :mod:`pipeline.db.views` and, on SQLite, the GeoPackage registration
of every geometry table and view (:mod:`pipeline.db.geopackage`). ``schema_diff(engine)`` lists
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
from pipeline.db import geopackage, views
from pipeline.db.models import Base
from pipeline.db.types import Geometry

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
# GeoPackage's own tables and the R*Tree indexes (with their shadow tables) on SQLite
GEOPACKAGE_TABLE_PREFIXES = ("gpkg_", "rtree_")
_PG_LOCK_KEY = 0x6765_6F61  # "geoa": serialises concurrent upgrades on one PostgreSQL database


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic config pointing at ``sql/migrations``; ``connection`` is used by ``env.py``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def include_object_for(dialect_name: str) -> Any:
    """Autogenerate filter: skip PostGIS's and GeoPackage's tables, and indexes meant
    for another dialect."""

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table" and name in POSTGIS_TABLES:
            return False
        if type_ == "table" and name and name.startswith(GEOPACKAGE_TABLE_PREFIXES):
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


def spatial_layers() -> list[geopackage.Layer]:
    """Every geometry column of the models and every view, as GIS clients list them."""
    layers = []
    for mapper in Base.registry.mappers:
        table = mapper.local_table
        doc = (mapper.class_.__doc__ or "").strip().splitlines()
        for column in table.columns:
            if isinstance(column.type, Geometry):
                layers.append(
                    geopackage.Layer(
                        str(table.name),
                        column.name,
                        column.type.geometry_type,
                        column.type.srid,
                        doc[0] if doc else "",
                    )
                )
    return sorted(layers, key=lambda layer: layer.table) + [v.layer for v in views.VIEWS]


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run ``alembic upgrade <revision>`` on ``engine`` in one transaction.

    When the database was not at ``revision`` already, the views are dropped before
    the migration and, if ``revision`` is the head, created again after it, with the
    GeoPackage registration on SQLite. PostgreSQL: concurrent callers wait on an
    advisory lock. SQLite: foreign-key enforcement is paused while batch migrations
    copy tables, then checked.
    """
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            _upgrade_sqlite(conn, revision)
            return
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            _migrate(conn, revision)
    log.debug("database %s upgraded to %s", engine.url.render_as_string(), revision)


def _migrate(conn: Connection, revision: str) -> None:
    """Alembic upgrade with the derived schema rebuilt around it (see :func:`upgrade`)."""
    script = ScriptDirectory.from_config(alembic_config())
    target = script.get_revision(revision)
    target_id = target.revision if target is not None else None
    if MigrationContext.configure(conn).get_current_revision() == target_id:
        return
    views.drop_views(conn)
    command.upgrade(alembic_config(conn), revision)
    if target_id != script.get_current_head():
        return
    views.create_views(conn)
    if conn.dialect.name == "sqlite":
        geopackage.register_layers(conn, spatial_layers())


def _upgrade_sqlite(conn: Connection, revision: str) -> None:
    raw = conn.connection.driver_connection
    raw.execute("PRAGMA foreign_keys=OFF")  # outside any transaction: takes effect
    try:
        with conn.begin():
            _migrate(conn, revision)
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(
                    f"migration to {revision} left broken foreign keys: {broken[:5]}"
                )
    finally:
        raw.execute("PRAGMA foreign_keys=ON")
    # GIS clients recognise a GeoPackage by its file header (application_id), which WAL
    # mode keeps in the log until a checkpoint copies it into the file
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")


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
