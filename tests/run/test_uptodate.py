"""An unchanged re-audit answered before the stages: on an AOI of local files (the
Lalitpur cluster's real imagery as a GeoTIFF, its OSM buildings as GeoJSON), the
earlier run is found from the files and the database alone, every change to what the
audit depends on sends it through the stages, and from the shell it answers without
importing torch, geopandas, rasterio or Great Expectations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cli_process import run_cli
from PIL import Image
from rasterio.transform import from_bounds
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig
from pipeline.aoi.registry import register_aoi
from pipeline.db import repo
from pipeline.run.handoffs import AuditRequest
from pipeline.run.local import AuditResult, run_audit
from pipeline.run.summary import stored_run_summary
from pipeline.run.uptodate import up_to_date_summary
from pipeline.sources import open_imagery, open_vector
from pipeline.sources.identity import local_file_fingerprint
from pipeline.tiles import Tile, xy_bounds

from ._helpers import small_config_overrides, unique_name
from .conftest import DATA, STEP, RealAoi, lalitpur_config, register_untrained_model

#: 2 x 2 z20 tiles of the cluster: one z19 shard
AREA = [Tile(773394 + dx, 440526 + dy, 20) for dx in (0, 1) for dy in (0, 1)]


def write_cluster_geotiff(path: Path) -> Path:
    """The AREA's real z20 PNG tiles stitched into one EPSG:3857 GeoTIFF."""
    xs, ys = sorted({t.x for t in AREA}), sorted({t.y for t in AREA})
    pixels = np.zeros((3, 256 * len(ys), 256 * len(xs)), np.uint8)
    for t in AREA:
        with Image.open(DATA / "tiles" / "20" / str(t.x) / f"{t.y}.png") as tile:
            rgb = np.asarray(tile.convert("RGB")).transpose(2, 0, 1)
        row, col = ys.index(t.y) * 256, xs.index(t.x) * 256
        pixels[:, row : row + 256, col : col + 256] = rgb
    west, _, _, north = xy_bounds(Tile(xs[0], ys[0], 20))
    _, south, east, _ = xy_bounds(Tile(xs[-1], ys[-1], 20))
    profile = {
        "driver": "GTiff",
        "width": pixels.shape[2],
        "height": pixels.shape[1],
        "count": 3,
        "dtype": "uint8",
        "crs": "EPSG:3857",
        "transform": from_bounds(west, south, east, north, pixels.shape[2], pixels.shape[1]),
        "tiled": True,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
    return path


@pytest.fixture(scope="module")
def files_aoi(real_aoi: RealAoi, tmp_path_factory: pytest.TempPathFactory) -> AoiConfig:
    root = tmp_path_factory.mktemp("uptodate")
    write_cluster_geotiff(root / "imagery.tif")
    shutil.copyfile(DATA / "buildings_osm.geojson", root / "buildings.geojson")
    return register_aoi(
        real_aoi.ctx,
        lalitpur_config(
            unique_name("files"),
            imagery={"kind": "geotiff", "path": str(root / "imagery.tif")},
            opendata={
                "kind": "vector",
                "path": str(root / "buildings.geojson"),
                "id_field": "osm_id",
            },
            **small_config_overrides(AREA, shard_zoom=19),
        ),
    )


@pytest.fixture(scope="module")
def first(real_aoi: RealAoi, files_aoi: AoiConfig) -> AuditResult:
    return run_audit(real_aoi.ctx, files_aoi.name, STEP)


def test_the_file_fingerprints_are_those_the_opened_sources_give(files_aoi: AoiConfig) -> None:
    with open_imagery(files_aoi.imagery, step=STEP) as imagery:
        assert local_file_fingerprint(files_aoi.imagery, step=STEP, base_dir=None) == (
            imagery.fingerprint()
        )
    with open_vector(files_aoi.opendata, step=STEP) as opendata:
        assert local_file_fingerprint(files_aoi.opendata, step=STEP, base_dir=None) == (
            opendata.fingerprint()
        )


def test_an_unchanged_request_finds_the_run_that_answers_it(
    real_aoi: RealAoi, files_aoi: AoiConfig, first: AuditResult
) -> None:
    ctx = real_aoi.ctx
    assert not first.reused
    found = up_to_date_summary(ctx, AuditRequest(files_aoi.name, STEP))
    assert found == stored_run_summary(ctx, first.run_id, reused=True)
    again = run_audit(ctx, files_aoi.name, STEP)
    assert again.reused and again.run_id == first.run_id and again.shards == []
    assert again.summary == found


@pytest.mark.parametrize(
    "options",
    [{"force": True}, {"repredict": True}, {"pinned": False}, {"bbox": (0.0, 0.0, 1.0, 1.0)}],
    ids=["force", "repredict", "scheduled", "bbox"],
)
def test_requests_that_ask_for_more_go_through_the_stages(
    real_aoi: RealAoi, files_aoi: AoiConfig, first: AuditResult, options: dict
) -> None:
    assert up_to_date_summary(real_aoi.ctx, AuditRequest(files_aoi.name, STEP, **options)) is None


def test_a_changed_file_another_model_or_other_settings_go_through_the_stages(
    real_aoi: RealAoi, files_aoi: AoiConfig, first: AuditResult, tmp_path: Path
) -> None:
    ctx = real_aoi.ctx
    request = AuditRequest(files_aoi.name, STEP)
    # another model version than the run's
    other = register_untrained_model(ctx, unique_name("other-model"), seed=1)
    assert (
        up_to_date_summary(ctx, AuditRequest(files_aoi.name, STEP, model_version_id=other)) is None
    )
    # settings that change results
    stricter = files_aoi.thresholds.model_copy(update={"iou_match": 0.55})
    register_aoi(ctx, files_aoi.model_copy(update={"thresholds": stricter}))
    try:
        assert up_to_date_summary(ctx, request) is None
    finally:
        register_aoi(ctx, files_aoi)
    assert up_to_date_summary(ctx, request) is not None
    # the open data edited in place: the stored snapshot no longer stands for it
    geojson = Path(files_aoi.opendata.path)
    original = geojson.read_bytes()
    data = json.loads(original)
    data["features"] = data["features"][1:]
    geojson.write_text(json.dumps(data))
    try:
        assert up_to_date_summary(ctx, request) is None
    finally:
        geojson.write_bytes(original)
    assert up_to_date_summary(ctx, request) is not None


def test_an_abandoned_run_is_closed_by_an_up_to_date_re_audit(
    real_aoi: RealAoi, files_aoi: AoiConfig, first: AuditResult
) -> None:
    ctx = real_aoi.ctx
    with Session(ctx.engine) as s, s.begin():
        aoi_id = repo.get_aoi(s, files_aoi.name).id
        abandoned = repo.start_run(s, aoi_id, STEP, trigger="cli", shards_total=1).id
    again = run_audit(ctx, files_aoi.name, STEP)
    assert again.reused and again.run_id == first.run_id
    with Session(ctx.engine) as s:
        run = repo.get_run(s, abandoned)
        assert run.status == "failed" and run.error.startswith("interrupted")


def test_from_the_shell_an_unchanged_re_audit_imports_no_heavy_library(
    real_aoi: RealAoi, files_aoi: AoiConfig, first: AuditResult
) -> None:
    """``geoaudit audit`` in a new process: the answer, and what it imported."""
    done = run_cli(real_aoi.ctx.settings, "audit", files_aoi.name, "--step", STEP)
    assert done.exit_code == 0, done.output
    assert f"run {first.run_id}: {files_aoi.name} {STEP} is up to date" in done.output
    assert done.imported == []
