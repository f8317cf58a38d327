"""Stages 4–6 for one shard: rasterize labels, predict, score tiles, vectorize.

``process_shard`` is the unit of work a scheduler fans out (one mapped task per
shard). It is idempotent: re-running a shard replaces its rows and artifacts.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
from shapely.geometry import box
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig
from pipeline.context import Context
from pipeline.db import repo
from pipeline.fetch import read_opendata
from pipeline.mosaic import read_mosaic, write_mosaic
from pipeline.predictions import predict_shard
from pipeline.rasterize import rasterize_shard
from pipeline.score.metrics import tile_metrics
from pipeline.score.vectorize import vectorize_mask
from pipeline.tiles import Shard, block_of, lnglat_bounds, parse_shard_id, shard_transform

log = logging.getLogger(__name__)
_opendata_cache: dict[tuple[str, str], gpd.GeoDataFrame] = {}


@dataclass(frozen=True)
class RunInputs:
    """Everything a shard needs to know about its run."""

    run_id: int
    aoi: AoiConfig
    step: str
    imagery_meta: dict
    opendata_meta: dict
    opendata_hash: str
    model_version_id: int
    repredict: bool
    bbox: list[float] | None = None


def load_run_inputs(ctx: Context, run_id: int) -> RunInputs:
    """Read a run's AOI configuration, snapshots and model version."""
    from pipeline.aoi import parse_aoi

    with Session(ctx.engine) as s:
        run = repo.get_run(s, run_id)
        aoi_row = repo.get_aoi(s, run.aoi_id)
        imagery = repo.get_snapshot(s, run.imagery_snapshot_id)
        opendata = repo.get_snapshot(s, run.opendata_snapshot_id)
        return RunInputs(
            run_id=run.id,
            aoi=parse_aoi(dict(aoi_row.config), source=f"AOI {aoi_row.name!r}"),
            step=run.step,
            imagery_meta=dict(imagery.meta),
            opendata_meta=dict(opendata.meta),
            opendata_hash=opendata.content_hash,
            model_version_id=run.model_version_id,
            repredict=bool((run.params or {}).get("repredict", False)),
            bbox=(run.params or {}).get("bbox"),
        )


def opendata_frame(ctx: Context, inputs: RunInputs) -> gpd.GeoDataFrame:
    """The run's open-data snapshot (cached per process: many shards share it)."""
    key = (ctx.settings.resolved_artifact_root, inputs.opendata_hash)
    if key not in _opendata_cache:
        _opendata_cache.clear()
        _opendata_cache[key] = read_opendata(ctx, inputs.opendata_meta)
    return _opendata_cache[key]


def labels_key(aoi: str, opendata_hash: str, shard_id: str) -> str:
    """Artifact key of a shard's label mosaic (depends on the open data only)."""
    return f"aois/{aoi}/labels/{opendata_hash[:16]}/{shard_id}.tif"


def shard_labels(ctx: Context, inputs: RunInputs, shard: Shard) -> np.ndarray:
    """Rasterized open-data footprints of a shard, stored once per open-data snapshot."""
    return labels_for(ctx, inputs.aoi.name, inputs.opendata_hash, inputs.opendata_meta, shard)


def labels_for(
    ctx: Context, aoi: str, opendata_hash: str, opendata_meta: dict, shard: Shard
) -> np.ndarray:
    """Label mosaic of ``shard`` for an open-data snapshot, rasterized once and stored."""
    key = labels_key(aoi, opendata_hash, shard.id)
    if ctx.store.exists(key):
        with ctx.store.readable_path(key) as path:
            data, _ = read_mosaic(path)
        return np.asarray(data).reshape(shard.size, shard.size).astype(np.uint8)
    cache_key = (ctx.settings.resolved_artifact_root, opendata_hash)
    if cache_key not in _opendata_cache:
        _opendata_cache.clear()
        _opendata_cache[cache_key] = read_opendata(ctx, opendata_meta)
    result = rasterize_shard(_opendata_cache[cache_key], shard)
    with ctx.store.writable_path(key) as tmp:
        write_mosaic(tmp, result.labels, shard, kind="label")
    return result.labels


def buildings_key(run_id: int, shard_id: str) -> str:
    """Artifact key of the vectorized predicted buildings of a shard (EPSG:3857)."""
    return f"runs/{run_id}/buildings/{shard_id}.parquet"


