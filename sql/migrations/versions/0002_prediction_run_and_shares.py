"""prediction_cache.run_id: the run that made a cached prediction; tile_score
foreground shares as floats

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

A run that re-predicts ignores cached predictions made by other runs but keeps its
own (a retried shard task, or predictions made while its inputs were validated).
``tile_score.fg_label`` / ``fg_pred`` are shares 0..1: integer columns rounded them
to 0 or 1 on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prediction_cache") as batch:
        batch.add_column(sa.Column("run_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("tile_score") as batch:
        for column in ("fg_label", "fg_pred"):
            batch.alter_column(column, type_=sa.Float(), existing_type=sa.Integer())


def downgrade() -> None:
    with op.batch_alter_table("tile_score") as batch:
        for column in ("fg_label", "fg_pred"):
            batch.alter_column(column, type_=sa.Integer(), existing_type=sa.Float())
    with op.batch_alter_table("prediction_cache") as batch:
        batch.drop_column("run_id")
