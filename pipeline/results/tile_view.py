"""The pixels behind a review: a tile's imagery, open-data labels and prediction,
imagery around any geometry, and small shard previews for maps.

Everything is read from the run's shard mosaics in the artifact store (see
:mod:`pipeline.mosaic`); nothing is recomputed.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import rasterio
import shapely
from PIL import Image, ImageDraw
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.merge import merge
from shapely.geometry.base import BaseGeometry
from sqlalchemy.orm import Session

from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import NotFoundError
from pipeline.mosaic import read_mosaic
from pipeline.run import layout
from pipeline.run.inputs import RunInputs, load_run_inputs, read_shard_image
from pipeline.tiles import (
    TILE_SIZE,
    Shard,
    Tile,
    block_of,
    lnglat_bounds,
    parse_shard_id,
    shard_of,
    xy_bounds,
)

PINK = np.array([255, 0, 255], dtype=np.float32)
GREEN = np.array([0, 200, 0], dtype=np.float32)
GREY = np.array([160, 160, 160], dtype=np.float32)
_TO_3857 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True)


def composite(
    image: np.ndarray, label: np.ndarray, pred: np.ndarray, *, alpha: float = 0.55
) -> np.ndarray:
    """Blend the agreement layer over the imagery: ``out = (1 - a) * rgb + a * colour``.

    ``image`` is ``(3, H, W) uint8``; ``label`` and ``pred`` are boolean ``(H, W)``.
    Pink marks prediction only, green open data only, grey both; elsewhere the
    imagery is shown unchanged. Returns ``(H, W, 3) uint8``.
    """
    rgb = np.moveaxis(image[:3], 0, -1).astype(np.float32)
    out = rgb.copy()
    for colour, where in ((PINK, pred & ~label), (GREEN, label & ~pred), (GREY, label & pred)):
        out[where] = (1 - alpha) * rgb[where] + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ShardLayers:
    """A shard's imagery ``(3, H, W) uint8``, open-data labels and predicted buildings."""

    image: np.ndarray
    label: np.ndarray
    pred: np.ndarray


@dataclass(frozen=True)
class TileLayers:
    """One work tile's imagery, labels, prediction and their composite (all 256 x 256)."""

    tile: Tile
    image: np.ndarray
    label: np.ndarray
    pred: np.ndarray

    @property
    def rgb(self) -> np.ndarray:
        """The imagery as ``(H, W, 3) uint8``."""
        return np.moveaxis(self.image[:3], 0, -1)

    @property
    def composite(self) -> np.ndarray:
        """Pink = prediction only, green = open data only, grey = both, over the imagery."""
        return composite(self.image, self.label, self.pred)


def shard_layers(ctx: Context, inputs: RunInputs, shard: Shard) -> ShardLayers | None:
    """Read a shard's three mosaics; None when the run has no imagery for the shard."""
    ref = inputs.imagery.shards.get(shard.id)
    if ref is None:
        return None
    image = read_shard_image(ctx, ref).data
    label = read_shard_labels(ctx, inputs, shard)
    pred = read_shard_probability(ctx, inputs, shard) >= 128
    return ShardLayers(image=image, label=label, pred=pred)


def read_shard_labels(ctx: Context, inputs: RunInputs, shard: Shard) -> np.ndarray:
    """The run's open-data labels of ``shard`` as a boolean ``(size, size)`` array."""
    key = layout.labels_key(inputs.aoi.name, inputs.opendata.content_hash, shard.id)
    with ctx.store.readable_path(key) as p:
        return np.asarray(read_mosaic(p)[0]).reshape(shard.size, shard.size) > 0


def read_shard_probability(ctx: Context, inputs: RunInputs, shard: Shard) -> np.ndarray:
    """The run's building probability of ``shard`` as stored: uint8, ``round(p * 255)``."""
    ref = inputs.imagery.shards.get(shard.id)
    if ref is None:
        raise NotFoundError(f"run {inputs.run_id} has no imagery of shard {shard.id}")
    with Session(ctx.engine) as s:
        entry = repo.cached_prediction(s, ref.content_hash, inputs.model_version_id, shard.id)
    if entry is None:  # the cache is shared by AOIs: its entry says where the mosaic is
        raise NotFoundError(f"run {inputs.run_id} has no prediction of shard {shard.id}")
    with ctx.store.readable_path(entry.uri) as p:
        return np.asarray(read_mosaic(p)[0]).reshape(shard.size, shard.size)


def cut_tile(layers: ShardLayers, shard: Shard, tile: Tile) -> TileLayers:
    """The 256 x 256 block of ``tile`` out of its shard's layers."""
    row, col = block_of(tile, shard)
    sl = np.s_[row * TILE_SIZE : (row + 1) * TILE_SIZE, col * TILE_SIZE : (col + 1) * TILE_SIZE]
    return TileLayers(
        tile=tile,
        image=layers.image[(slice(None), *sl)],
        label=layers.label[sl],
        pred=layers.pred[sl],
    )


