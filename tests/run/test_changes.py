"""The changes stage on two real steps: the same imagery (so the same predicted buildings)
and OpenStreetMap footprints edited between the steps: two removed, one moved, one
added. One-tile shards keep the network's work small."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from shapely.affinity import translate
from shapely.geometry import mapping, shape
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig
from pipeline.db import repo
from pipeline.run import layout
from pipeline.run.changes import changes_for_run, merged_buildings, store_run_changes
from pipeline.run.handoffs import AuditPlan
from pipeline.run.inputs import load_run_inputs, read_geoparquet
from pipeline.run.shard import process_shard
from pipeline.tiles import Tile, lnglat_bounds

from ._helpers import bbox_of, planned, register, run_row, small_config_overrides
from .conftest import DATA, STEP, RealAoi

NEXT = "2025-07-01"
TILES = [Tile(x, y, 20) for x in (773394, 773395) for y in (440526, 440527)]
EAST, WEST = Tile(773395, 440526, 20), Tile(773394, 440526, 20)


def _inside(feature: dict[str, Any], tile: Tile) -> bool:
    point = shape(feature["geometry"]).representative_point()
    return shapely.box(*lnglat_bounds(tile)).contains(point)


def _square(lon: float, lat: float, half: float = 1.5e-5) -> dict[str, Any]:
    ring = [
        [lon - half, lat - half],
        [lon + half, lat - half],
        [lon + half, lat + half],
        [lon - half, lat + half],
        [lon - half, lat - half],
    ]
    return {"type": "Polygon", "coordinates": [ring]}


@dataclass(frozen=True)
class Edits:
    """What changed in the open data between the steps (feature ids)."""

    removed_west: str
    removed_east: str
    moved: str
    added: str


#: the folder of the per-step footprints, and what changed between the steps
Edited = tuple[Path, Edits]


@pytest.fixture(scope="module")
def edits(tmp_path_factory: pytest.TempPathFactory) -> Edited:
    """Footprints per step: ``buildings_<step>.geojson``."""
    folder = tmp_path_factory.mktemp("steps")
    shutil.copyfile(DATA / "buildings_osm.geojson", folder / f"buildings_{STEP}.geojson")
    data = json.loads((DATA / "buildings_osm.geojson").read_text())
    named = [f for f in data["features"] if f["properties"].get("osm_id") is not None]
    west = [f for f in named if _inside(f, WEST)]
    east = [f for f in named if _inside(f, EAST)]
    # a building moved by about 4 m that stays in the west tile
    mover = next(
        f
        for f in west[1:]
        if _inside({"geometry": mapping(translate(shape(f["geometry"]), 4e-5, 0))}, WEST)
    )
    edits = Edits(
        removed_west=str(west[0]["properties"]["osm_id"]),
        removed_east=str(east[0]["properties"]["osm_id"]),
        moved=str(mover["properties"]["osm_id"]),
        added="999000001",
    )
    data["features"] = [f for f in data["features"] if f not in (west[0], east[0])]
    mover["geometry"] = mapping(translate(shape(mover["geometry"]), 4e-5, 0))
    w, s, e, n = lnglat_bounds(EAST)
    data["features"].append(
        {
            "type": "Feature",
            "properties": {"osm_id": int(edits.added)},
            "geometry": _square((w + e) / 2, (s + n) / 2),
        }
    )
    (folder / f"buildings_{NEXT}.geojson").write_text(json.dumps(data))
    return folder, edits


@pytest.fixture(scope="module")
def town(real_aoi: RealAoi, edits: Edited) -> AoiConfig:
    folder, _ = edits
    return register(
        real_aoi.ctx,
        "steps",
        opendata={
            "kind": "vector",
            "path": str(folder / "buildings_{step}.geojson"),
            "id_field": "osm_id",
        },
        **small_config_overrides(TILES),
    )


def _scored(real_aoi: RealAoi, config: AoiConfig, step: str, **request: Any) -> AuditPlan:
    plan = planned(real_aoi.ctx, config, step, **request)
    for sid in plan.shard_ids:
        process_shard(real_aoi.ctx, plan.run_id, sid)
    return plan


def _succeed(real_aoi: RealAoi, plan: AuditPlan) -> None:
    with Session(real_aoi.ctx.engine) as s, s.begin():
        repo.finish_run(s, plan.run_id, "succeeded")


@pytest.fixture(scope="module")
def first(real_aoi: RealAoi, town: AoiConfig) -> AuditPlan:
    plan = _scored(real_aoi, town, STEP)
    store_run_changes(real_aoi.ctx, plan)
    _succeed(real_aoi, plan)
    return plan


@pytest.fixture(scope="module")
def second(real_aoi: RealAoi, town: AoiConfig, first: AuditPlan) -> AuditPlan:
    return _scored(real_aoi, town, NEXT)


def _changes(real_aoi: RealAoi, run_id: int) -> gpd.GeoDataFrame:
    with Session(real_aoi.ctx.engine) as s:
        return repo.changes_frame(s, run_id)


def test_the_first_step_has_no_changes_but_its_merged_buildings(
    real_aoi: RealAoi, town: AoiConfig
) -> None:
    ctx = real_aoi.ctx
    plan = _scored(real_aoi, town, STEP, force=True)
    outcome = store_run_changes(ctx, plan)
    assert outcome.run_id == plan.run_id and outcome.n_changes == 0
    assert not outcome.reused and outcome.seconds > 0
    assert _changes(real_aoi, plan.run_id).empty
    assert "changes" in run_row(ctx, plan.run_id).stage_seconds
    merged = read_geoparquet(ctx, layout.run_buildings_key(plan.run_id))
    parts = pd.concat(
        [read_geoparquet(ctx, layout.shard_buildings_key(plan.run_id, s)) for s in plan.shard_ids]
    )
    assert merged.crs.to_epsg() == 3857 and 0 < len(merged) <= len(parts)
    # merging across shard edges joins pieces, it does not lose area
    assert merged.union_all().area == pytest.approx(parts.union_all().area, rel=1e-3)
    assert changes_for_run(ctx, load_run_inputs(ctx, plan.run_id), merged, merged) == []


def test_open_data_edits_are_the_changes(
    real_aoi: RealAoi, second: AuditPlan, first: AuditPlan, edits: Edited
) -> None:
    _, edit = edits
    outcome = store_run_changes(real_aoi.ctx, second)
    changes = _changes(real_aoi, second.run_id)
    assert outcome.n_changes == len(changes) > 0
    by_kind = changes.groupby("kind")["feature_id"].apply(set).to_dict()
    # the same imagery at both steps: no building appeared or disappeared
    assert by_kind == {
        "removed": {edit.removed_west, edit.removed_east},
        "added": {edit.added},
        "modified": {edit.moved},
    }
    assert (changes["step_from"] == STEP).all() and (changes["step_to"] == NEXT).all()
    modified = changes[changes["kind"] == "modified"].iloc[0]
    assert modified["detail"] == {"detail": "geometry_changed"}
    assert changes.crs.to_epsg() == 4326
    area = shapely.box(*bbox_of(TILES, shrink=-1e-4))
    assert changes.geometry.intersects(area).all()


def test_storing_changes_again_replaces_them(real_aoi: RealAoi, second: AuditPlan) -> None:
    n = store_run_changes(real_aoi.ctx, second).n_changes
    again = store_run_changes(real_aoi.ctx, second)
    assert again.n_changes == n == len(_changes(real_aoi, second.run_id))


def test_a_reused_run_reports_its_stored_changes(real_aoi: RealAoi, second: AuditPlan) -> None:
    n = store_run_changes(real_aoi.ctx, second).n_changes
    reused = AuditPlan(second.aoi, second.step, second.run_id, (), reused=True)
    outcome = store_run_changes(real_aoi.ctx, reused)
    assert outcome.reused and outcome.run_id == second.run_id and outcome.n_changes == n


def test_a_bbox_run_compares_only_where_it_looked(
    real_aoi: RealAoi, town: AoiConfig, second: AuditPlan, edits: Edited
) -> None:
    _, edit = edits
    plan = _scored(real_aoi, town, NEXT, force=True, bbox=tuple(bbox_of([WEST])))
    assert plan.shard_ids == (f"20-{WEST.x}-{WEST.y}",)
    store_run_changes(real_aoi.ctx, plan)
    changes = _changes(real_aoi, plan.run_id)
    by_kind = changes.groupby("kind")["feature_id"].apply(set).to_dict()
    # the east tile's edits are outside the looked-at area
    assert by_kind == {"removed": {edit.removed_west}, "modified": {edit.moved}}


def test_a_previous_run_without_buildings_gives_no_changes(
    real_aoi: RealAoi, first: AuditPlan, second: AuditPlan
) -> None:
    ctx = real_aoi.ctx
    path = Path(ctx.store.path(layout.run_buildings_key(first.run_id)))
    aside = path.with_name("aside.parquet")
    path.rename(aside)
    try:
        inputs = load_run_inputs(ctx, second.run_id)
        buildings = merged_buildings(ctx, second.run_id, list(second.shard_ids))
        assert changes_for_run(ctx, inputs, buildings, buildings) == []
    finally:
        aside.rename(path)


def test_merged_buildings_of_no_shard_is_an_empty_frame(
    real_aoi: RealAoi, second: AuditPlan
) -> None:
    empty = merged_buildings(real_aoi.ctx, second.run_id, [])
    assert empty.empty and empty.crs.to_epsg() == 3857 and "confidence" in empty.columns
    none_stored = merged_buildings(real_aoi.ctx, second.run_id, ["20-1-1"])
    assert none_stored.empty
