"""A run's inputs and their reads: the run's AOI, step, snapshots
(:mod:`pipeline.run.snapshots`) and model version in one typed value
(:func:`load_run_inputs`), a shard's imagery (:func:`read_shard_image`) and the open
data (:func:`read_opendata`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from shapely.geometry.base import BaseGeometry
from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig, parse_aoi
from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import ConfigError, StoreError
from pipeline.mosaic import read_mosaic
from pipeline.run.snapshots import (
    ImagerySnapshot,
    OpenDataSnapshot,
    ShardRef,
    imagery_snapshot,
    opendata_snapshot,
)

WEB_MERCATOR = "EPSG:3857"


@dataclass(frozen=True)
class RunInputs:
    """Everything a stage needs to know about its run."""

    run_id: int
    aoi: AoiConfig
    step: str
    imagery: ImagerySnapshot
    opendata: OpenDataSnapshot
    model_version_id: int
    repredict: bool = False
    bbox: tuple[float, ...] | None = None


def load_run_inputs(ctx: Context, run_id: int) -> RunInputs:
    """Read a run's AOI configuration (as when it started), snapshots and model version."""
    with Session(ctx.engine) as s:
        run = repo.get_run(s, run_id)
        aoi_row = repo.get_aoi(s, run.aoi_id)
        if run.imagery_snapshot_id is None or run.opendata_snapshot_id is None:
            raise ConfigError(f"run {run_id} has no snapshots: it was not planned by an audit")
        params = run.params or {}
        bbox = params.get("bbox")
        return RunInputs(
            run_id=run.id,
            aoi=parse_aoi(dict(aoi_row.config), source=f"AOI {aoi_row.name!r}"),
            step=run.step,
            imagery=imagery_snapshot(s, run.imagery_snapshot_id),
            opendata=opendata_snapshot(s, run.opendata_snapshot_id),
            model_version_id=int(run.model_version_id),
            repredict=bool(params.get("repredict", False)),
            bbox=tuple(float(v) for v in bbox) if bbox else None,
        )


class ShardPixels(NamedTuple):
    """A shard's imagery ``(bands, H, W) uint8`` and valid-data mask ``(H, W) bool``."""

    data: np.ndarray
    valid: np.ndarray


def read_shard_image(ctx: Context, ref: ShardRef, *, size: int | None = None) -> ShardPixels:
    """The imagery mosaic of one shard; ``size`` reads it decimated to ``size`` px per
    side (nearest neighbour). A mosaic without a mask is valid everywhere."""
    with ctx.store.readable_path(ref.key) as path:
        if size is None:
            data, valid = read_mosaic(path)
            return ShardPixels(data, np.ones(data.shape[1:], bool) if valid is None else valid)
        try:
            with rasterio.open(path) as src:
                bands = [1, 2, 3][: src.count]
                data = src.read(
                    bands, out_shape=(len(bands), size, size), resampling=Resampling.nearest
                )
                valid = src.dataset_mask(out_shape=(size, size)) > 0
        except RasterioError as exc:
            raise StoreError(
                f"imagery mosaic {ref.key} of shard {ref.shard_id}: cannot read ({exc})"
            ) from exc
    return ShardPixels(data, valid)


_opendata_cache: dict[tuple[str, str], gpd.GeoDataFrame] = {}


def read_opendata(ctx: Context, snapshot: OpenDataSnapshot) -> gpd.GeoDataFrame:
    """An open-data snapshot's footprints as prepared at fetch time (``feature_id`` +
    repaired polygons in EPSG:3857); the last one read is kept per process (a run's
    shards share it)."""
    cache_key = (ctx.store.url, snapshot.content_hash)
    if cache_key not in _opendata_cache:
        frame = read_geoparquet(ctx, snapshot.key)
        _opendata_cache.clear()
        _opendata_cache[cache_key] = frame
    return _opendata_cache[cache_key]


def compared_opendata(
    ctx: Context, inputs: RunInputs, tiles: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame, BaseGeometry | None]:
    """The run's open data in EPSG:3857 and, for a bbox subset run, the area it looked at
    (EPSG:3857, the union of its scored ``tiles``): only open data inside it is compared."""
    opendata = read_opendata(ctx, inputs.opendata).to_crs(WEB_MERCATOR)
    if inputs.bbox is None:
        return opendata, None
    footprint = tiles.to_crs(WEB_MERCATOR).union_all()
    return opendata[opendata.representative_point().within(footprint)], footprint


def read_geoparquet(ctx: Context, key: str) -> gpd.GeoDataFrame:
    """A GeoParquet artifact (predicted buildings, open data)."""
    return gpd.read_parquet(io.BytesIO(ctx.store.read_bytes(key)))


def geoparquet_bytes(frame: gpd.GeoDataFrame) -> bytes:
    """A GeoDataFrame as GeoParquet bytes, to store as an artifact."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()
