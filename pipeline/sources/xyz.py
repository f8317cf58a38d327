"""XYZ (slippy map) tiles: a local directory ``{z}/{x}/{y}.{png,jpg,jpeg,webp}`` here, a
tile service URL template in :mod:`pipeline.sources.tile_service`; both (and WMTS) read
shards through :class:`TiledSource`.

Tiles at the native zoom ``nz`` are placed on the shard grid at work zoom ``wz``:

* ``nz == wz``: tile pixels are copied into mosaic blocks unchanged;
* ``nz > wz`` (finer tiles): each ``f x f`` block, ``f = 2**(nz - wz)``, is averaged
  over its valid pixels; the output pixel is valid when at least half of the block is;
* ``nz < wz`` (coarser tiles): tiles are upsampled ``f = 2**(wz - nz)`` times, bilinear
  (alpha-premultiplied), validity by nearest neighbour.

Missing tiles leave ``valid`` False; an alpha channel (RGBA, LA, transparent palette)
becomes the valid mask (alpha > 0), and so does ``nodata_colour``: a pixel whose every
channel is within ``nodata_tolerance`` of it is invalid.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import re
from abc import abstractmethod
from collections.abc import Iterator
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

#: A decoded tile: ``(rgb (256, 256, 3) uint8, valid (256, 256) bool)``.
Decoded = tuple[np.ndarray, np.ndarray]
#: A tile of a block: ``((x, y), rgb, valid, label)``; ``label`` names it in messages.
BlockTile = tuple[tuple[int, int], np.ndarray, np.ndarray, str]

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_TEMPLATE = re.compile(r"[/\\]?\{z\}[/\\]\{x\}[/\\]\{y\}(\.\w+)?$")
MAX_REDUCTION = 8  # tiles finer than the work zoom by more than 8 levels are < 1 px


class TiledSource(ImagerySource):
    """Imagery made of 256-px web-mercator tiles at a native zoom (local XYZ, tile
    services, WMTS): one placement/resampling path for all of them (module docstring).

    A subclass says which zoom the tiles are read at (:meth:`native_zoom`) and yields
    the decoded tiles of a square block of the tile grid (:meth:`block_tiles`).
    """

    @abstractmethod
    def native_zoom(self, work_zoom: int) -> int:
        """Zoom of the tiles read for shards at ``work_zoom``."""

    @abstractmethod
    def block_tiles(self, zoom: int, x0: int, y0: int, side: int) -> Iterator[BlockTile]:
        """The decoded tiles present among ``x0 <= x < x0 + side``, ``y0 <= y < y0 + side``
        at ``zoom`` (missing tiles are skipped)."""

    def read_shard(self, shard: Shard) -> ShardImage:
        """Mosaic of the shard at the work zoom from tiles at the native zoom."""
        nz = self.native_zoom(shard.work_zoom)
        wz, sz = shard.work_zoom, shard.tile.z
        size = shard.size
        data = np.zeros((3, size, size), np.uint8)
        valid = np.zeros((size, size), bool)
        if nz >= sz:
            k = nz - sz  # shard holds 2**k x 2**k native tiles
            x0, y0 = shard.tile.x << k, shard.tile.y << k
            for (x, y), rgb, alpha, label in self.block_tiles(nz, x0, y0, 1 << k):
                r, c = y - y0, x - x0
                if nz == wz:
                    block_rgb, block_valid = rgb, alpha
                elif nz > wz:
                    block_rgb, block_valid = _reduce(rgb, alpha, 1 << (nz - wz), label)
                else:
                    block_rgb, block_valid = _resize(rgb, alpha, TILE_SIZE << (wz - nz), None)
                px = block_rgb.shape[0]
                rows, cols = slice(r * px, (r + 1) * px), slice(c * px, (c + 1) * px)
                data[:, rows, cols] = block_rgb.transpose(2, 0, 1)
                valid[rows, cols] = block_valid
        else:
            k = sz - nz  # shard is a 1/2**k x 1/2**k part of one native tile
            px, py = shard.tile.x >> k, shard.tile.y >> k
            for _key, rgb, alpha, _label in self.block_tiles(nz, px, py, 1):
                part = TILE_SIZE / (1 << k)
                left = (shard.tile.x - (px << k)) * part
                top = (shard.tile.y - (py << k)) * part
                block_rgb, block_valid = _resize(
                    rgb, alpha, size, (left, top, left + part, top + part)
                )
                data[:] = block_rgb.transpose(2, 0, 1)
                valid[:] = block_valid
        data[:, ~valid] = 0
        return ShardImage(shard, data, valid)

    def describe(self) -> dict[str, Any]:
        """XYZ tiles are 8-bit RGB(A) web-mercator images."""
        return {"band_count": 3, "dtype": "uint8", "crs": "EPSG:3857"}


@register_imagery("xyz")
class XyzSource(TiledSource):
    """XYZ tile tree on disk; ``spec.zoom`` is the tiles' native zoom (default: work zoom).

    ``spec.path`` is the tree's root directory (a trailing ``{z}/{x}/{y}.png`` template
    is accepted and stripped). A URL template opens a
    :class:`pipeline.sources.tile_service.TileServiceSource` instead.
    """

    def __new__(
        cls, spec: XyzSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> Any:
        if cls is XyzSource and _is_url(spec.path):
            from pipeline.sources.tile_service import TileServiceSource

            return TileServiceSource(spec, step=step, base_dir=base_dir)
        return super().__new__(cls)

    @classmethod
    def latest_step(cls, spec: Any, *, until: str, base_dir: Path | None = None) -> str | None:
        """As :meth:`ImagerySource.latest_step`; a tile service is probed by
        :meth:`TileServiceSource.latest_step`."""
        if _is_url(spec.path):
            from pipeline.sources.tile_service import TileServiceSource

            return TileServiceSource.latest_step(spec, until=until, base_dir=base_dir)
        return super().latest_step(spec, until=until, base_dir=base_dir)

    def __init__(
        self, spec: XyzSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        self.spec = spec
        path = _TEMPLATE.sub("", resolve_path(spec.path, step=step, base_dir=base_dir)) or "."
        self.path = path
        if is_remote(path):
            raise ImageryError(
                f"{path}: an XYZ source must be a local directory of tiles or an http(s) "
                "URL template with {z}/{x}/{y}"
            )
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

    def native_zoom(self, work_zoom: int) -> int:
        """``spec.zoom`` or the work zoom; ImageryError when no tile has that zoom."""
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

    # -- pixels -------------------------------------------------------------------------

    def block_tiles(self, zoom: int, x0: int, y0: int, side: int) -> Iterator[BlockTile]:
        """The tile files present in the block, decoded (:func:`decode_tile`)."""
        index = self.tiles(zoom)
        if side * side <= len(index):
            candidates = (
                ((x0 + c, y0 + r), index.get((x0 + c, y0 + r)))
                for r in range(side)
                for c in range(side)
            )
        else:
            candidates = iter(index.items())
        for (x, y), file in candidates:
            if file is None or not (0 <= y - y0 < side and 0 <= x - x0 < side):
                continue
            rgb, valid = decode_tile(
                file, str(file), self.spec.nodata_colour, self.spec.nodata_tolerance
            )
            yield (x, y), rgb, valid, str(file)

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
        """sha256 of the tile listing: ``z/x/y.ext``, size and mtime of every tile (and of
        the nodata colour and tolerance, when a colour is set)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            if self.spec.nodata_colour is not None:
                digest.update(
                    f"nodata {self.spec.nodata_colour} {self.spec.nodata_tolerance}\n".encode()
                )
            for z in self.zooms():
                for (x, _y), file in sorted(self.tiles(z).items()):
                    st = file.stat()
                    digest.update(f"{z}/{x}/{file.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def load_tile(path: Path) -> Decoded:
    """Decode a tile file to ``(rgb (256, 256, 3) uint8, valid (256, 256) bool)``
    (:func:`decode_tile` without a nodata colour)."""
    return decode_tile(path, str(path))


def decode_tile(
    source: Path | bytes,
    label: str,
    nodata_colour: tuple[int, int, int] | None = None,
    tolerance: int = 0,
) -> Decoded:
    """Decode a tile (a file or its bytes) to ``(rgb (256, 256, 3) uint8, valid (256, 256)
    bool)`` by :func:`decode_image`; tiles of another square size (e.g. 512 px "retina")
    are resampled to 256 px. ``label`` names the tile in errors."""
    im, has_alpha = _open_image(source, label)
    w, h = im.size
    if w != h:
        raise ImageryError(f"{label}: tile is {w}x{h} px; XYZ tiles must be square")
    if w != TILE_SIZE:
        im = im.resize(
            (TILE_SIZE, TILE_SIZE),
            Image.Resampling.BOX if w > TILE_SIZE else Image.Resampling.BILINEAR,
        )
    return _arrays(im, has_alpha, nodata_colour, tolerance)


def decode_image(
    source: Path | bytes,
    label: str,
    nodata_colour: tuple[int, int, int] | None = None,
    tolerance: int = 0,
) -> Decoded:
    """Decode an image to ``(rgb (H, W, 3) uint8, valid (H, W) bool)``.

    Any alpha (RGBA, LA, palette or colour-key transparency) becomes ``valid = alpha > 0``;
    with ``nodata_colour``, pixels with ``max |rgb - nodata_colour| <= tolerance`` are
    invalid too.
    """
    im, has_alpha = _open_image(source, label)
    return _arrays(im, has_alpha, nodata_colour, tolerance)


def _open_image(source: Path | bytes, label: str) -> tuple[Image.Image, bool]:
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
            im.load()
            has_alpha = "A" in im.getbands() or "transparency" in im.info
            return im.convert("RGBA" if has_alpha else "RGB"), has_alpha
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as exc:
        raise ImageryError(f"{label}: not a readable image tile ({exc})") from exc


def _arrays(
    im: Image.Image, has_alpha: bool, nodata_colour: tuple[int, int, int] | None, tolerance: int
) -> Decoded:
    arr = np.asarray(im)
    if has_alpha:
        rgb, valid = arr[..., :3], arr[..., 3] > 0
    else:
        rgb, valid = arr, np.ones(arr.shape[:2], bool)
    if nodata_colour is not None:
        distance = np.abs(rgb.astype(np.int16) - np.asarray(nodata_colour, np.int16)).max(axis=2)
        valid = valid & (distance > tolerance)
    return rgb, valid


def _reduce(rgb: np.ndarray, valid: np.ndarray, f: int, label: str) -> Decoded:
    """Average ``f x f`` blocks over valid pixels; valid where >= half the block is."""
    if f > 1 << MAX_REDUCTION:
        raise ImageryError(
            f"{label}: tiles are {int(math.log2(f))} zooms finer than the work zoom "
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
) -> Decoded:
    """Upsample (the ``box`` part of) a tile to ``size`` px: bilinear colours, nearest validity."""
    alpha = np.where(valid, 255, 0).astype(np.uint8)
    rgba = Image.fromarray(np.dstack([rgb, alpha]))
    out = np.asarray(rgba.resize((size, size), Image.Resampling.BILINEAR, box=box))
    mask = Image.fromarray(alpha).resize((size, size), Image.Resampling.NEAREST, box=box)
    return out[..., :3], np.asarray(mask) > 0


def _is_url(path: str) -> bool:
    return "://" in path


__all__ = ["TiledSource", "XyzSource", "decode_image", "decode_tile", "load_tile"]
