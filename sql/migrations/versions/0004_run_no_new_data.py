"""run.status 'no_new_data': a scheduled run whose sources and model were those of the
last succeeded run is recorded as such (nothing audited, no results)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = ("queued", "running", "succeeded", "failed")
_AFTER = (*_BEFORE, "no_new_data")


def _status_check(values: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{v}'" for v in values)
    with op.batch_alter_table("run") as batch:
        batch.drop_constraint(op.f("ck_run_status"), type_="check")
        batch.create_check_constraint(op.f("ck_run_status"), f"status IN ({listed})")


def upgrade() -> None:
    _status_check(_AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM run WHERE status = 'no_new_data'")
    _status_check(_BEFORE)
