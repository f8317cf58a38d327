"""initial schema: AOIs, snapshots, runs and their results, reviews, model registry

Revision ID: 0001
Revises:
Create Date: 2025-11-25

Runs on PostgreSQL/PostGIS and on SQLite. On PostgreSQL it enables PostGIS and
gives every geometry column a GiST index; on SQLite geometries are WKB blobs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pipeline.db.types import Geometry, JSONType, UtcDateTime

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
GEOMETRY_TABLES = ("aoi", "tile_score", "finding", "change", "hotspot")


def _now() -> sa.sql.functions.Function:
    return sa.func.now()


def _created_at(name: str = "created_at") -> sa.Column:
    return sa.Column(name, UtcDateTime(), server_default=_now(), nullable=False)


def _one_of(table: str, column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    listed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=op.f(f"ck_{table}_{column}"))


def _fk(table: str, column: str, ref: str, ondelete: str | None = None) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{ref}.id"], name=op.f(f"fk_{table}_{column}_{ref}"), ondelete=ondelete
    )


def upgrade() -> None:
    is_pg = op.get_bind().dialect.name == "postgresql"
    if is_pg:
        op.execute("CREATE EXTENSION IF NOT EXISTS postgis")

    op.create_table(
        "aoi",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("config", JSONType(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("geometry", Geometry("POLYGON"), nullable=False),
        _created_at(),
        _created_at("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aoi")),
        sa.UniqueConstraint("name", name=op.f("uq_aoi_name")),
    )

    op.create_table(
        "model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(16), server_default="candidate", nullable=False),
        sa.Column("arch", sa.String(100), nullable=False),
        sa.Column("encoder", sa.String(100), nullable=False),
        sa.Column("weights_uri", sa.Text(), nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("params", JSONType(), nullable=True),
        sa.Column("metrics", JSONType(), nullable=True),
        sa.Column("training_data", JSONType(), nullable=True),
        sa.Column("heldout", JSONType(), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        _created_at(),
        sa.Column("promoted_at", UtcDateTime(), nullable=True),
        _one_of("model_version", "stage", ("candidate", "production", "archived")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_model_version_version_positive")),
        _fk("model_version", "parent_id", "model_version", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_model_version_name_version")),
    )
    op.create_index(op.f("ix_model_version_parent_id"), "model_version", ["parent_id"])
    op.create_index(
        op.f("uq_model_version_production"),
        "model_version",
        ["name"],
        unique=True,
        postgresql_where=sa.text("stage = 'production'"),
        sqlite_where=sa.text("stage = 'production'"),
    )

    op.create_table(
        "prediction_cache",
        sa.Column("imagery_hash", sa.String(128), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("shard_id", sa.String(64), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        _created_at(),
        _fk("prediction_cache", "model_version_id", "model_version", "CASCADE"),
        sa.PrimaryKeyConstraint(
            "imagery_hash", "model_version_id", "shard_id", name=op.f("pk_prediction_cache")
        ),
    )
    op.create_index(
        op.f("ix_prediction_cache_model_version_id"), "prediction_cache", ["model_version_id"]
    )

    op.create_table(
        "snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("aoi_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("feature_count", sa.Integer(), nullable=True),
        sa.Column("meta", JSONType(), nullable=True),
        _created_at(),
        _one_of("snapshot", "kind", ("imagery", "opendata")),
        _fk("snapshot", "aoi_id", "aoi", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot")),
        sa.UniqueConstraint(
            "aoi_id",
            "kind",
            "step",
            "content_hash",
            name=op.f("uq_snapshot_aoi_id_kind_step_content_hash"),
        ),
    )

    op.create_table(
        "run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("aoi_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), server_default="queued", nullable=False),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("params", JSONType(), nullable=True),
        sa.Column("imagery_snapshot_id", sa.Integer(), nullable=True),
        sa.Column("opendata_snapshot_id", sa.Integer(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        sa.Column("shards_total", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("stage_seconds", JSONType(), nullable=True),
        _created_at("started_at"),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        _one_of("run", "status", ("queued", "running", "succeeded", "failed")),
        sa.CheckConstraint("shards_total >= 0", name=op.f("ck_run_shards_total_non_negative")),
        _fk("run", "aoi_id", "aoi", "CASCADE"),
        _fk("run", "imagery_snapshot_id", "snapshot"),
        _fk("run", "opendata_snapshot_id", "snapshot"),
        _fk("run", "model_version_id", "model_version"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run")),
    )
    op.create_index(op.f("ix_run_aoi_id_step"), "run", ["aoi_id", "step"])
    op.create_index(op.f("ix_run_external_id"), "run", ["external_id"])
    op.create_index(op.f("ix_run_imagery_snapshot_id"), "run", ["imagery_snapshot_id"])
    op.create_index(op.f("ix_run_opendata_snapshot_id"), "run", ["opendata_snapshot_id"])
    op.create_index(op.f("ix_run_model_version_id"), "run", ["model_version_id"])

    op.create_table(
        "run_shard",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("shard_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stats", JSONType(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), server_default=_now(), nullable=True),
        _one_of("run_shard", "status", ("done", "failed")),
        _fk("run_shard", "run_id", "run", "CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "shard_id", name=op.f("pk_run_shard")),
    )

    op.create_table(
        "tile_score",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("shard_id", sa.String(64), nullable=False),
        sa.Column("z", sa.Integer(), nullable=False),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        *(
            sa.Column(c, sa.Float(), nullable=True)
            for c in ("iou", "precision", "recall", "f1", "qod")
        ),
        *(
            sa.Column(c, sa.Integer(), nullable=True)
            for c in ("fg_label", "fg_pred", "tp", "fp", "fn", "valid_px")
        ),
        sa.Column("n_findings", sa.Integer(), server_default="0", nullable=False),
        sa.Column("flagged", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("geometry", Geometry("POLYGON"), nullable=False),
        _fk("tile_score", "run_id", "run", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tile_score")),
        sa.UniqueConstraint("run_id", "z", "x", "y", name=op.f("uq_tile_score_run_id_z_x_y")),
    )
    op.create_index(op.f("ix_tile_score_run_id_shard_id"), "tile_score", ["run_id", "shard_id"])

    op.create_table(
        "finding",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("shard_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("feature_id", sa.Text(), nullable=True),
        sa.Column("area_m2", sa.Float(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("iou", sa.Float(), nullable=True),
        sa.Column("offset_m", sa.Float(), nullable=True),
        sa.Column("detail", JSONType(), nullable=True),
        sa.Column("tile_z", sa.Integer(), nullable=True),
        sa.Column("tile_x", sa.Integer(), nullable=True),
        sa.Column("tile_y", sa.Integer(), nullable=True),
        sa.Column("geometry", Geometry("GEOMETRY"), nullable=False),
        _fk("finding", "run_id", "run", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_finding")),
    )
    op.create_index(op.f("ix_finding_run_id_shard_id"), "finding", ["run_id", "shard_id"])
    op.create_index(op.f("ix_finding_run_id_kind"), "finding", ["run_id", "kind"])

    op.create_table(
        "change",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("aoi_id", sa.Integer(), nullable=False),
        sa.Column("step_from", sa.Text(), nullable=False),
        sa.Column("step_to", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("feature_id", sa.Text(), nullable=True),
        sa.Column("area_m2", sa.Float(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("detail", JSONType(), nullable=True),
        sa.Column("geometry", Geometry("GEOMETRY"), nullable=False),
        _fk("change", "run_id", "run", "CASCADE"),
        _fk("change", "aoi_id", "aoi", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_change")),
    )
    op.create_index(op.f("ix_change_run_id"), "change", ["run_id"])
    op.create_index(op.f("ix_change_aoi_id_step_to"), "change", ["aoi_id", "step_to"])

    op.create_table(
        "aoi_score",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("aoi_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        *(
            sa.Column(c, sa.Float(), nullable=True)
            for c in ("completeness", "correctness", "mean_iou", "mean_qod", "flagged_tile_share")
        ),
        *(
            sa.Column(c, sa.Integer(), nullable=True)
            for c in ("n_tiles", "n_opendata", "n_predicted")
        ),
        sa.Column("findings_by_kind", JSONType(), nullable=True),
        sa.Column("extra", JSONType(), nullable=True),
        sa.Column("model_version_id", sa.Integer(), nullable=True),
        _created_at(),
        _fk("aoi_score", "run_id", "run", "CASCADE"),
        _fk("aoi_score", "aoi_id", "aoi", "CASCADE"),
        _fk("aoi_score", "model_version_id", "model_version"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aoi_score")),
        sa.UniqueConstraint("run_id", name=op.f("uq_aoi_score_run_id")),
    )
    op.create_index(op.f("ix_aoi_score_aoi_id_step"), "aoi_score", ["aoi_id", "step"])
    op.create_index(op.f("ix_aoi_score_model_version_id"), "aoi_score", ["model_version_id"])

    op.create_table(
        "hotspot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("z", sa.Integer(), nullable=False),
        sa.Column("x", sa.Integer(), nullable=False),
        sa.Column("y", sa.Integer(), nullable=False),
        sa.Column("gi_star", sa.Float(), nullable=True),
        sa.Column("n_findings", sa.Integer(), server_default="0", nullable=False),
        sa.Column("geometry", Geometry("POLYGON"), nullable=False),
        _fk("hotspot", "run_id", "run", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hotspot")),
        sa.UniqueConstraint("run_id", "rank", name=op.f("uq_hotspot_run_id_rank")),
    )

    op.create_table(
        "validation_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("snapshot_id", sa.Integer(), nullable=True),
        sa.Column("suite", sa.String(200), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("statistics", JSONType(), nullable=True),
        sa.Column("failed", JSONType(), nullable=True),
        _created_at(),
        _fk("validation_result", "run_id", "run", "CASCADE"),
        _fk("validation_result", "snapshot_id", "snapshot", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_validation_result")),
    )
    op.create_index(op.f("ix_validation_result_run_id"), "validation_result", ["run_id"])
    op.create_index(op.f("ix_validation_result_snapshot_id"), "validation_result", ["snapshot_id"])

    op.create_table(
        "review",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("aoi_id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("tile_z", sa.Integer(), nullable=True),
        sa.Column("tile_x", sa.Integer(), nullable=True),
        sa.Column("tile_y", sa.Integer(), nullable=True),
        sa.Column("finding_id", BIGID, nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("reviewer", sa.String(200), nullable=True),
        _created_at(),
        _created_at("updated_at"),
        _one_of("review", "target", ("tile", "finding")),
        _one_of("review", "verdict", ("label_wrong", "model_wrong", "real_change", "ok")),
        sa.CheckConstraint(
            "target <> 'tile' OR "
            "(tile_z IS NOT NULL AND tile_x IS NOT NULL AND tile_y IS NOT NULL)",
            name=op.f("ck_review_tile_target_has_tile"),
        ),
        _fk("review", "aoi_id", "aoi", "CASCADE"),
        _fk("review", "finding_id", "finding", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review")),
        sa.UniqueConstraint("finding_id", name=op.f("uq_review_finding_id")),
    )
    op.create_index(op.f("ix_review_aoi_id_verdict"), "review", ["aoi_id", "verdict"])
    op.create_index(
        op.f("uq_review_tile"),
        "review",
        ["aoi_id", "tile_z", "tile_x", "tile_y"],
        unique=True,
        postgresql_where=sa.text("target = 'tile'"),
        sqlite_where=sa.text("target = 'tile'"),
    )

    if is_pg:
        for table in GEOMETRY_TABLES:
            op.create_index(
                op.f(f"ix_{table}_geometry"), table, ["geometry"], postgresql_using="gist"
            )


def downgrade() -> None:
    # dropping a table drops its indexes; the PostGIS extension is left installed
    for table in (
        "review",
        "validation_result",
        "hotspot",
        "aoi_score",
        "change",
        "finding",
        "tile_score",
        "run_shard",
        "run",
        "snapshot",
        "prediction_cache",
        "model_version",
        "aoi",
    ):
        op.drop_table(table)
