"""Model registry (champion / challenger) and the prediction cache.

A model version is a ``(name, version)`` row with its weights URI, parameters,
metrics and training data; versions count 1, 2, ... per name. At most one
version per name is ``production`` (a partial unique index enforces it);
:func:`promote` archives the previous one. Functions take a Session and never
commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.orm import Session

from pipeline.db._rows import upsert
from pipeline.db.errors import RowError
from pipeline.db.models import MODEL_STAGES, ModelVersion, PredictionCache
from pipeline.errors import NotFoundError

_PG_LOCK_CLASS = 0x6D76  # advisory lock namespace for "next version of <name>"


def register_model_version(
    s: Session,
    name: str,
    *,
    arch: str,
    encoder: str,
    weights_uri: str,
    weights_sha256: str,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    training_data: Mapping[str, Any] | None = None,
    heldout: Mapping[str, Any] | None = None,
    parent_id: int | None = None,
    stage: str = "candidate",
) -> ModelVersion:
    """Add the next version of model ``name`` (``version = max(version) + 1``).

    ``stage="production"`` registers and promotes it in one go.
    """
    if stage not in MODEL_STAGES:
        raise RowError(f"model {name!r}: stage must be one of {MODEL_STAGES}, got {stage!r}")
    if parent_id is not None:
        get_model_version(s, parent_id)
    if s.get_bind().dialect.name == "postgresql":
        # concurrent registrations of one name wait instead of colliding on (name, version)
        s.execute(
            text("SELECT pg_advisory_xact_lock(:cls, hashtext(:name))"),
            {"cls": _PG_LOCK_CLASS, "name": name},
        )
    latest = s.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
    mv = ModelVersion(
        name=name,
        version=(latest or 0) + 1,
        stage="candidate" if stage == "production" else stage,
        arch=arch,
        encoder=encoder,
        weights_uri=weights_uri,
        weights_sha256=weights_sha256,
        params=_dict(params),
        metrics=_dict(metrics),
        training_data=_dict(training_data),
        heldout=_dict(heldout),
        parent_id=parent_id,
    )
    s.add(mv)
    s.flush()
    if stage == "production":
        promote(s, mv.id)
    return mv


def get_model_version(s: Session, ref: int | str, version: int | None = None) -> ModelVersion:
    """Model version by id (``ref`` an int) or by name and version (latest when None).

    Raises NotFoundError naming what was asked for.
    """
    if isinstance(ref, int):
        mv = s.get(ModelVersion, ref)
        if mv is None:
            raise NotFoundError(f"model version id {ref} does not exist")
        return mv
    q = select(ModelVersion).where(ModelVersion.name == ref)
    if version is not None:
        q = q.where(ModelVersion.version == version)
    mv = s.scalars(q.order_by(ModelVersion.version.desc()).limit(1)).first()
    if mv is None:
        versions = s.scalars(
            select(ModelVersion.version)
            .where(ModelVersion.name == ref)
            .order_by(ModelVersion.version)
        ).all()
        what = f"model {ref!r}" + (f" version {version}" if version is not None else "")
        hint = f"known versions: {list(versions)}" if versions else "no version is registered"
        raise NotFoundError(f"{what} does not exist; {hint}")
    return mv


def production_model(s: Session, name: str) -> ModelVersion | None:
    """The ``production`` version of model ``name``, or None."""
    q = select(ModelVersion).where(ModelVersion.name == name, ModelVersion.stage == "production")
    return s.scalars(q).one_or_none()


def promote(s: Session, model_version_id: int) -> ModelVersion:
    """Make the version ``production`` and archive the previous production one of its name."""
    mv = get_model_version(s, model_version_id)
    if mv.stage == "production":
        return mv
    s.execute(
        update(ModelVersion)
        .where(
            ModelVersion.name == mv.name,
            ModelVersion.stage == "production",
            ModelVersion.id != mv.id,
        )
        .values(stage="archived")
    )
    mv.stage = "production"
    mv.promoted_at = func.now()
    s.flush()
    return mv


def archive(s: Session, model_version_id: int) -> ModelVersion:
    """Retire a version (``archived``); a name may then have no production version."""
    mv = get_model_version(s, model_version_id)
    mv.stage = "archived"
    s.flush()
    return mv


def list_model_versions(s: Session, name: str | None = None) -> list[ModelVersion]:
    """Versions by name, then version number."""
    q = select(ModelVersion)
    if name is not None:
        q = q.where(ModelVersion.name == name)
    return list(s.scalars(q.order_by(ModelVersion.name, ModelVersion.version)))


# --- prediction cache ------------------------------------------------------------------


def cached_prediction(
    s: Session, imagery_hash: str, model_version_id: int, shard_id: str
) -> PredictionCache | None:
    """The cache entry of the shard's prediction for this imagery and model (where its
    mosaic is, which run made it), or None."""
    q = select(PredictionCache).where(
        PredictionCache.imagery_hash == imagery_hash,
        PredictionCache.model_version_id == model_version_id,
        PredictionCache.shard_id == shard_id,
    )
    return s.scalar(q)


def drop_prediction(s: Session, imagery_hash: str, model_version_id: int, shard_id: str) -> None:
    """Forget a cached prediction (its file was found damaged)."""
    s.execute(
        delete(PredictionCache).where(
            PredictionCache.imagery_hash == imagery_hash,
            PredictionCache.model_version_id == model_version_id,
            PredictionCache.shard_id == shard_id,
        )
    )


def store_prediction(
    s: Session,
    imagery_hash: str,
    model_version_id: int,
    shard_id: str,
    uri: str,
    *,
    run_id: int | None = None,
    sha256: str | None = None,
) -> None:
    """Remember where the shard's prediction for this imagery and model is, the hash of
    its bytes and which run made it (replaces)."""
    upsert(
        s,
        PredictionCache,
        {
            "imagery_hash": imagery_hash,
            "model_version_id": model_version_id,
            "shard_id": shard_id,
            "uri": uri,
            "sha256": sha256,
            "run_id": run_id,
        },
        ["imagery_hash", "model_version_id", "shard_id"],
        also_set={"created_at": func.now()},
    )


def _dict(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return dict(value) if value is not None else None
