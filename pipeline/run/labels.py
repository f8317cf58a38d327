"""Labels: the open data rasterized over a shard (1 = building), once per open-data
snapshot and shard, stored as a label mosaic and shared by every run that uses them."""

from __future__ import annotations

import numpy as np

from pipeline.context import Context
from pipeline.mosaic import read_mosaic, write_mosaic
from pipeline.rasterize import rasterize_shard
from pipeline.run import layout
from pipeline.run.inputs import read_opendata
from pipeline.run.snapshots import OpenDataSnapshot
from pipeline.tiles import Shard


def shard_labels(ctx: Context, aoi: str, opendata: OpenDataSnapshot, shard: Shard) -> np.ndarray:
    """Label mosaic ``(H, W) uint8`` of ``shard`` for an open-data snapshot: read when
    stored, else rasterized and stored."""
    key = layout.labels_key(aoi, opendata.content_hash, shard.id)
    if ctx.store.exists(key):
        with ctx.store.readable_path(key) as path:
            data, _ = read_mosaic(path)
        return np.asarray(data).reshape(shard.size, shard.size).astype(np.uint8)
    result = rasterize_shard(read_opendata(ctx, opendata), shard)
    with ctx.store.writable_path(key) as tmp:
        write_mosaic(tmp, result.labels, shard, kind="label")
    return result.labels
