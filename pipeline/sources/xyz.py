"""A local directory of XYZ (slippy map) tiles ``{z}/{x}/{y}.{png,jpg,jpeg,webp}``.

Tiles at the native zoom ``nz`` are placed on the shard grid at work zoom ``wz``:

* ``nz == wz``: tile pixels are copied into mosaic blocks unchanged;
* ``nz > wz`` (finer tiles): each ``f x f`` block, ``f = 2**(nz - wz)``, is averaged
  over its valid pixels; the output pixel is valid when at least half of the block is;
* ``nz < wz`` (coarser tiles): tiles are upsampled ``f = 2**(wz - nz)`` times, bilinear
  (alpha-premultiplied), validity by nearest neighbour.

Missing tiles leave ``valid`` False; an alpha channel (RGBA, LA, transparent palette)
becomes the valid mask (alpha > 0).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from PIL import Image, UnidentifiedImageError
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ImageryError
from pipeline.sources.base import (
    ImagerySource,
    ShardImage,
    is_remote,
    register_imagery,
    resolve_path,
)
from pipeline.sources.specs import XyzSpec
from pipeline.tiles import TILE_SIZE, Shard

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_TEMPLATE = re.compile(r"[/\\]?\{z\}[/\\]\{x\}[/\\]\{y\}(\.\w+)?$")
MAX_REDUCTION = 8  # tiles finer than the work zoom by more than 8 levels are < 1 px


@register_imagery("xyz")
class XyzSource(ImagerySource):
    """XYZ tile tree on disk; ``spec.zoom`` is the tiles' native zoom (default: work zoom).

    ``spec.path`` is the tree's root directory (a trailing ``{z}/{x}/{y}.png`` template
    is accepted and stripped).
    """

    def __init__(
        self, spec: XyzSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        self.spec = spec
        path = _TEMPLATE.sub("", resolve_path(spec.path, step=step, base_dir=base_dir)) or "."
        self.path = path
        if is_remote(path):
            raise ImageryError(f"{path}: an XYZ source must be a local directory of tiles")
        self.root = Path(path)
        if not self.root.is_dir():
            raise ImageryError(f"{path}: tile directory not found")
        self._indexes: dict[int, dict[tuple[int, int], Path]] = {}
        self._footprint: BaseGeometry | None = None
        self._fingerprint: str | None = None

    # -- tile index -------------------------------------------------------------------

    def zooms(self) -> list[int]:
        """Zoom levels present in the tree, ascending."""
        return sorted(int(e.name) for e in os.scandir(self.root) if e.is_dir() and e.name.isdigit())

    def tiles(self, zoom: int) -> dict[tuple[int, int], Path]:
        """``{(x, y): file}`` of the tiles at ``zoom`` (cached; first extension wins)."""
        if zoom not in self._indexes:
            index: dict[tuple[int, int], Path] = {}
            zdir = self.root / str(zoom)
            if zdir.is_dir():
                for xdir in os.scandir(zdir):
                    if not (xdir.is_dir() and xdir.name.isdigit()):
                        continue
                    x = int(xdir.name)
                    for f in sorted(os.scandir(xdir.path), key=lambda e: e.name):
                        stem, ext = os.path.splitext(f.name)
                        if ext.lower() in EXTENSIONS and stem.isdigit() and f.is_file():
                            index.setdefault((x, int(stem)), Path(f.path))
            self._indexes[zoom] = index
        return self._indexes[zoom]

    def _native_zoom(self, work_zoom: int) -> int:
        zoom = self.spec.zoom if self.spec.zoom is not None else work_zoom
        if not self.tiles(zoom):
            present = self.zooms()
            if not present:
                raise ImageryError(f"{self.path}: no {{z}}/{{x}}/{{y}} tiles in the directory")
            if zoom not in present:
                raise ImageryError(
                    f"{self.path}: no tiles at zoom {zoom} (present: {present}); "
                    "set 'zoom' to the tiles' native zoom"
                )
        return zoom

    def describe(self) -> dict[str, Any]:
        """XYZ tiles are 8-bit RGB(A) web-mercator images."""
        return {"band_count": 3, "dtype": "uint8", "crs": "EPSG:3857"}

    # -- pixels -------------------------------------------------------------------------

    def read_shard(self, shard: Shard) -> ShardImage:
        """Mosaic of the shard at the work zoom from tiles at the native zoom."""
        nz = self._native_zoom(shard.work_zoom)
        wz, sz = shard.work_zoom, shard.tile.z
        size = shard.size
        data = np.zeros((3, size, size), np.uint8)
        valid = np.zeros((size, size), bool)
        index = self.tiles(nz)
        if nz >= sz:
            k = nz - sz  # shard holds 2**k x 2**k native tiles
            x0, y0 = shard.tile.x << k, shard.tile.y << k
            side = 1 << k
            if side * side <= len(index):
                candidates = (
                    ((x0 + c, y0 + r), index.get((x0 + c, y0 + r)))
                    for r in range(side)
                    for c in range(side)
                )
            else:
                candidates = iter(index.items())
            for (x, y), file in candidates:
                r, c = y - y0, x - x0
                if file is None or not (0 <= r < side and 0 <= c < side):
                    continue
                rgb, alpha = load_tile(file)
                if nz == wz:
                    block_rgb, block_valid = rgb, alpha
                elif nz > wz:
                    block_rgb, block_valid = _reduce(rgb, alpha, 1 << (nz - wz), file)
                else:
                    block_rgb, block_valid = _resize(rgb, alpha, TILE_SIZE << (wz - nz), None)
                px = block_rgb.shape[0]
                rows, cols = slice(r * px, (r + 1) * px), slice(c * px, (c + 1) * px)
                data[:, rows, cols] = block_rgb.transpose(2, 0, 1)
                valid[rows, cols] = block_valid
        else:
            k = sz - nz  # shard is a 1/2**k x 1/2**k part of one native tile
            file = index.get((shard.tile.x >> k, shard.tile.y >> k))
            if file is not None:
                rgb, alpha = load_tile(file)
                part = TILE_SIZE / (1 << k)
                left = (shard.tile.x - ((shard.tile.x >> k) << k)) * part
                top = (shard.tile.y - ((shard.tile.y >> k) << k)) * part
                block_rgb, block_valid = _resize(
                    rgb, alpha, size, (left, top, left + part, top + part)
                )
                data[:] = block_rgb.transpose(2, 0, 1)
                valid[:] = block_valid
        data[:, ~valid] = 0
        return ShardImage(shard, data, valid)

    # -- footprint / fingerprint ------------------------------------------------------------

    def footprint(self) -> BaseGeometry:
        """Union of the tiles' bounds (EPSG:4326) at the native zoom (default: finest present)."""
        if self._footprint is None:
            present = self.zooms()
            zoom = self.spec.zoom if self.spec.zoom is not None else (present[-1] if present else 0)
            keys = np.array(sorted(self.tiles(zoom)), dtype=np.float64).reshape(-1, 2)
            if len(keys) == 0:
                self._footprint = shapely.Polygon()
                return self._footprint
            # Union in tile-index space is exact; tile edges are meridians and parallels.
            boxes = shapely.box(keys[:, 0], keys[:, 1], keys[:, 0] + 1, keys[:, 1] + 1)
            merged = shapely.union_all(boxes)
            n = float(2**zoom)

            def to_lnglat(xy: np.ndarray) -> np.ndarray:
                lon = xy[:, 0] / n * 360.0 - 180.0
                lat = np.degrees(np.arctan(np.sinh(math.pi * (1 - 2 * xy[:, 1] / n))))
                return np.column_stack([lon, lat])

            self._footprint = shapely.orient_polygons(shapely.transform(merged, to_lnglat))
        return self._footprint

    def fingerprint(self) -> str:
        """sha256 of the tile listing: ``z/x/y.ext``, size and mtime of every tile."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for z in self.zooms():
                for (x, _y), file in sorted(self.tiles(z).items()):
                    st = file.stat()
                    digest.update(f"{z}/{x}/{file.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def load_tile(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode a tile to ``(rgb (256, 256, 3) uint8, valid (256, 256) bool)``.

    Any alpha (RGBA, LA, palette or colour-key transparency) becomes ``valid = alpha > 0``;
    tiles of another square size (e.g. 512 px "retina") are resampled to 256 px.
    """
    try:
        with Image.open(path) as im:
            im.load()
            has_alpha = "A" in im.getbands() or "transparency" in im.info
            im = im.convert("RGBA" if has_alpha else "RGB")
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise ImageryError(f"{path}: not a readable image tile ({exc})") from exc
    w, h = im.size
    if w != h:
        raise ImageryError(f"{path}: tile is {w}x{h} px; XYZ tiles must be square")
    if w != TILE_SIZE:
        im = im.resize(
            (TILE_SIZE, TILE_SIZE),
            Image.Resampling.BOX if w > TILE_SIZE else Image.Resampling.BILINEAR,
        )
    arr = np.asarray(im)
    if has_alpha:
        return arr[..., :3], arr[..., 3] > 0
    return arr, np.ones((TILE_SIZE, TILE_SIZE), bool)


