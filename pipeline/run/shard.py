"""The shard stage: rasterize labels, predict, score tiles and vectorize one shard.

:func:`process_shard` is the unit of work a scheduler fans out (one mapped task per
shard). It is idempotent: re-running a shard replaces its rows and artifacts. A shard
that fails is recorded as failed (the run cannot succeed without it) and the error
is raised again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
from shapely.geometry import box
from sqlalchemy.exc import SQLAlchemyError

from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.errors import GeoAuditError
from pipeline.rasterize import rasterize_ids
from pipeline.redact import redact
from pipeline.run import layout
from pipeline.run.handoffs import ShardOutcome
from pipeline.run.inputs import (
    RunInputs,
    geoparquet_bytes,
    load_run_inputs,
    read_opendata,
    read_shard_image,
)
from pipeline.run.labels import shard_labels
from pipeline.run.predict import predict_run_shard
from pipeline.score.aggregate import flag_tiles
from pipeline.score.metrics import TileMetrics, footprint_stats, tile_metrics
from pipeline.score.vectorize import vectorize_mask
from pipeline.tiles import Shard, Tile, block_of, lnglat_bounds, parse_shard_id, shard_transform

log = logging.getLogger(__name__)


def process_shard(ctx: Context, run_id: int, shard_id: str) -> ShardOutcome:
    """Rasterize, predict, score and vectorize one shard; store its rows in one transaction."""
    inputs = load_run_inputs(ctx, run_id)
    try:
        outcome = _process(ctx, inputs, parse_shard_id(shard_id, inputs.aoi.work_zoom))
    except Exception as exc:
        _record_failure(ctx, run_id, shard_id, exc)
        raise
    log.info("shard done", extra=outcome.to_xcom())
    return outcome


def _record_failure(ctx: Context, run_id: int, shard_id: str, exc: Exception) -> None:
    """Record the shard as failed with the error (best effort: the error itself is what
    the caller sees, even when the database cannot take the record)."""
    try:
        with write_session(ctx.engine) as s:
            repo.fail_shard(s, run_id, shard_id, redact(f"{type(exc).__name__}: {exc}")[:2000])
    except (SQLAlchemyError, GeoAuditError) as record_exc:
        log.warning(
            "shard failure not recorded",
            extra={"run_id": run_id, "shard": shard_id, "error": str(record_exc)},
        )


def _process(ctx: Context, inputs: RunInputs, shard: Shard) -> ShardOutcome:
    config = inputs.aoi
    if shard.id not in inputs.imagery.shards:
        outcome = ShardOutcome(shard.id, "no_imagery")
        with write_session(ctx.engine) as s:
            repo.replace_shard_results(s, inputs.run_id, shard.id, [], outcome.to_xcom())
        return outcome

    image = read_shard_image(ctx, inputs.imagery.shards[shard.id])
    valid = image.valid
    t0 = time.perf_counter()
    labels = shard_labels(ctx, config.name, inputs.opendata, shard)
    t1 = time.perf_counter()
    prediction = predict_run_shard(ctx, inputs, shard, image)
    t2 = time.perf_counter()
    metrics = tile_metrics(labels, prediction.prob >= 0.5, valid=valid)
    aoi_tiles = sorted(config.shards().get(shard, []))
    rows = tile_rows(metrics, shard, aoi_tiles, config.thresholds.qod_flag)
    buildings = vectorize_mask(prediction.prob, shard_transform(shard), valid=valid)
    ctx.store.write_bytes(
        layout.shard_buildings_key(inputs.run_id, shard.id), geoparquet_bytes(buildings)
    )
    ctx.store.write_bytes(
        layout.shard_footprints_key(inputs.run_id, shard.id),
        footprint_table(read_opendata(ctx, inputs.opendata), shard, prediction.prob, valid),
    )
    t3 = time.perf_counter()

    outcome = ShardOutcome(
        shard.id,
        "done",
        tiles=len(rows),
        buildings=len(buildings),
        cache_hit=prediction.cache_hit,
        rasterize_s=round(t1 - t0, 4),
        predict_s=round(t2 - t1, 4),
        score_s=round(t3 - t2, 4),
    )
    with write_session(ctx.engine) as s:
        repo.replace_shard_results(s, inputs.run_id, shard.id, rows, outcome.to_xcom())
    return outcome


def footprint_table(
    opendata: gpd.GeoDataFrame, shard: Shard, prob: np.ndarray, valid: np.ndarray
) -> bytes:
    """Parquet bytes of :func:`~pipeline.score.metrics.footprint_stats` per ``feature_id``
    of the footprints over the shard."""
    idx, raster = rasterize_ids(opendata, shard)
    stats = footprint_stats(raster, prob, valid, idx.size)
    table = pd.DataFrame({"feature_id": opendata["feature_id"].to_numpy()[idx], **stats})
    return table.to_parquet(index=False)


def tile_rows(
    metrics: TileMetrics, shard: Shard, tiles: list[Tile], qod_flag: float
) -> list[dict[str, Any]]:
    """``tile_score`` rows of the AOI's tiles in a shard that have valid pixels; tiles are
    flagged by QoD alone here (findings flag more when the run is published)."""
    rows = []
    for tile in tiles:
        row, col = block_of(tile, shard)
        if metrics.valid[row, col] == 0:
            continue
        qod = float(metrics.qod[row, col])
        rows.append(
            {
                "z": tile.z,
                "x": tile.x,
                "y": tile.y,
                "iou": float(metrics.iou[row, col]),
                "precision": float(metrics.precision[row, col]),
                "recall": float(metrics.recall[row, col]),
                "f1": float(metrics.f1[row, col]),
                "qod": qod,
                "fg_label": float(metrics.fg_label[row, col]),
                "fg_pred": float(metrics.fg_pred[row, col]),
                "tp": int(metrics.tp[row, col]),
                "fp": int(metrics.fp[row, col]),
                "fn": int(metrics.fn[row, col]),
                "valid_px": int(metrics.valid[row, col]),
                "n_findings": 0,
                "flagged": bool(flag_tiles(np.array([qod]), np.zeros(1), np.ones(1), qod_flag)[0]),
                "geometry": box(*lnglat_bounds(tile)),
            }
        )
    return rows
