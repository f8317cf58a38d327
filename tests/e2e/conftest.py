"""An audited sample town per database dialect, shared by the end-to-end tests.

Building it is the expensive part (sample + short training + two audits), so it
happens once per dialect per session.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.context import Context, open_context
from pipeline.settings import Settings

E2E_SIZE_M = 500.0
# A step budget (not a time budget) makes the trained model, and so the bounds the
# tests check, the same on every run; the time cap only guards a very slow machine.
E2E_TRAIN_STEPS = 500
E2E_TRAIN_CAP_S = 600.0


@dataclass
class Audited:
    """A context with the sample town audited at both steps, and the demo summary."""

    ctx: Context
    summary: dict
    dialect: str


def make_context(home: Path, url: str | None = None) -> Context:
    """A context on its own home folder (and database URL)."""
    return open_context(Settings(home=home, database_url=url), progress=False)


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def audited(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Audited]:
    """Sample town → train → audit step 1 and 2 → re-audit, on SQLite or PostGIS."""
    from pipeline.demo import run_demo

    home = tmp_path_factory.mktemp(f"e2e-{request.param}")
    url = None
    if request.param == "postgres":
        server = request.getfixturevalue("_pg_server")
        url = server.create_database().render_as_string(hide_password=False)
    ctx = make_context(home, url)
    result = run_demo(
        ctx, size_m=E2E_SIZE_M, train_steps=E2E_TRAIN_STEPS, train_seconds=E2E_TRAIN_CAP_S
    )
    assert result.path.exists()
    yield Audited(ctx=ctx, summary=result.summary, dialect=request.param)
    ctx.engine.dispose()
