"""Stage 7, changes: compare a run with the latest finished run of an earlier step."""

from __future__ import annotations

import io
import logging
from typing import Any

import geopandas as gpd
from shapely.geometry.base import BaseGeometry
from sqlalchemy.orm import Session

from pipeline.changes import ChangeConfig, detect_changes
from pipeline.context import Context
from pipeline.db import repo
from pipeline.fetch import read_opendata
from pipeline.shard_stage import RunInputs

log = logging.getLogger(__name__)


def changes_for_run(
    ctx: Context,
    inputs: RunInputs,
    buildings: gpd.GeoDataFrame,
    opendata: gpd.GeoDataFrame,
    *,
    footprint: BaseGeometry | None = None,
) -> list[dict[str, Any]]:
    """Change rows (EPSG:4326 geometries) between the previous step's run and this one.

    ``footprint`` (EPSG:3857) limits the comparison to where this run looked (a bbox
    subset). Returns an empty list for the first time step of an AOI.
    """
    from pipeline.publish import run_buildings_key

    with Session(ctx.engine) as s:
        run = repo.get_run(s, inputs.run_id)
        previous = repo.previous_run(s, run.aoi_id, inputs.step)
        if previous is None:
            return []
        prev_step, prev_id, aoi_id = previous.step, previous.id, run.aoi_id
        prev_opendata_meta = dict(repo.get_snapshot(s, previous.opendata_snapshot_id).meta)
    key = run_buildings_key(prev_id)
    if not ctx.store.exists(key):
        log.warning("previous run has no stored buildings", extra={"run_id": prev_id})
        return []
    prev_buildings = gpd.read_parquet(io.BytesIO(ctx.store.read_bytes(key)))
    prev_opendata = read_opendata(ctx, prev_opendata_meta).to_crs("EPSG:3857")
    if footprint is not None:
        prev_opendata = prev_opendata[prev_opendata.representative_point().within(footprint)]
    config = ChangeConfig(min_area_m2=inputs.aoi.thresholds.change_min_m2)
    changes = detect_changes(
        prev_buildings, buildings, prev_opendata, opendata, config=config, footprint=footprint
    )
    changes = changes.to_crs("EPSG:4326")
    rows = []
    for rec in changes.to_dict("records"):
        rows.append(
            {
                "aoi_id": aoi_id,
                "step_from": prev_step,
                "step_to": inputs.step,
                "kind": rec["kind"],
                "feature_id": rec.get("feature_id"),
                "area_m2": _num(rec.get("area_m2")),
                "confidence": _num(rec.get("confidence")),
                "detail": {"detail": rec.get("detail")} if rec.get("detail") else {},
                "geometry": rec["geometry"],
            }
        )
    return rows


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if f != f else f
