"""aoi.geometry as MultiPolygon: an AOI may be several parts (imagery comes in clusters);
aoi_score keeps its model's out-of-sample quality and whether it was trusted

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import shapely
import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _convert(to_multi: bool) -> None:
    """SQLite keeps WKB blobs: rewrite each outline as (Multi)Polygon."""
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, geometry FROM aoi")).all()
    for row in rows:
        geom = shapely.from_wkb(bytes(row.geometry))
        if to_multi:
            geom = shapely.MultiPolygon([geom]) if geom.geom_type == "Polygon" else geom
        elif geom.geom_type == "MultiPolygon" and len(geom.geoms) == 1:
            geom = geom.geoms[0]
        bind.execute(
            sa.text("UPDATE aoi SET geometry = :g WHERE id = :id"),
            {"g": shapely.to_wkb(geom), "id": row.id},
        )


def upgrade() -> None:
    with op.batch_alter_table("aoi_score") as batch:
        batch.add_column(sa.Column("model_oof_iou", sa.Float(), nullable=True))
        batch.add_column(sa.Column("model_validated_tiles", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("model_trusted", sa.Boolean(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE aoi ALTER COLUMN geometry TYPE geometry(MultiPolygon, 4326) "
            "USING ST_Multi(geometry)"
        )
    else:
        _convert(to_multi=True)


def downgrade() -> None:
    with op.batch_alter_table("aoi_score") as batch:
        for column in ("model_trusted", "model_validated_tiles", "model_oof_iou"):
            batch.drop_column(column)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE aoi ALTER COLUMN geometry TYPE geometry(Polygon, 4326) "
            "USING ST_GeometryN(geometry, 1)"
        )
    else:
        _convert(to_multi=False)
