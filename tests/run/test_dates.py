"""Each source at its own date: the AOI's date rules resolve, from the audit date, the
snapshot each source reads; a scheduled audit (no pinned step) whose sources and model
did not change since the last succeeded run is recorded as "no new data".

The sources are real: two dated copies of the Lalitpur tile tree (the later one with a
tile seen otherwise, as a new flight would) and one dated copy of its OSM buildings."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig, parse_aoi
from pipeline.db import repo
from pipeline.errors import ConfigError, NotFoundError
from pipeline.run.fetch import fetch_imagery, fetch_opendata
from pipeline.run.local import run_audit
from pipeline.run.snapshots import imagery_snapshot, source_step
from pipeline.tiles import Tile

from ._helpers import register, small_config_overrides
from .conftest import DATA, RealAoi

EARLY, LATE, OSM_DATE = "2025-01-01", "2025-06-01", "2025-01-01"
# a small AOI: two tiles, one shard each (fast with the untrained model)
AREA = [Tile(773394, 440526, 20), Tile(773395, 440526, 20)]


@pytest.fixture(scope="module")
def dated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiles-<date>/`` for two dates and ``osm-<date>.geojson`` for one."""
    root = tmp_path_factory.mktemp("dated")
    shutil.copytree(DATA / "tiles", root / f"tiles-{EARLY}")
    later = root / f"tiles-{LATE}"
    shutil.copytree(DATA / "tiles", later)
    changed = later / "20" / str(AREA[1].x) / f"{AREA[1].y}.png"
    with Image.open(changed) as tile:  # the new flight sees this tile otherwise
        tile.transpose(Image.Transpose.ROTATE_180).save(changed)
    shutil.copyfile(DATA / "buildings_osm.geojson", root / f"osm-{OSM_DATE}.geojson")
    (root / "osm-not-a-date.geojson").write_text("{}")  # ignored by the listing
    return root


def _config(real_aoi: RealAoi, root: Path, **dates: str) -> AoiConfig:
    return register(
        real_aoi.ctx,
        "dated",
        imagery={"kind": "xyz", "path": str(root / "tiles-{step}"), "zoom": 20},
        opendata={"kind": "vector", "path": str(root / "osm-{step}.geojson"), "id_field": "osm_id"},
        model={"name": "buildings"},
        dates=dates or {"imagery": "latest", "opendata": "latest"},
        **small_config_overrides(AREA),
    )


def test_latest_rule_picks_the_newest_snapshot_on_or_before_the_audit_date(
    real_aoi: RealAoi, dated: Path
) -> None:
    config = _config(real_aoi, dated)
    assert source_step(config, "imagery", "2025-03-15") == EARLY
    assert source_step(config, "imagery", LATE) == LATE
    assert source_step(config, "imagery", "2026-12-01") == LATE
    assert source_step(config, "opendata", "2026-12-01") == OSM_DATE
    with pytest.raises(NotFoundError, match=r"no snapshot dated on or before 2024-12-31"):
        source_step(config, "imagery", "2024-12-31")


def test_audit_and_fixed_date_rules(real_aoi: RealAoi, dated: Path) -> None:
    config = _config(real_aoi, dated, imagery="audit", opendata=OSM_DATE)
    assert source_step(config, "imagery", "2025-03-15") == "2025-03-15"
    assert source_step(config, "opendata", "2026-12-01") == OSM_DATE
    # the audit rule reads exactly the audit date: no imagery dated 2025-03-15
    with pytest.raises(Exception, match="2025-03-15"):
        fetch_imagery(real_aoi.ctx, config, "2025-03-15")


def test_a_bad_date_rule_names_itself() -> None:
    with pytest.raises(ConfigError, match=r"dates.imagery.*'latest', 'audit' or an ISO date"):
        parse_aoi(
            {
                "name": "x",
                "bbox": [85.3, 27.6, 85.31, 27.61],
                "imagery": {"kind": "geotiff", "path": "a.tif"},
                "opendata": {"kind": "vector", "path": "b.geojson"},
                "dates": {"imagery": "newest"},
            }
        )


def test_snapshots_record_each_source_own_date(real_aoi: RealAoi, dated: Path) -> None:
    config = _config(real_aoi, dated)
    imagery = fetch_imagery(real_aoi.ctx, config, "2025-09-01")
    opendata = fetch_opendata(real_aoi.ctx, config, "2025-09-01")
    assert (imagery.step, imagery.source_step) == ("2025-09-01", LATE)
    assert (opendata.step, opendata.source_step) == ("2025-09-01", OSM_DATE)
    with Session(real_aoi.ctx.engine) as s:
        snap = imagery_snapshot(s, imagery.snapshot_id)
        row = repo.get_snapshot(s, opendata.snapshot_id)
    assert snap.source_step == LATE and snap.source.endswith(f"tiles-{LATE}")
    assert row.source.endswith(f"osm-{OSM_DATE}.geojson")


def test_scheduled_audits_record_no_new_data_until_a_source_changes(
    real_aoi: RealAoi, dated: Path
) -> None:
    ctx = real_aoi.ctx
    config = _config(real_aoi, dated)

    first = run_audit(ctx, config.name, "2025-03-01", pinned=False)
    with Session(ctx.engine) as s:
        run = repo.get_run(s, first.run_id)
        assert run.status == "succeeded"
        assert run.params["source_steps"] == {"imagery": EARLY, "opendata": OSM_DATE}

    # a week later nothing is new: recorded, not audited, no shard touched
    quiet = run_audit(ctx, config.name, "2025-03-08", pinned=False)
    assert quiet.summary.no_new_data and quiet.shards == []
    assert quiet.summary.run_id == first.run_id  # its results stay current
    with Session(ctx.engine) as s:
        row = repo.get_run(s, quiet.run_id)
        assert (row.status, row.step, row.shards_total) == ("no_new_data", "2025-03-08", 0)
        assert row.params["same_as_run"] == first.run_id and row.finished_at is not None
        assert repo.latest_run(s, row.aoi_id).id == first.run_id  # still the latest results
        assert repo.run_result_counts(s, quiet.run_id)["n_findings"] == 0

    # a pinned step audits even so (an ad-hoc run of a chosen date)
    pinned = run_audit(ctx, config.name, "2025-03-09")
    assert not pinned.summary.no_new_data and pinned.run_id != first.run_id

    # the new flight arrives: the next scheduled audit reads it and audits
    fresh = run_audit(ctx, config.name, "2025-06-07", pinned=False)
    assert not fresh.summary.no_new_data and fresh.predicted_shards >= 1
    with Session(ctx.engine) as s:
        run = repo.get_run(s, fresh.run_id)
        assert run.status == "succeeded"
        assert run.params["source_steps"] == {"imagery": LATE, "opendata": OSM_DATE}
        new, old = (
            imagery_snapshot(s, repo.get_run(s, r).imagery_snapshot_id).shards
            for r in (fresh.run_id, first.run_id)
        )
        changed = {sid for sid in new if new[sid].content_hash != old[sid].content_hash}
        assert changed == {"20-773395-440526"}

    # and --force audits a scheduled date with nothing new
    forced = run_audit(ctx, config.name, "2025-06-14", pinned=False, force=True)
    assert not forced.summary.no_new_data
    with Session(ctx.engine) as s:
        assert repo.get_run(s, forced.run_id).status == "succeeded"
