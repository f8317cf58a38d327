"""Stages 6 (objects), 7 and 8 for a whole run: findings, hotspots, changes, summary.

Per-shard buildings are merged across shard edges, matched against the open
data, aggregated to hotspots and AOI scores, compared with the previous time
step, and written in one transaction that also marks the run finished.
"""

from __future__ import annotations

import functools
import io
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry
from sqlalchemy.orm import Session

from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.errors import RunStateError
from pipeline.score.aggregate import aoi_aggregates
from pipeline.score.hotspots import hotspots as rank_hotspots
from pipeline.score.match import MatchConfig, match_buildings
from pipeline.score.vectorize import merge_across_edges
from pipeline.shard_stage import RunInputs, buildings_key, load_run_inputs, opendata_frame
from pipeline.tiles import Tile
from pipeline.validate import ValidationReport, validate_outputs

log = logging.getLogger(__name__)
WEB_MERCATOR = "EPSG:3857"


def run_buildings_key(run_id: int) -> str:
    """Artifact key of a run's merged predicted buildings (EPSG:3857)."""
    return f"runs/{run_id}/buildings.parquet"


def _read_parquet(ctx: Context, key: str) -> gpd.GeoDataFrame:
    return gpd.read_parquet(io.BytesIO(ctx.store.read_bytes(key)))


def merged_buildings(ctx: Context, run_id: int, shard_ids: list[str]) -> gpd.GeoDataFrame:
    """Predicted buildings of all shards of a run, merged across shard edges."""
    parts = [
        _read_parquet(ctx, buildings_key(run_id, sid))
        for sid in shard_ids
        if ctx.store.exists(buildings_key(run_id, sid))
    ]
    if not parts:
        return gpd.GeoDataFrame({"confidence": []}, geometry=[], crs=WEB_MERCATOR)
    frame = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs=WEB_MERCATOR)
    return merge_across_edges(frame)


def _tile_of(points: gpd.GeoSeries, zoom: int) -> pd.DataFrame:
    """XYZ tile of each point (EPSG:4326), vectorised: the mercantile formula.

    ``x = floor((lon + 180) / 360 * 2^z)``,
    ``y = floor((1 - asinh(tan(lat)) / pi) / 2 * 2^z)``.
    """
    n = 2**zoom
    lon = points.x.to_numpy()
    lat = np.radians(points.y.to_numpy())
    x = np.floor((lon + 180.0) / 360.0 * n).astype(int)
    y = np.floor((1.0 - np.arcsinh(np.tan(lat)) / math.pi) / 2.0 * n).astype(int)
    return pd.DataFrame(
        {"tile_z": zoom, "tile_x": np.clip(x, 0, n - 1), "tile_y": np.clip(y, 0, n - 1)}
    )


def _compared_opendata(
    ctx: Context, inputs: RunInputs, tiles: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame, BaseGeometry | None]:
    """The run's open data in EPSG:3857 and, for a bbox subset run, the footprint it
    looked at (only the open data inside it is compared)."""
    opendata = opendata_frame(ctx, inputs).to_crs(WEB_MERCATOR)
    if inputs.bbox is None:
        return opendata, None
    footprint = tiles.to_crs(WEB_MERCATOR).union_all()
    return opendata[opendata.representative_point().within(footprint)], footprint


def store_run_changes(ctx: Context, run_id: int) -> dict[str, Any]:
    """The changes stage on its own: merge the run's predicted buildings (kept for the
    next step), compare with the previous step and store the changes. Idempotent."""
    from pipeline.change_stage import changes_for_run

    t0 = time.perf_counter()
    inputs = load_run_inputs(ctx, run_id)
    with Session(ctx.engine) as s:
        shard_ids = [r.shard_id for r in repo.get_run(s, run_id).shards if r.status == "done"]
        tiles = repo.tile_scores_frame(s, run_id)
    buildings = merged_buildings(ctx, run_id, shard_ids)
    ctx.store.write_bytes(run_buildings_key(run_id), _to_parquet(buildings))
    opendata, footprint = _compared_opendata(ctx, inputs, tiles)
    changes = changes_for_run(ctx, inputs, buildings, opendata, footprint=footprint)
    with Session(ctx.engine) as s, s.begin():
        repo.replace_changes(s, run_id, changes)
    return {"run_id": run_id, "n_changes": len(changes), "seconds": time.perf_counter() - t0}


