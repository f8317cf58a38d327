"""The publish stage: findings, tile flags, hotspots and the AOI score of a run, checked
by the output suites and written in one transaction that also marks the run succeeded.

The run's predicted buildings (merged by the changes stage) are matched against its
open data (:mod:`pipeline.score.match`); each finding belongs to the work tile holding
its point on surface (:func:`pipeline.score.aggregate.finding_tiles`) and to that
tile's shard, and tiles are flagged by :func:`pipeline.score.aggregate.flag_tiles`.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.db.models import Finding
from pipeline.run import layout
from pipeline.run.handoffs import AuditPlan, RunSummary, ShardOutcome
from pipeline.run.inputs import compared_opendata, load_run_inputs, read_geoparquet
from pipeline.run.summary import AOI_SCORE_COLUMNS, reused_run_summary, stored_run_summary
from pipeline.run.validate import validator_of
from pipeline.score.aggregate import aoi_aggregates, finding_tiles, findings_per_tile, flag_tiles
from pipeline.score.hotspots import hotspots as rank_hotspots
from pipeline.score.match import MatchConfig, match
from pipeline.tiles import HALF_WORLD_M, TILE_SIZE, Tile, shard_of

log = logging.getLogger(__name__)

# finding measures with a column of their own; the others go into ``detail``
_FINDING_TABLE = frozenset(c.name for c in Finding.__table__.columns) - {"id", "run_id", "detail"}
_SHARD_STAGES = ("rasterize", "predict", "score")


def publish_run(ctx: Context, plan: AuditPlan) -> RunSummary:
    """Compute and store findings, tile flags, hotspots and the AOI score; finish the run.

    The output suites check the tile scores and findings first; a critical failure
    raises and publishes nothing. A reused run is not published again.
    """
    if plan.reused:
        return reused_run_summary(ctx, plan)
    t0 = time.perf_counter()
    run_id = plan.run_id
    inputs = load_run_inputs(ctx, run_id)
    config = inputs.aoi
    with Session(ctx.engine) as s:
        repo.require_shards_done(s, run_id)  # before any work: a failed shard fails it
        shard_ids = sorted(repo.done_shards(s, run_id))
        outcomes = [
            ShardOutcome.from_xcom(r.stats)
            for r in repo.get_run(s, run_id).shards
            if r.status == "done" and r.stats
        ]
        tiles = repo.tile_scores_frame(s, run_id)
    buildings = read_geoparquet(ctx, layout.run_buildings_key(run_id))
    opendata, _ = compared_opendata(ctx, inputs, tiles)
    opendata = with_raster_evidence(ctx, run_id, shard_ids, opendata, config.work_zoom)

    th = config.thresholds
    matched = match(
        buildings,
        opendata,
        config=MatchConfig(
            iou_match=th.iou_match,
            min_area_m2=config.min_building_m2(),
            min_offset_m=th.min_offset_m,
        ),
    )
    findings = _with_tiles(matched.findings, config.work_zoom, config.shard_zoom)
    # a finding is the AOI's when its tile was scored (the shards reach beyond the AOI,
    # and an AOI with holes has tiles left out)
    scored = set(zip(tiles["x"].astype(int), tiles["y"].astype(int), strict=True))
    on_scored = [
        (int(x), int(y)) in scored
        for x, y in zip(findings["tile_x"], findings["tile_y"], strict=True)
    ]
    findings = findings[np.asarray(on_scored, bool)].reset_index(drop=True)
    tiles = tiles.copy()
    tiles["n_findings"] = findings_per_tile(tiles, findings)
    tiles["flagged"] = flag_tiles(
        tiles["qod"].to_numpy(), tiles["n_findings"].to_numpy(), tiles["valid_px"] > 0, th.qod_flag
    )
    aoi_tiles = [
        Tile(int(x), int(y), int(z))
        for x, y, z in zip(tiles["x"], tiles["y"], tiles["z"], strict=True)
    ]
    hotspot_cells = (
        rank_hotspots(
            findings,
            aoi_tiles,
            cell_zoom=config.hotspot_cell_zoom(),
            area=config.geometry,
            alpha=th.hotspot_alpha,
            permutations=th.hotspot_permutations,
            top_k=th.hotspot_top_k,
        )
        if aoi_tiles
        else gpd.GeoDataFrame(geometry=[], crs="EPSG:4326")
    )
    summary = matched.summary
    aggregates = aoi_aggregates(
        tiles,
        findings,
        n_predicted=summary.n_predicted,
        n_opendata=summary.n_opendata,
        n_matched=summary.n_matched,
        qod_threshold=th.qod_flag,
    )
    trust = model_trust(ctx, inputs.model_version_id, th.min_model_iou, th.min_model_tiles)
    aggregates.update(trust)
    if not trust["model_trusted"]:
        findings["low_confidence"] = True
        log.warning("model not trusted: findings marked low-confidence", extra=trust)
    # the output suites: nothing is published from rows that break them
    validator_of(ctx).validate_outputs(
        run_id, config, inputs.step, tiles, findings, shard_ids
    ).raise_for_critical()
    publish_s = time.perf_counter() - t0
    with write_session(ctx.engine) as s:
        repo.replace_findings(s, run_id, finding_rows(findings))
        repo.update_tile_flags(
            s, run_id, tiles[["z", "x", "y", "n_findings", "flagged"]].to_dict("records")
        )
        repo.replace_hotspots(s, run_id, records(hotspot_cells))
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
        shard_seconds = {
            stage: sum(getattr(o, f"{stage}_s") for o in outcomes) for stage in _SHARD_STAGES
        }
        stored = repo.add_stage_seconds(s, run_id, {**shard_seconds, "publish": publish_s})
        n_tiles = sum(o.tiles for o in outcomes)
        repo.finish_run(s, run_id, "succeeded", stage_seconds=_with_rates(stored, n_tiles))
    log.info("run published", extra={"run_id": run_id, "findings": len(findings)})
    return stored_run_summary(ctx, run_id)


def model_trust(
    ctx: Context, model_version_id: int, min_iou: float, min_tiles: int
) -> dict[str, Any]:
    """How far the run's model can be trusted: its out-of-sample IoU and the tiles it was
    validated on (from its registry entry), and whether both reach the AOI's floors."""
    with Session(ctx.engine) as s:
        metrics = dict(repo.get_model_version(s, model_version_id).metrics or {})
    iou = metrics.get("oof_iou", metrics.get("val_iou"))
    tiles = metrics.get("validated_tiles")
    trusted = (
        iou is not None and float(iou) >= min_iou and (tiles is None or int(tiles) >= min_tiles)
    )
    return {
        "model_oof_iou": None if iou is None else float(iou),
        "model_validated_tiles": None if tiles is None else int(tiles),
        "model_trusted": bool(trusted),
    }