def predict_ahead(ctx: Context, run_id: int, shard_id: str) -> float | None:
    """Fill the prediction cache for one shard of a run (no score, no row): work that can
    go on while the run's inputs are being validated. Its seconds, None when the shard
    has no imagery or its prediction was in the cache already (nothing was done ahead).
    """
    t0 = time.perf_counter()
    inputs = load_run_inputs(ctx, run_id)
    meta = inputs.imagery_meta.get("shards", {}).get(shard_id)
    if meta is None:
        return None
    with ctx.store.readable_path(meta["key"]) as path:
        image, valid = read_mosaic(path)
    prediction = predict_shard(
        ctx,
        aoi=inputs.aoi.name,
        shard=parse_shard_id(shard_id, inputs.aoi.work_zoom),
        image=image,
        valid=np.ones(image.shape[1:], dtype=bool) if valid is None else valid,
        imagery_hash=meta["hash"],
        model_version_id=inputs.model_version_id,
        force=inputs.repredict,
    )
    return None if prediction.cache_hit else time.perf_counter() - t0


def process_shard(
    ctx: Context, run_id: int, shard_id: str, *, predicted_s: float | None = None
) -> dict[str, float | int | bool | str]:
    """Rasterize, predict, score and vectorize one shard; store its rows in one transaction.

    ``predicted_s``: :func:`predict_ahead` just ran for this shard in this run (taking
    that long), so its cached prediction is used even when the run re-predicts, and
    counts as predicted in this run.
    """
    predicted = predicted_s is not None
    inputs = load_run_inputs(ctx, run_id)
    config = inputs.aoi
    shard = parse_shard_id(shard_id, config.work_zoom)
    aoi_tiles = set(config.shards().get(shard, []))
    stats: dict[str, float | int | bool | str] = {"shard_id": shard_id, "tiles": 0}
    meta = inputs.imagery_meta.get("shards", {}).get(shard_id)
    if meta is None:
        stats["status"] = "no_imagery"
        with Session(ctx.engine) as s, s.begin():
            repo.replace_shard_results(s, run_id, shard_id, [], stats)
        return stats

    with ctx.store.readable_path(meta["key"]) as path:
        image, valid = read_mosaic(path)
    valid = np.ones(image.shape[1:], dtype=bool) if valid is None else valid

    t0 = time.perf_counter()
    labels = shard_labels(ctx, inputs, shard)
    t1 = time.perf_counter()
    prediction = predict_shard(
        ctx,
        aoi=config.name,
        shard=shard,
        image=image,
        valid=valid,
        imagery_hash=meta["hash"],
        model_version_id=inputs.model_version_id,
        force=inputs.repredict and not predicted,
    )
    t2 = time.perf_counter()
    metrics = tile_metrics(labels, prediction.prob >= 0.5, valid=valid)
    rows = []
    for tile in sorted(aoi_tiles):
        row, col = block_of(tile, shard)
        if metrics.valid[row, col] == 0:
            continue
        rows.append(
            {
                "z": tile.z,
                "x": tile.x,
                "y": tile.y,
                "iou": float(metrics.iou[row, col]),
                "precision": float(metrics.precision[row, col]),
                "recall": float(metrics.recall[row, col]),
                "f1": float(metrics.f1[row, col]),
                "qod": float(metrics.qod[row, col]),
                "fg_label": float(metrics.fg_label[row, col]),
                "fg_pred": float(metrics.fg_pred[row, col]),
                "tp": int(metrics.tp[row, col]),
                "fp": int(metrics.fp[row, col]),
                "fn": int(metrics.fn[row, col]),
                "valid_px": int(metrics.valid[row, col]),
                "n_findings": 0,
                "flagged": bool(metrics.qod[row, col] < config.thresholds.qod_flag),
                "geometry": box(*lnglat_bounds(tile)),
            }
        )
    buildings = vectorize_mask(prediction.prob, shard_transform(shard), valid=valid)
    buffer = io.BytesIO()
    buildings.to_parquet(buffer, index=False)
    ctx.store.write_bytes(buildings_key(run_id, shard_id), buffer.getvalue())
    t3 = time.perf_counter()

    stats.update(
        status="done",
        tiles=len(rows),
        buildings=len(buildings),
        cache_hit=prediction.cache_hit and not predicted,
        rasterize_s=round(t1 - t0, 4),
        predict_s=round(t2 - t1 + (predicted_s or 0.0), 4),
        score_s=round(t3 - t2, 4),
    )
    with Session(ctx.engine) as s, s.begin():
        repo.replace_shard_results(s, run_id, shard_id, rows, stats)
    log.info("shard done", extra=stats)
    return stats
