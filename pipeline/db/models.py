"""ORM models: one class per table, the schema of record for ``sql/migrations``.

Every geometry is a :class:`~pipeline.db.types.Geometry` (EPSG:4326, PostGIS on
PostgreSQL with a GiST index, GeoPackage binary with an R*Tree index on SQLite).
Results of a run (shards, tile scores, findings, changes, the AOI score, hotspots,
validation results) are
deleted with the run (``ON DELETE CASCADE``); runs, snapshots and reviews are
deleted with their AOI. Closed vocabularies are CHECK constraints; their
values are the ``*_VALUES`` tuples below.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, get_args

from shapely.geometry.base import BaseGeometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from pipeline.db.types import Geometry, JSONType, UtcDateTime

SnapshotKind = Literal["imagery", "opendata"]
RunStatus = Literal["queued", "running", "succeeded", "failed", "no_new_data"]
ShardStatus = Literal["done", "failed"]
ReviewTarget = Literal["tile", "finding"]
Verdict = Literal["label_wrong", "model_wrong", "real_change", "ok"]
ModelStage = Literal["candidate", "production", "archived"]

SNAPSHOT_KINDS: tuple[str, ...] = get_args(SnapshotKind)
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
SHARD_STATUSES: tuple[str, ...] = get_args(ShardStatus)
REVIEW_TARGETS: tuple[str, ...] = get_args(ReviewTarget)
VERDICTS: tuple[str, ...] = get_args(Verdict)
MODEL_STAGES: tuple[str, ...] = get_args(ModelStage)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    """CHECK ``column IN (values)``, named ``ck_<table>_<column>``."""
    listed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=column)


def gist_index(table: str, column: str = "geometry") -> Index:
    """GiST index ``ix_<table>_<column>`` on a geometry column, created on PostgreSQL only."""
    return Index(f"ix_{table}_{column}", column, postgresql_using="gist").ddl_if(
        dialect="postgresql"
    )


def _now() -> Any:
    """The database's clock (on SQLite in GeoPackage's DATETIME form, see
    :mod:`pipeline.db.types`). Also the insert default, so stores whose DDL still says
    ``CURRENT_TIMESTAMP`` (made before 0007) get the same form."""
    return func.now()


class Aoi(Base):
    """An area of interest: its name, its configuration and its outline."""

    __tablename__ = "aoi"
    __table_args__ = (gist_index("aoi"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType, server_default=text("'{}'"))
    geometry: Mapped[BaseGeometry] = mapped_column(Geometry("MULTIPOLYGON"))
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now(), onupdate=_now()
    )

    snapshots: Mapped[list[Snapshot]] = relationship(
        back_populates="aoi", cascade="all, delete-orphan", passive_deletes=True
    )
    runs: Mapped[list[Run]] = relationship(
        back_populates="aoi", cascade="all, delete-orphan", passive_deletes=True
    )
    reviews: Mapped[list[Review]] = relationship(
        back_populates="aoi", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return f"Aoi(id={self.id}, name={self.name!r})"


class Snapshot(Base):
    """What a source returned for an AOI at a time step, identified by its content hash."""

    __tablename__ = "snapshot"
    __table_args__ = (
        UniqueConstraint("aoi_id", "kind", "step", "content_hash"),
        one_of("kind", SNAPSHOT_KINDS),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    aoi_id: Mapped[int] = mapped_column(ForeignKey("aoi.id", ondelete="CASCADE"))
    kind: Mapped[SnapshotKind] = mapped_column(String(16))
    step: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(128))
    uri: Mapped[str | None] = mapped_column(Text)
    feature_count: Mapped[int | None] = mapped_column(Integer)
    meta: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now()
    )

    aoi: Mapped[Aoi] = relationship(back_populates="snapshots")

    def __repr__(self) -> str:
        return (
            f"Snapshot(id={self.id}, aoi_id={self.aoi_id}, kind={self.kind!r}, "
            f"step={self.step!r}, hash={self.content_hash[:12]!r})"
        )


class ModelVersion(Base):
    """A trained model in the registry; at most one ``production`` version per name."""

    __tablename__ = "model_version"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        one_of("stage", MODEL_STAGES),
        CheckConstraint("version >= 1", name="version_positive"),
        Index(
            "uq_model_version_production",
            "name",
            unique=True,
            postgresql_where=text("stage = 'production'"),
            sqlite_where=text("stage = 'production'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    stage: Mapped[ModelStage] = mapped_column(String(16), server_default="candidate")
    arch: Mapped[str] = mapped_column(String(100))
    encoder: Mapped[str] = mapped_column(String(100))
    weights_uri: Mapped[str] = mapped_column(Text)
    weights_sha256: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    training_data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    heldout: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_version.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now()
    )
    promoted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    parent: Mapped[ModelVersion | None] = relationship(remote_side=[id])

    def __repr__(self) -> str:
        return f"ModelVersion(id={self.id}, name={self.name!r}, v{self.version}, {self.stage})"


class Run(Base):
    """One audit of an AOI at a time step; its results hang off it."""

    __tablename__ = "run"
    __table_args__ = (
        one_of("status", RUN_STATUSES),
        CheckConstraint("shards_total >= 0", name="shards_total_non_negative"),
        Index("ix_run_aoi_id_step", "aoi_id", "step"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    aoi_id: Mapped[int] = mapped_column(ForeignKey("aoi.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(Text)
    status: Mapped[RunStatus] = mapped_column(String(16), server_default="queued")
    trigger: Mapped[str] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(Text, index=True)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    imagery_snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshot.id"), index=True)
    opendata_snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshot.id"), index=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"), index=True)
    shards_total: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    stage_seconds: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    started_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now()
    )
    finished_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)
    # when a scheduler's task of the run was last seen (None: no task yet, or a local run)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)

    aoi: Mapped[Aoi] = relationship(back_populates="runs")
    imagery_snapshot: Mapped[Snapshot | None] = relationship(foreign_keys=[imagery_snapshot_id])
    opendata_snapshot: Mapped[Snapshot | None] = relationship(foreign_keys=[opendata_snapshot_id])
    model_version: Mapped[ModelVersion | None] = relationship()
    shards: Mapped[list[RunShard]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )
    score: Mapped[AoiScore | None] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )

    def __repr__(self) -> str:
        return (
            f"Run(id={self.id}, aoi_id={self.aoi_id}, step={self.step!r}, status={self.status!r})"
        )


class RunShard(Base):
    """A shard of a run that has been written (``done``) or has failed."""

    __tablename__ = "run_shard"
    __table_args__ = (one_of("status", SHARD_STATUSES),)

    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), primary_key=True)
    shard_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[ShardStatus] = mapped_column(String(16))
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    finished_at: Mapped[dt.datetime | None] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now()
    )

    run: Mapped[Run] = relationship(back_populates="shards")


class TileScore(Base):
    """Pixel scores of one work tile in a run (IoU, precision, recall, F1, QoD, counts)."""

    __tablename__ = "tile_score"
    __table_args__ = (
        UniqueConstraint("run_id", "z", "x", "y"),
        Index("ix_tile_score_run_id_shard_id", "run_id", "shard_id"),
        gist_index("tile_score"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    shard_id: Mapped[str] = mapped_column(String(64))
    z: Mapped[int] = mapped_column(Integer)
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    iou: Mapped[float | None] = mapped_column(Float)
    precision: Mapped[float | None] = mapped_column(Float)
    recall: Mapped[float | None] = mapped_column(Float)
    f1: Mapped[float | None] = mapped_column(Float)
    qod: Mapped[float | None] = mapped_column(Float)
    fg_label: Mapped[float | None] = mapped_column(Float)  # share of valid pixels
    fg_pred: Mapped[float | None] = mapped_column(Float)
    tp: Mapped[int | None] = mapped_column(Integer)
    fp: Mapped[int | None] = mapped_column(Integer)
    fn: Mapped[int | None] = mapped_column(Integer)
    valid_px: Mapped[int | None] = mapped_column(Integer)
    n_findings: Mapped[int] = mapped_column(Integer, server_default="0")
    flagged: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    geometry: Mapped[BaseGeometry] = mapped_column(Geometry("POLYGON"))


class Finding(Base):
    """An object-level disagreement (e.g. ``unsupported``, ``missing``) found in a run."""

    __tablename__ = "finding"
    __table_args__ = (
        Index("ix_finding_run_id_shard_id", "run_id", "shard_id"),
        Index("ix_finding_run_id_kind", "run_id", "kind"),
        gist_index("finding"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    shard_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    feature_id: Mapped[str | None] = mapped_column(Text)
    area_m2: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[float | None] = mapped_column(Float)
    iou: Mapped[float | None] = mapped_column(Float)
    offset_m: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    tile_z: Mapped[int | None] = mapped_column(Integer)
    tile_x: Mapped[int | None] = mapped_column(Integer)
    tile_y: Mapped[int | None] = mapped_column(Integer)
    geometry: Mapped[BaseGeometry] = mapped_column(Geometry("MULTIPOLYGON"))


class Change(Base):
    """A change between two time steps of an AOI (imagery, open data, or both)."""

    __tablename__ = "change"
    __table_args__ = (
        Index("ix_change_aoi_id_step_to", "aoi_id", "step_to"),
        gist_index("change"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), index=True)
    aoi_id: Mapped[int] = mapped_column(ForeignKey("aoi.id", ondelete="CASCADE"))
    step_from: Mapped[str] = mapped_column(Text)
    step_to: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(32))
    feature_id: Mapped[str | None] = mapped_column(Text)
    area_m2: Mapped[float | None] = mapped_column(Float)
    confidence: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    geometry: Mapped[BaseGeometry] = mapped_column(Geometry("MULTIPOLYGON"))


class AoiScore(Base):
    """The AOI-level summary of one run; one point of the AOI's trend line."""

    __tablename__ = "aoi_score"
    __table_args__ = (Index("ix_aoi_score_aoi_id_step", "aoi_id", "step"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), unique=True)
    aoi_id: Mapped[int] = mapped_column(ForeignKey("aoi.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(Text)
    completeness: Mapped[float | None] = mapped_column(Float)
    correctness: Mapped[float | None] = mapped_column(Float)
    mean_iou: Mapped[float | None] = mapped_column(Float)
    mean_qod: Mapped[float | None] = mapped_column(Float)
    flagged_tile_share: Mapped[float | None] = mapped_column(Float)
    n_tiles: Mapped[int | None] = mapped_column(Integer)
    n_opendata: Mapped[int | None] = mapped_column(Integer)
    n_predicted: Mapped[int | None] = mapped_column(Integer)
    findings_by_kind: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"), index=True)
    # the model's out-of-sample IoU, the tiles it was validated on, and whether both
    # reached the AOI's floors (an untrusted model's findings are low-confidence)
    model_oof_iou: Mapped[float | None] = mapped_column(Float)
    model_validated_tiles: Mapped[int | None] = mapped_column(Integer)
    model_trusted: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now()
    )

    run: Mapped[Run] = relationship(back_populates="score")


class Hotspot(Base):
    """A cell where findings cluster significantly (Getis-Ord Gi*, FDR-corrected), clipped
    to the AOI and ranked within its run."""

    __tablename__ = "hotspot"
    __table_args__ = (UniqueConstraint("run_id", "rank"), gist_index("hotspot"))

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    z: Mapped[int] = mapped_column(Integer)
    x: Mapped[int] = mapped_column(Integer)
    y: Mapped[int] = mapped_column(Integer)
    gi_star: Mapped[float | None] = mapped_column(Float)
    # the permutation p-value and its Benjamini-Hochberg adjustment over the run's cells
    p_value: Mapped[float | None] = mapped_column(Float)
    q_value: Mapped[float | None] = mapped_column(Float)
    n_findings: Mapped[int] = mapped_column(Integer, server_default="0")
    geometry: Mapped[BaseGeometry] = mapped_column(Geometry("MULTIPOLYGON"))


class ValidationResult(Base):
    """The outcome of one validation suite on a snapshot and/or a run."""

    __tablename__ = "validation_result"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"), index=True)
    snapshot_id: Mapped[int | None] = mapped_column(
        ForeignKey("snapshot.id", ondelete="CASCADE"), index=True
    )
    suite: Mapped[str] = mapped_column(String(200))
    success: Mapped[bool] = mapped_column(Boolean)
    severity: Mapped[str] = mapped_column(String(16))
    statistics: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    failed: Mapped[Any | None] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now()
    )