def _reduce(
    rgb: np.ndarray, valid: np.ndarray, f: int, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Average ``f x f`` blocks over valid pixels; valid where >= half the block is."""
    if f > 1 << MAX_REDUCTION:
        raise ImageryError(
            f"{path}: tiles are {int(math.log2(f))} zooms finer than the work zoom "
            f"(max {MAX_REDUCTION})"
        )
    area = f * f
    # weighted colour sums and valid counts, halved f = 2**k times: 2x2 block sums
    x = np.empty((TILE_SIZE, TILE_SIZE, 4), np.uint32)
    x[..., :3] = rgb
    x[..., :3] *= valid[..., None]
    x[..., 3] = valid
    while f > 1:
        x = x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]
        f //= 2
    count = x[..., 3]
    safe = np.maximum(count, 1)[..., None]
    mean = (x[..., :3] + safe // 2) // safe  # rounded integer mean over valid pixels
    return mean.astype(np.uint8), count * 2 >= area


def _resize(
    rgb: np.ndarray,
    valid: np.ndarray,
    size: int,
    box: tuple[float, float, float, float] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Upsample (the ``box`` part of) a tile to ``size`` px: bilinear colours, nearest validity."""
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([rgb, alpha]))
    out = np.asarray(rgba.resize((size, size), Image.Resampling.BILINEAR, box=box))
    mask = Image.fromarray(alpha).resize((size, size), Image.Resampling.NEAREST, box=box)
    return out[..., :3], np.asarray(mask) > 0


__all__ = ["XyzSource", "load_tile"]
