"""Database layer: SQLAlchemy models, engines, Alembic migrations and data functions.

Typical use::

    from sqlalchemy.orm import Session
    from pipeline.db import make_engine, upgrade, repo

    engine = make_engine("sqlite:///geoaudit.db")   # or postgresql+psycopg://...
    upgrade(engine)
    with write_session(engine) as s:
        aoi = repo.upsert_aoi(s, "lisbon", {}, polygon)
"""

from __future__ import annotations

from pipeline.db import repo
from pipeline.db.engine import make_engine, session_scope, write_session
from pipeline.db.errors import RowError, RunStateError
from pipeline.db.models import (
    Aoi,
    AoiScore,
    Base,
    Change,
    Finding,
    Hotspot,
    ModelVersion,
    PredictionCache,
    Review,
    Run,
    RunShard,
    Snapshot,
    TileScore,
    ValidationResult,
)


def __getattr__(name: str) -> object:
    """:func:`~pipeline.db.migrate.upgrade`, imported on first use (it loads Alembic)."""
    if name == "upgrade":
        from pipeline.db.migrate import upgrade

        return upgrade
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Aoi",
    "AoiScore",
    "Base",
    "Change",
    "Finding",
    "Hotspot",
    "ModelVersion",
    "PredictionCache",
    "Review",
    "RowError",
    "Run",
    "RunShard",
    "RunStateError",
    "Snapshot",
    "TileScore",
    "ValidationResult",
    "make_engine",
    "repo",
    "session_scope",
    "write_session",
    "upgrade",
]
