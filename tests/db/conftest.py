"""Fixtures for database tests: ``make_run`` commits an AOI and a run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from pipeline.db import repo

from ._db_helpers import WORK_ZOOM, aoi_polygon


@pytest.fixture
def make_run(engine: Engine) -> Callable[..., int]:
    """Commit the AOI (created or updated) and a new run of it; returns the run id."""

    def _make(step: str = "2024-06", shards_total: int = 1, aoi: str = "lisbon", **kw: Any) -> int:
        with Session(engine) as s, s.begin():
            a = repo.upsert_aoi(s, aoi, {"work_zoom": WORK_ZOOM}, aoi_polygon())
            run = repo.start_run(s, a.id, step, trigger="test", shards_total=shards_total, **kw)
            return run.id

    return _make