def with_raster_evidence(
    ctx: Context, run_id: int, shard_ids: list[str], opendata: gpd.GeoDataFrame, work_zoom: int
) -> gpd.GeoDataFrame:
    """The open data (EPSG:3857) with what the shards' predictions say under each
    footprint: ``imagery_share`` (pixels with imagery / pixels of the footprint's area),
    ``pred_share`` and ``mean_prob`` over its pixels with imagery."""
    keys = [layout.shard_footprints_key(run_id, sid) for sid in shard_ids]
    parts = [
        pd.read_parquet(io.BytesIO(ctx.store.read_bytes(k))) for k in keys if ctx.store.exists(k)
    ]
    out = opendata.copy()
    if not parts:
        return out
    sums = pd.concat(parts).groupby("feature_id")[["n_valid", "sum_prob", "n_pred"]].sum()
    sums = sums.reindex(out["feature_id"].astype(str)).fillna(0.0)
    px_area = (2 * HALF_WORLD_M / (TILE_SIZE * 2**work_zoom)) ** 2  # EPSG:3857 units
    n_valid = sums["n_valid"].to_numpy()
    expected = np.maximum(out.geometry.area.to_numpy() / px_area, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["imagery_share"] = np.minimum(n_valid / expected, 1.0)
        out["pred_share"] = np.where(n_valid > 0, sums["n_pred"].to_numpy() / n_valid, np.nan)
        out["mean_prob"] = np.where(n_valid > 0, sums["sum_prob"].to_numpy() / n_valid, np.nan)
    return out


def _with_tiles(findings: gpd.GeoDataFrame, work_zoom: int, shard_zoom: int) -> gpd.GeoDataFrame:
    """Findings in EPSG:4326 with the work tile (``tile_z/x/y``) and shard they belong to."""
    x, y = finding_tiles(findings, work_zoom)
    out = findings.to_crs("EPSG:4326").reset_index(drop=True)
    out["tile_z"] = work_zoom
    out["tile_x"] = x
    out["tile_y"] = y
    out["shard_id"] = [
        shard_of(Tile(int(tx), int(ty), work_zoom), shard_zoom).id
        for tx, ty in zip(x, y, strict=True)
    ]
    return out


def _with_rates(stage_seconds: dict[str, Any], n_tiles: int) -> dict[str, dict[str, float]]:
    """Each stage's seconds with its rate: ``tiles_per_s = tiles processed / seconds``."""
    out = {}
    for stage, entry in stage_seconds.items():
        secs = float(entry.get("seconds", 0.0))
        out[stage] = {
            "seconds": round(secs, 3),
            "tiles_per_s": round(n_tiles / secs, 2) if secs else 0.0,
        }
    return out


def finding_rows(frame: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    """Findings as ``finding`` table rows; measures without a column go into ``detail``."""
    rows = []
    for rec in records(frame):
        row = {k: v for k, v in rec.items() if k in _FINDING_TABLE}
        row["detail"] = {k: v for k, v in rec.items() if k not in _FINDING_TABLE and v is not None}
        rows.append(row)
    return rows


def records(frame: gpd.GeoDataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts with shapely geometries and NaN turned into None."""
    if frame.empty:
        return []
    plain = pd.DataFrame(frame).astype(object).where(pd.notna(frame), None)
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()}
        for rec in plain.to_dict("records")
    ]
