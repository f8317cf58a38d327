"""The whole audit on real imagery: OpenAerialMap XYZ tiles of Lalitpur (Nepal)
with real OpenStreetMap footprints (tests/data/oam-lalitpur, see its README)."""

from __future__ import annotations

from pathlib import Path

import mercantile
import pytest
from PIL import Image
from sqlalchemy.orm import Session

from audited_town import make_context
from pipeline.aoi import parse_aoi
from pipeline.aoi.registry import register_aoi
from pipeline.db import repo
from pipeline.results.export import export_run
from pipeline.run.local import run_audit
from pipeline.training.challenger import train_aoi_model

DATA = Path(__file__).resolve().parents[1] / "data" / "oam-lalitpur"
# One cluster of z20 tiles: x 773394..773397, y 440526..440529.
TILES = [mercantile.Tile(x, y, 20) for x in range(773394, 773398) for y in range(440526, 440530)]

pytestmark = pytest.mark.slow


def cluster_bbox(shrink: float = 1e-7) -> list[float]:
    west, south, east, north = mercantile.bounds(TILES[0])
    for tile in TILES[1:]:
        b = mercantile.bounds(tile)
        west, south, east, north = (
            min(west, b.west),
            min(south, b.south),
            max(east, b.east),
            max(north, b.north),
        )
    return [west + shrink, south + shrink, east - shrink, north - shrink]


def test_audit_of_real_oam_tiles_and_osm_footprints(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "home")
    config = register_aoi(
        ctx,
        parse_aoi(
            {
                "name": "lalitpur",
                "bbox": cluster_bbox(),
                "work_zoom": 20,
                "shard_zoom": 18,
                "imagery": {"kind": "xyz", "path": str(DATA / "tiles"), "zoom": 20},
                "opendata": {
                    "kind": "vector",
                    "path": str(DATA / "buildings_osm.geojson"),
                    "id_field": "osm_id",
                },
                "model": {"train": {"max_seconds": 25, "heldout_share": 0.25}},
            }
        ),
    )
    assert len(config.tiles()) == 16

    trained = train_aoi_model(ctx, "lalitpur", ["2025-01-01"], promote="always")
    assert 0.0 <= trained.val_iou <= 1.0
    result = run_audit(ctx, "lalitpur", "2025-01-01")

    with Session(ctx.engine) as s:
        run = repo.get_run(s, result.run_id)
        assert run.status == "succeeded"
        tiles = repo.tile_scores_frame(s, result.run_id)
        findings = repo.findings_frame(s, result.run_id)
        score = repo.aoi_scores(s, run.aoi_id)[-1]
    assert sorted(zip(tiles["x"], tiles["y"], strict=True)) == sorted((t.x, t.y) for t in TILES)
    assert tiles["qod"].between(0, 100).all() and tiles["iou"].between(0, 1).all()
    assert tiles["fg_label"].max() > 0.05  # the OSM buildings land on these tiles
    assert score.n_opendata > 10
    aoi_box = config.geometry.buffer(0.001)
    assert findings.geometry.intersects(aoi_box).all()

    out = export_run(ctx, result.run_id, tmp_path / "export", fmt="gpkg", flagged_only=False)
    assert out.findings.exists() and len(out.composites) == 16
    with Image.open(out.composites[0]) as png:
        assert png.size == (256, 256) and png.mode == "RGB"


def test_a_tile_service_on_loopback_is_audited_with_the_demo_model(audited) -> None:
    """The Lalitpur tiles served by a real HTTP tile server (URL template), audited end to
    end with the model the demo trained (model lineage ``sample-town``)."""
    from sources.imagery_servers import tile_server

    ctx = audited.ctx
    with tile_server(DATA / "tiles") as server:
        register_aoi(
            ctx,
            parse_aoi(
                {
                    "name": "lalitpur-tiles",
                    "bbox": cluster_bbox(),
                    "work_zoom": 20,
                    "shard_zoom": 18,
                    "imagery": {"kind": "xyz", "path": server.url + "/{z}/{x}/{y}.png", "zoom": 20},
                    "opendata": {
                        "kind": "vector",
                        "path": str(DATA / "buildings_osm.geojson"),
                        "id_field": "osm_id",
                    },
                    "model": {"name": "sample-town"},
                }
            ),
        )
        result = run_audit(ctx, "lalitpur-tiles", "2025-01-01")
        served = server.paths(200)
    with Session(ctx.engine) as s:
        run = repo.get_run(s, result.run_id)
        assert run.status == "succeeded"
        assert run.model_version_id == repo.production_model(s, "sample-town").id
        snapshot = repo.get_snapshot(s, run.imagery_snapshot_id)
        tiles = repo.tile_scores_frame(s, result.run_id)
    assert snapshot.source.startswith(server.url)
    assert {f"/20/{t.x}/{t.y}.png" for t in TILES} <= set(served)
    assert sorted(zip(tiles["x"], tiles["y"], strict=True)) == sorted((t.x, t.y) for t in TILES)
    assert tiles["fg_label"].max() > 0.05 and tiles["qod"].between(0, 100).all()
