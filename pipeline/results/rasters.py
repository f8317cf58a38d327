"""A run's pixels as Cloud-Optimized GeoTIFFs (EPSG:3857, the shards' grid):

* ``probability``: building probability in percent (0-100), uint8, 255 = no data;
* ``errors``: the pixel error map, uint8 classes with a colour table:
  0 = both say no building, 1 = both say building (grey), 2 = predicted only (pink),
  3 = open data only (green), 255 = no data.

Only the run's scored tiles with imagery have data. Each shard is read and written
on its own (memory stays at one shard's size), into a tiled GeoTIFF that is then
copied as a COG with overviews (GDAL's COG driver, through rasterio).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import rasterio.transform
from rasterio.windows import Window
from sqlalchemy.orm import Session

from pipeline.context import Context
from pipeline.db import repo
from pipeline.mosaic import CRS_3857
from pipeline.results.tile_view import read_shard_labels, read_shard_probability
from pipeline.run.inputs import RunInputs, load_run_inputs, read_shard_image
from pipeline.tiles import TILE_SIZE, Shard, Tile, block_of, shard_of, shard_transform

NODATA = 255
ERROR_CLASSES = {
    0: "no building in either",
    1: "building in both",
    2: "predicted only",
    3: "open data only",
}
ERROR_COLOURS = {
    0: (0, 0, 0, 0),
    1: (160, 160, 160, 255),
    2: (255, 0, 255, 255),
    3: (0, 200, 0, 255),
    NODATA: (0, 0, 0, 0),
}


def error_classes(label: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Class of each pixel from boolean ``label`` and ``pred`` (see :data:`ERROR_CLASSES`)."""
    out = np.zeros(label.shape, np.uint8)
    out[label & pred] = 1
    out[pred & ~label] = 2
    out[label & ~pred] = 3
    return out


def write_run_rasters(ctx: Context, run_id: int, out_dir: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>_probability.tif`` and ``<stem>_errors.tif``; returns their paths."""
    inputs = load_run_inputs(ctx, run_id)
    with Session(ctx.engine) as s:
        tiles = repo.tile_scores_frame(s, run_id)
    scored: dict[Shard, list[Tile]] = {}
    for z, x, y in zip(tiles["z"], tiles["x"], tiles["y"], strict=True):
        tile = Tile(int(x), int(y), int(z))
        scored.setdefault(shard_of(tile, inputs.aoi.shard_zoom), []).append(tile)
    shards = sorted((s for s in scored if s.id in inputs.imagery.shards), key=lambda s: s.id)
    paths = {
        "probability": out_dir / f"{stem}_probability.tif",
        "errors": out_dir / f"{stem}_errors.tif",
    }
    if not shards:
        return {}
    bounds = _union_bounds(shards)
    res = shard_transform(shards[0]).a
    width = round((bounds[2] - bounds[0]) / res)
    height = round((bounds[3] - bounds[1]) / res)
    transform = rasterio.transform.from_origin(bounds[0], bounds[3], res, res)
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint8",
        "crs": CRS_3857,
        "transform": transform,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": TILE_SIZE,
        "blockysize": TILE_SIZE,
        "compress": "deflate",
        "bigtiff": "IF_SAFER",
    }
    staging = {k: p.with_suffix(".staging.tif") for k, p in paths.items()}
    try:
        with (
            rasterio.open(staging["probability"], "w", **profile) as prob_dst,
            rasterio.open(staging["errors"], "w", **profile) as err_dst,
        ):
            for dst in (prob_dst, err_dst):  # no data until a shard writes its pixels
                for _, window in dst.block_windows(1):
                    dst.write(
                        np.full((window.height, window.width), NODATA, np.uint8), 1, window=window
                    )
            for shard in shards:
                prob, errors = _shard_pixels(ctx, inputs, shard, scored[shard])
                origin = shard_transform(shard)
                window = Window(
                    round((origin.c - bounds[0]) / res),
                    round((bounds[3] - origin.f) / res),
                    shard.size,
                    shard.size,
                )
                prob_dst.write(prob, 1, window=window)
                err_dst.write(errors, 1, window=window)
            prob_dst.set_band_description(1, "building probability (%)")
            err_dst.set_band_description(
                1, "; ".join(f"{k} = {v}" for k, v in ERROR_CLASSES.items())
            )
            err_dst.write_colormap(1, ERROR_COLOURS)
            err_dst.update_tags(1, **{f"CLASS_{k}": v for k, v in ERROR_CLASSES.items()})
            for dst in (prob_dst, err_dst):
                dst.update_tags(RUN_ID=str(run_id), AOI=inputs.aoi.name, STEP=inputs.step)
        for key, path in paths.items():
            rasterio.shutil.copy(
                staging[key],
                path,
                driver="COG",
                compress="deflate",
                overview_resampling="nearest",
                blocksize=TILE_SIZE,
            )
    finally:
        for path in staging.values():
            path.unlink(missing_ok=True)
    return paths


def _shard_pixels(
    ctx: Context, inputs: RunInputs, shard: Shard, tiles: list[Tile]
) -> tuple[np.ndarray, np.ndarray]:
    """Probability (%) and error classes of one shard, no data off its scored tiles and
    where the imagery has none."""
    prob = read_shard_probability(ctx, inputs, shard)
    label = read_shard_labels(ctx, inputs, shard)
    valid = read_shard_image(ctx, inputs.imagery.shards[shard.id]).valid
    scored = np.zeros((shard.size, shard.size), bool)
    for tile in tiles:
        row, col = block_of(tile, shard)
        scored[row * TILE_SIZE : (row + 1) * TILE_SIZE, col * TILE_SIZE : (col + 1) * TILE_SIZE] = (
            True
        )
    keep = scored & valid
    percent = np.rint(prob.astype(np.float32) * (100.0 / 255.0)).astype(np.uint8)
    errors = error_classes(label, prob >= 128)
    return np.where(keep, percent, NODATA), np.where(keep, errors, NODATA)


def _union_bounds(shards: list[Shard]) -> tuple[float, float, float, float]:
    """EPSG:3857 ``(left, bottom, right, top)`` around every shard."""
    lefts, bottoms, rights, tops = [], [], [], []
    for shard in shards:
        t = shard_transform(shard)
        lefts.append(t.c)
        tops.append(t.f)
        rights.append(t.c + t.a * shard.size)
        bottoms.append(t.f + t.e * shard.size)
    return min(lefts), min(bottoms), max(rights), max(tops)