class Review(Base):
    """A reviewer's verdict on a tile or on a finding; one verdict per target, updatable.

    Tile reviews are unique per ``(aoi_id, tile_z, tile_x, tile_y)``; finding reviews
    per ``finding_id`` and also carry the finding's tile. When a finding is replaced
    by a re-run, its review stays (``finding_id`` becomes NULL, the tile remains).
    """

    __tablename__ = "review"
    __table_args__ = (
        one_of("target", REVIEW_TARGETS),
        one_of("verdict", VERDICTS),
        CheckConstraint(
            "target <> 'tile' OR "
            "(tile_z IS NOT NULL AND tile_x IS NOT NULL AND tile_y IS NOT NULL)",
            name="tile_target_has_tile",
        ),
        Index("ix_review_aoi_id_verdict", "aoi_id", "verdict"),
        Index(
            "uq_review_tile",
            "aoi_id",
            "tile_z",
            "tile_x",
            "tile_y",
            unique=True,
            postgresql_where=text("target = 'tile'"),
            sqlite_where=text("target = 'tile'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    aoi_id: Mapped[int] = mapped_column(ForeignKey("aoi.id", ondelete="CASCADE"))
    target: Mapped[ReviewTarget] = mapped_column(String(16))
    tile_z: Mapped[int | None] = mapped_column(Integer)
    tile_x: Mapped[int | None] = mapped_column(Integer)
    tile_y: Mapped[int | None] = mapped_column(Integer)
    finding_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        ForeignKey("finding.id", ondelete="SET NULL"),
        unique=True,
    )
    verdict: Mapped[Verdict] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now()
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now(), onupdate=_now()
    )

    aoi: Mapped[Aoi] = relationship(back_populates="reviews")
    finding: Mapped[Finding | None] = relationship()


class PredictionCache(Base):
    """Where the prediction mosaic of a shard lives, keyed by imagery hash and model version."""

    __tablename__ = "prediction_cache"

    imagery_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_version.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    shard_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    # SHA-256 of the mosaic's bytes as written (None: cached before hashes were kept)
    sha256: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(Integer)  # the run that predicted it
    created_at: Mapped[dt.datetime] = mapped_column(
        UtcDateTime, default=_now(), server_default=_now()
    )