def publish_run(
    ctx: Context,
    run_id: int,
    *,
    extra_seconds: dict[str, float] | None = None,
    changes_stored: bool = False,
    outputs_validator: Callable[..., ValidationReport] | None = None,
) -> dict[str, Any]:
    """Compute and store findings, hotspots, changes and the AOI score; finish the run.

    With ``changes_stored`` the changes stage already ran (:func:`store_run_changes`,
    a task of its own in Airflow): its merged buildings and changes are used as stored.
    The output suites (``outputs_validator``, in-process by default) check the tile
    scores and findings first; a critical failure raises and publishes nothing.
    """
    t0 = time.perf_counter()
    inputs = load_run_inputs(ctx, run_id)
    config = inputs.aoi
    with Session(ctx.engine) as s:
        shard_rows = [r for r in repo.get_run(s, run_id).shards if r.status == "done"]
        tiles = repo.tile_scores_frame(s, run_id)
    shard_ids = [r.shard_id for r in shard_rows]
    if changes_stored:
        buildings = _read_parquet(ctx, run_buildings_key(run_id))
    else:
        buildings = merged_buildings(ctx, run_id, shard_ids)
    opendata, footprint = _compared_opendata(ctx, inputs, tiles)

    th = config.thresholds
    match_config = MatchConfig(
        iou_match=th.iou_match, min_area_m2=th.min_building_m2, min_offset_m=th.min_offset_m
    )
    findings, summary = match_buildings(buildings, opendata, config=match_config, with_summary=True)
    findings_4326 = findings.to_crs("EPSG:4326")
    tile_index = _tile_of(findings_4326.geometry.representative_point(), config.work_zoom)
    findings_4326 = pd.concat([findings_4326.reset_index(drop=True), tile_index], axis=1)
    shift = config.work_zoom - config.shard_zoom
    findings_4326["shard_id"] = [
        f"{config.shard_zoom}-{x >> shift}-{y >> shift}"
        for x, y in zip(findings_4326["tile_x"], findings_4326["tile_y"], strict=True)
    ]

    counts = findings_4326.groupby(["tile_x", "tile_y"]).size()
    tiles = tiles.copy()
    tiles["n_findings"] = [
        int(counts.get((x, y), 0)) for x, y in zip(tiles["x"], tiles["y"], strict=True)
    ]
    tiles["flagged"] = (tiles["qod"] < th.qod_flag) | (tiles["n_findings"] > 0)

    aoi_tiles = [
        Tile(int(x), int(y), int(z))
        for x, y, z in zip(tiles["x"], tiles["y"], tiles["z"], strict=True)
    ]
    hotspot_cells = (
        rank_hotspots(
            findings_4326, aoi_tiles, cell_zoom=config.hotspot_cell_zoom(), top_k=th.hotspot_top_k
        )
        if aoi_tiles
        else gpd.GeoDataFrame(geometry=[], crs="EPSG:4326")
    )
    aggregates = aoi_aggregates(
        tiles,
        findings_4326,
        n_predicted=summary.n_predicted,
        n_opendata=summary.n_opendata,
        n_matched=summary.n_matched,
        qod_threshold=th.qod_flag,
    )

    changes: list[dict[str, Any]] | None = None
    if changes_stored:
        buildings_uri = ctx.store.uri(run_buildings_key(run_id))
    else:
        from pipeline.change_stage import changes_for_run

        buildings_uri = ctx.store.write_bytes(run_buildings_key(run_id), _to_parquet(buildings))
        changes = changes_for_run(ctx, inputs, buildings, opendata, footprint=footprint)
    # the outputs suites: nothing is published from rows that break them
    check = outputs_validator or functools.partial(validate_outputs, ctx)
    check(run_id, config, inputs.step, tiles, findings_4326, shard_ids).raise_for_critical()
    publish_s = time.perf_counter() - t0

    stage_seconds = _stage_seconds(shard_rows, extra_seconds or {}, publish_s)
    with Session(ctx.engine) as s, s.begin():
        repo.replace_findings(s, run_id, finding_rows(findings_4326))
        repo.update_tile_flags(
            s, run_id, tiles[["z", "x", "y", "n_findings", "flagged"]].to_dict("records")
        )
        repo.replace_hotspots(s, run_id, _records(hotspot_cells))
        if changes is not None:
            repo.replace_changes(s, run_id, changes)
        n_changes = repo.run_result_counts(s, run_id)["n_changes"]
        repo.write_aoi_score(
            s,
            run_id,
            {
                **{k: aggregates[k] for k in AOI_SCORE_COLUMNS if k in aggregates},
                "n_tiles": int(len(tiles)),
                "model_version_id": inputs.model_version_id,
                "extra": {k: v for k, v in aggregates.items() if k not in AOI_SCORE_COLUMNS},
            },
        )
        repo.finish_run(s, run_id, "succeeded", stage_seconds=stage_seconds)
    log.info("run published", extra={"run_id": run_id, "findings": len(findings_4326)})
    return {
        "run_id": run_id,
        "aoi": config.name,
        "step": inputs.step,
        "aggregates": aggregates,
        "n_findings": int(len(findings_4326)),
        "n_changes": n_changes,
        "n_hotspots": int(len(hotspot_cells)),
        "buildings_uri": buildings_uri,
        "stage_seconds": stage_seconds,
    }