def tile_layers(ctx: Context, run_id: int, tile: Tile) -> TileLayers:
    """Imagery, labels and prediction of one work tile of a run."""
    inputs = load_run_inputs(ctx, run_id)
    if tile.z != inputs.aoi.work_zoom:
        raise NotFoundError(
            f"tile {tile} is not at AOI {inputs.aoi.name!r}'s work zoom {inputs.aoi.work_zoom}"
        )
    shard = shard_of(tile, inputs.aoi.shard_zoom)
    layers = shard_layers(ctx, inputs, shard)
    if layers is None:
        raise NotFoundError(f"run {run_id} has no imagery for tile {tile} (shard {shard.id})")
    return cut_tile(layers, shard, tile)


def imagery_crop(
    ctx: Context,
    run_id: int,
    geometry: BaseGeometry,
    *,
    pad_m: float = 15.0,
    max_px: int = 384,
    outline: tuple[int, int, int] | None = (255, 255, 0),
) -> np.ndarray:
    """The run's imagery around a lon/lat ``geometry`` (plus ``pad_m``), ``(H, W, 3) uint8``.

    Reads every shard mosaic the area touches (rasterio's merge), draws the geometry's
    outline in ``outline`` (None: no outline) and shrinks the result to at most
    ``max_px`` on its longer side. Outside the imagery the crop is black.
    """
    inputs = load_run_inputs(ctx, run_id)
    projected = shapely.transform(geometry, _to_3857, interleaved=False)
    left, bottom, right, top = projected.bounds
    area = (left - pad_m, bottom - pad_m, right + pad_m, top + pad_m)
    keys = [
        ref.key
        for shard_id, ref in inputs.imagery.shards.items()
        if _overlaps(area, xy_bounds(parse_shard_id(shard_id, inputs.aoi.work_zoom).tile))
    ]
    if not keys:
        raise NotFoundError(
            f"run {run_id} has no imagery around {tuple(round(b, 6) for b in geometry.bounds)}"
        )
    with contextlib.ExitStack() as stack:
        paths = [stack.enter_context(ctx.store.readable_path(k)) for k in keys]
        sources = [stack.enter_context(rasterio.open(p)) for p in paths]
        mosaic, transform = merge(sources, bounds=area, indexes=[1, 2, 3], nodata=0)
    picture = Image.fromarray(np.ascontiguousarray(np.moveaxis(mosaic, 0, -1)))
    if outline is not None:
        draw = ImageDraw.Draw(picture)
        inverse = ~transform
        for ring in _rings(projected):
            draw.line([inverse * xy for xy in ring], fill=outline, width=2)
    return _shrink(np.asarray(picture), max_px)


def shard_previews(
    ctx: Context, run_id: int, *, size: int = 256
) -> list[tuple[tuple[float, ...], bytes]]:
    """A PNG of each shard's imagery at ``size`` px and its lon/lat bounds, for map backdrops."""
    inputs = load_run_inputs(ctx, run_id)
    out: list[tuple[tuple[float, ...], bytes]] = []
    for shard_id, ref in sorted(inputs.imagery.shards.items()):
        with ctx.store.readable_path(ref.key) as p, rasterio.open(p) as src:
            data = src.read([1, 2, 3], out_shape=(3, size, size), resampling=Resampling.average)
            mask = src.dataset_mask(out_shape=(size, size), resampling=Resampling.nearest)
        rgba = np.concatenate([np.moveaxis(data, 0, -1), mask[..., None]], axis=-1)
        buffer = io.BytesIO()
        Image.fromarray(rgba.astype(np.uint8), "RGBA").save(buffer, format="PNG")
        tile = parse_shard_id(shard_id, inputs.aoi.work_zoom).tile
        out.append((lnglat_bounds(tile), buffer.getvalue()))
    return out


def png_bytes(array: np.ndarray) -> bytes:
    """``(H, W, 3)`` or ``(H, W)`` uint8/bool array as PNG bytes."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def _to_3857(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _TO_3857.transform(x, y)


def _rings(geometry: BaseGeometry) -> list[list[tuple[float, float]]]:
    """Outline rings of polygons (and the lines) of a geometry, as coordinate lists."""
    rings: list[list[tuple[float, float]]] = []
    for part in getattr(geometry, "geoms", [geometry]):
        if part.geom_type == "Polygon":
            rings.append(list(part.exterior.coords))
            rings.extend(list(r.coords) for r in part.interiors)
        elif part.geom_type in ("LineString", "LinearRing"):
            rings.append(list(part.coords))
        elif part.geom_type.startswith("Multi") or part.geom_type == "GeometryCollection":
            rings.extend(_rings(part))
    return rings


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _shrink(rgb: np.ndarray, max_px: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = max_px / max(h, w)
    if scale >= 1:
        return np.ascontiguousarray(rgb)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.BILINEAR))
