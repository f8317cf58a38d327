"""Spatial store: finding, change and hotspot geometries typed MultiPolygon (PostGIS;
hotspot cells are clipped to the AOI), hotspot p- and q-values, and the
SQLite store a GeoPackage (geometries as GeoPackage binary; its registration, the
spatial indexes and the latest-results views are rebuilt by ``upgrade`` after this)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import shapely
import sqlalchemy as sa
from alembic import op

from pipeline.db import geopackage
from pipeline.geometries import as_multipolygon

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GEOMETRY_TABLES = ("aoi", "tile_score", "finding", "change", "hotspot")
# every table of 0005, copied on SQLite so its columns get GeoPackage's declared types
# (TEXT(n) for VARCHAR(n), TEXT for JSON; see pipeline.db.types)
TABLES_0005 = (
    "aoi",
    "snapshot",
    "model_version",
    "run",
    "run_shard",
    "tile_score",
    "finding",
    "change",
    "aoi_score",
    "hotspot",
    "validation_result",
    "review",
    "prediction_cache",
)
RESULT_TABLES = ("finding", "change", "hotspot")  # typed MultiPolygon by this revision


def upgrade() -> None:
    with op.batch_alter_table("hotspot") as batch:
        batch.add_column(sa.Column("p_value", sa.Float(), nullable=True))
        batch.add_column(sa.Column("q_value", sa.Float(), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table in RESULT_TABLES:
            op.execute(
                f'ALTER TABLE "{table}" ALTER COLUMN geometry TYPE geometry(MultiPolygon, 4326) '
                "USING ST_Multi(ST_CollectionExtract(geometry, 3))"
            )
        return
    for table in TABLES_0005:
        with op.batch_alter_table(table, recreate="always"):
            pass
    for table in GEOMETRY_TABLES:
        rows = bind.exec_driver_sql(f'SELECT id, geometry FROM "{table}"').fetchall()
        updates = []
        for row_id, blob in rows:
            if blob is None or geopackage.is_blob(blob):
                continue
            geom = shapely.from_wkb(blob)
            if table in RESULT_TABLES:
                geom = as_multipolygon(geom)
            updates.append((geopackage.to_blob(geom, 4326), row_id))
        if updates:
            bind.exec_driver_sql(f'UPDATE "{table}" SET geometry = ? WHERE id = ?', updates)


def downgrade() -> None:
    with op.batch_alter_table("hotspot") as batch:
        batch.drop_column("q_value")
        batch.drop_column("p_value")
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for table, earlier in (("finding", "Geometry"), ("change", "Geometry")):
            op.execute(
                f'ALTER TABLE "{table}" ALTER COLUMN geometry TYPE geometry({earlier}, 4326)'
            )
        op.execute(
            "ALTER TABLE hotspot ALTER COLUMN geometry TYPE geometry(Polygon, 4326) "
            "USING ST_GeometryN(geometry, 1)"
        )
        return
    geopackage.drop_spatial_indexes(bind, GEOMETRY_TABLES)
    for table in (
        "gpkg_extensions",
        "gpkg_geometry_columns",
        "gpkg_contents",
        "gpkg_spatial_ref_sys",
    ):
        bind.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
    bind.exec_driver_sql("PRAGMA application_id = 0")
    bind.exec_driver_sql("PRAGMA user_version = 0")
    for table in GEOMETRY_TABLES:
        rows = bind.exec_driver_sql(f'SELECT id, geometry FROM "{table}"').fetchall()
        updates = [
            (shapely.to_wkb(geopackage.from_blob(blob)), row_id)
            for row_id, blob in rows
            if blob is not None and geopackage.is_blob(blob)
        ]
        if updates:
            bind.exec_driver_sql(f'UPDATE "{table}" SET geometry = ? WHERE id = ?', updates)
