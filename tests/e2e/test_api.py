"""The notebook API (:mod:`pipeline.api`) on the audited sample town: what a Python
user gets are GeoDataFrames of the stored results, and bad names are clear errors."""

from __future__ import annotations

import geopandas as gpd
import pytest
from sqlalchemy.orm import Session

from pipeline import api
from pipeline.db import repo
from pipeline.errors import NotFoundError
from pipeline.sample.demo import SAMPLE_AOI

pytestmark = pytest.mark.slow


@pytest.fixture
def on_audited(audited, monkeypatch):
    monkeypatch.setattr(api, "_context", audited.ctx)
    return audited


def test_results_are_geodataframes_of_what_is_stored(on_audited):
    ctx = on_audited.ctx
    assert SAMPLE_AOI in api.aoi_names()
    latest = api.results(SAMPLE_AOI)
    with Session(ctx.engine) as s:
        aoi = repo.get_aoi(s, SAMPLE_AOI)
        run = repo.latest_run(s, aoi.id, status="succeeded")
        stored = {
            "tile_scores": len(repo.tile_scores_frame(s, run.id)),
            "findings": len(repo.findings_frame(s, run.id)),
            "changes": len(repo.changes_frame(s, run.id)),
            "hotspots": len(repo.hotspots_frame(s, run.id)),
        }
    assert (latest.run_id, latest.aoi, latest.step) == (run.id, SAMPLE_AOI, run.step)
    for name, frame in latest.items():
        assert isinstance(frame, gpd.GeoDataFrame) and frame.crs == "EPSG:4326", name
        assert (frame["aoi"] == SAMPLE_AOI).all(), name
    assert {k: len(getattr(latest, k)) for k in stored} == stored
    assert stored["findings"] > 0 and stored["changes"] > 0  # the second step has both
    assert {"evidence", "verdict", "osm_url", "josm_url"} <= set(latest.findings.columns)
    trend = api.trend(SAMPLE_AOI)
    assert list(trend["step"]) == sorted(trend["step"]) and len(trend) >= 2
    first = api.results(SAMPLE_AOI, step=str(trend["step"].iloc[0]))
    assert first.step < latest.step and first.changes.empty


def test_audit_of_an_unchanged_step_loads_it(on_audited):
    latest = api.results(SAMPLE_AOI)
    again = api.audit(SAMPLE_AOI, latest.step)
    assert again.run_id == latest.run_id  # nothing changed: nothing redone
    assert len(again.findings) == len(latest.findings)


def test_bad_names_are_clear_errors(on_audited):
    with pytest.raises(NotFoundError, match="nowhere"):
        api.results("nowhere")
    with pytest.raises(NotFoundError, match="no finished audit at step 1999-01-01"):
        api.results(SAMPLE_AOI, step="1999-01-01")
