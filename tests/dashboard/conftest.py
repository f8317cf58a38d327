"""The dashboard under Streamlit's AppTest, on the audited sample town (both dialects).

``app_env`` points the dashboard's settings at the town's database and artifacts and
at an Airflow that is not there. Reviews written by a test are removed after it, so
the end-to-end tests that share the town see none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from basemap_server import basemap_server
from sqlalchemy import delete

from audited_town import Audited
from pipeline.context import Context
from pipeline.db.models import Review

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
UNREACHABLE_AIRFLOW = "http://127.0.0.1:9"  # the discard port: nothing listens


@pytest.fixture
def app_env(audited: Audited, monkeypatch: pytest.MonkeyPatch) -> Iterator[Context]:
    """Environment of a dashboard on the audited town; reviews are removed afterwards."""
    ctx = audited.ctx
    monkeypatch.setenv("GEOAUDIT_HOME", str(ctx.settings.home))
    monkeypatch.setenv("GEOAUDIT_DATABASE_URL", ctx.settings.resolved_database_url)
    monkeypatch.setenv("GEOAUDIT_ARTIFACT_ROOT", ctx.settings.resolved_artifact_root)
    monkeypatch.setenv("GEOAUDIT_AIRFLOW_URL", UNREACHABLE_AIRFLOW)
    monkeypatch.setenv("GEOAUDIT_AIRFLOW_USERNAME", "admin")
    monkeypatch.delenv("GEOAUDIT_REVIEW_PASSWORD", raising=False)
    import streamlit as st

    st.cache_data.clear()
    yield ctx
    st.cache_data.clear()
    with ctx.engine.begin() as conn:
        conn.execute(delete(Review))


@pytest.fixture
def open_page(app_env: Context) -> Callable:
    """``open_page("review")`` → an AppTest that has run the entry script and that page."""
    from streamlit.testing.v1 import AppTest

    def _open(page: str | None = None, **session: object):
        at = AppTest.from_file(str(APP), default_timeout=120)
        for key, value in session.items():
            at.session_state[key] = value
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if page is not None:
            at.switch_page(f"views/{page}.py").run()
            assert not at.exception, [e.value for e in at.exception]
        return at

    return _open


@pytest.fixture
def tile_server() -> Iterator[tuple[str, list[str]]]:
    """:func:`basemap_server` without delay."""
    with basemap_server() as served:
        yield served
