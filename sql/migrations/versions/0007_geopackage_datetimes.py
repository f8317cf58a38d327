"""SQLite store: timestamps in GeoPackage's DATETIME form (``2026-12-03T20:47:04.123Z``,
ISO 8601 in UTC with milliseconds) instead of SQLAlchemy's ``2026-12-03 20:47:04.123456``
and SQLite's ``CURRENT_TIMESTAMP``, on which GDAL warned "Non-conformant content" for
every row a GIS client read. PostgreSQL keeps ``timestamptz``: nothing to do there.

The tables' ``DEFAULT CURRENT_TIMESTAMP`` stays in stores made before this revision;
the models give every insert the timestamp itself, so it no longer fires.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from pipeline.db.identifiers import quote_name

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DATETIME_COLUMNS = {
    "aoi": ("created_at", "updated_at"),
    "model_version": ("created_at", "promoted_at"),
    "prediction_cache": ("created_at",),
    "snapshot": ("created_at",),
    "run": ("started_at", "finished_at", "heartbeat_at"),
    "aoi_score": ("created_at",),
    "run_shard": ("finished_at",),
    "validation_result": ("created_at",),
    "review": ("created_at", "updated_at"),
}


def _rewrite(form: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table, columns in DATETIME_COLUMNS.items():
        for column in columns:
            c = quote_name(column)
            bind.exec_driver_sql(
                f"UPDATE {quote_name(table)} SET {c} = strftime(?, {c}) WHERE {c} IS NOT NULL",
                (form,),
            )


def upgrade() -> None:
    _rewrite("%Y-%m-%dT%H:%M:%fZ")


def downgrade() -> None:
    _rewrite("%Y-%m-%d %H:%M:%f")
