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
from pipeline.db.migrate import upgrade
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