def stored_run_summary(ctx: Context, run_id: int) -> dict[str, Any]:
    """The summary :func:`publish_run` returned for a finished run, read back from storage."""
    with Session(ctx.engine) as s:
        run = repo.get_run(s, run_id)
        if run.status != "succeeded" or run.score is None:
            raise RunStateError(f"run {run_id} has no published results (status {run.status})")
        score = run.score
        aggregates = {k: getattr(score, k) for k in AOI_SCORE_COLUMNS}
        aggregates.update(score.extra or {})
        counts = repo.run_result_counts(s, run_id)
        return {
            "run_id": run_id,
            "aoi": run.aoi.name,
            "step": run.step,
            "aggregates": aggregates,
            **counts,
            "buildings_uri": ctx.store.uri(run_buildings_key(run_id)),
            "stage_seconds": dict(run.stage_seconds or {}),
        }


def _stage_seconds(
    shard_rows: list[Any], extra: dict[str, float], publish_s: float
) -> dict[str, dict[str, float]]:
    """Sum per-shard stage times; tiles/s = tiles processed / stage seconds."""
    n_tiles = sum(int((r.stats or {}).get("tiles", 0)) for r in shard_rows)
    out: dict[str, dict[str, float]] = {}
    for stage in ("rasterize", "predict", "score"):
        secs = sum(float((r.stats or {}).get(f"{stage}_s", 0.0)) for r in shard_rows)
        out[stage] = {
            "seconds": round(secs, 3),
            "tiles_per_s": round(n_tiles / secs, 2) if secs else 0.0,
        }
    for stage, secs in extra.items():
        out[stage] = {
            "seconds": round(secs, 3),
            "tiles_per_s": round(n_tiles / secs, 2) if secs else 0.0,
        }
    out["publish"] = {
        "seconds": round(publish_s, 3),
        "tiles_per_s": round(n_tiles / publish_s, 2) if publish_s else 0.0,
    }
    return out


def _to_parquet(frame: gpd.GeoDataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


FINDING_COLUMNS = (
    "kind",
    "feature_id",
    "area_m2",
    "confidence",
    "iou",
    "offset_m",
    "tile_z",
    "tile_x",
    "tile_y",
    "shard_id",
)
FINDING_DETAIL = ("coverage", "iou_shifted", "dx_m", "dy_m")
AOI_SCORE_COLUMNS = (
    "completeness",
    "correctness",
    "mean_iou",
    "mean_qod",
    "flagged_tile_share",
    "n_opendata",
    "n_predicted",
    "findings_by_kind",
)


def finding_rows(frame: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    """Findings as table rows; measures without a column go into ``detail``."""
    rows = []
    for rec in _records(frame):
        row = {k: rec.get(k) for k in FINDING_COLUMNS}
        row["detail"] = {k: rec[k] for k in FINDING_DETAIL if rec.get(k) is not None}
        row["geometry"] = rec["geometry"]
        rows.append(row)
    return rows


def _records(frame: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts with shapely geometries and NaN turned into None."""
    if frame.empty:
        return []
    plain = pd.DataFrame(frame).astype(object).where(pd.notna(frame), None)
    return plain.to_dict("records")


__all__ = ["publish_run", "merged_buildings", "run_buildings_key", "RunInputs"]
