"""prediction_cache.sha256: the hash of the stored prediction mosaic, so a cache entry
whose file was damaged is detected, dropped and predicted again; run.heartbeat_at: when
a scheduler's task of the run was last seen, so a run its scheduler abandoned is closed

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pipeline.db.types import UtcDateTime

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # entries cached before this column have no hash: they are checked by reading them
    with op.batch_alter_table("prediction_cache") as batch:
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("heartbeat_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.drop_column("heartbeat_at")
    with op.batch_alter_table("prediction_cache") as batch:
        batch.drop_column("sha256")
