"""The changes stage: merge a run's predicted buildings across shard edges (kept for the
next step and for publishing) and store the changes against the latest succeeded run
of an earlier step (the rules are in :mod:`pipeline.score.changes`)."""

from __future__ import annotations

import logging
import time
from typing import Any

import geopandas as gpd
import pandas as pd
from shapely.geometry.base import BaseGeometry
from sqlalchemy.orm import Session

from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.run import layout
from pipeline.run.handoffs import AuditPlan, ChangesOutcome
from pipeline.run.inputs import (
    RunInputs,
    compared_opendata,
    geoparquet_bytes,
    load_run_inputs,
    read_geoparquet,
    read_opendata,
)
from pipeline.run.snapshots import opendata_snapshot
from pipeline.score.changes import ChangeConfig, detect_changes
from pipeline.score.vectorize import merge_across_edges

log = logging.getLogger(__name__)
WEB_MERCATOR = "EPSG:3857"


def store_run_changes(ctx: Context, plan: AuditPlan) -> ChangesOutcome:
    """Merge the planned run's predicted buildings, compare them and the open data with
    the previous step, and store the changes (idempotent). A reused run has its changes."""
    run_id = plan.run_id
    if plan.reused:
        with Session(ctx.engine) as s:
            n = repo.run_result_counts(s, run_id)["n_changes"]
        return ChangesOutcome(run_id, n, reused=True)
    t0 = time.perf_counter()
    inputs = load_run_inputs(ctx, run_id)
    with Session(ctx.engine) as s:
        shard_ids = sorted(repo.done_shards(s, run_id))
        tiles = repo.tile_scores_frame(s, run_id)
    buildings = merged_buildings(ctx, run_id, shard_ids)
    ctx.store.write_bytes(layout.run_buildings_key(run_id), geoparquet_bytes(buildings))
    opendata, footprint = compared_opendata(ctx, inputs, tiles)
    changes = changes_for_run(ctx, inputs, buildings, opendata, footprint=footprint)
    seconds = time.perf_counter() - t0
    with write_session(ctx.engine) as s:
        repo.replace_changes(s, run_id, changes)
        repo.add_stage_seconds(s, run_id, {"changes": seconds})
    return ChangesOutcome(run_id, len(changes), seconds=seconds)


def merged_buildings(ctx: Context, run_id: int, shard_ids: list[str]) -> gpd.GeoDataFrame:
    """Predicted buildings of the given shards of a run, merged across shard edges."""
    keys = [layout.shard_buildings_key(run_id, sid) for sid in shard_ids]
    parts = [read_geoparquet(ctx, key) for key in keys if ctx.store.exists(key)]
    if not parts:
        return gpd.GeoDataFrame({"confidence": []}, geometry=[], crs=WEB_MERCATOR)
    frame = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=WEB_MERCATOR)
    return merge_across_edges(frame)


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
    with Session(ctx.engine) as s:
        run = repo.get_run(s, inputs.run_id)
        previous = repo.previous_run(s, run.aoi_id, inputs.step)
        if previous is None:
            return []
        prev_step, prev_id, aoi_id = previous.step, previous.id, run.aoi_id
        prev_opendata = opendata_snapshot(s, previous.opendata_snapshot_id)
    key = layout.run_buildings_key(prev_id)
    if not ctx.store.exists(key):
        log.warning("previous run has no stored buildings", extra={"run_id": prev_id})
        return []
    prev_buildings = read_geoparquet(ctx, key)
    prev_frame = read_opendata(ctx, prev_opendata).to_crs(WEB_MERCATOR)
    if footprint is not None:
        prev_frame = prev_frame[prev_frame.representative_point().within(footprint)]
    config = ChangeConfig(min_area_m2=inputs.aoi.thresholds.change_min_m2)
    changes = detect_changes(
        prev_buildings, buildings, prev_frame, opendata, config=config, footprint=footprint
    ).to_crs("EPSG:4326")
    return [
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
        for rec in changes.to_dict("records")
    ]


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if f != f else f
