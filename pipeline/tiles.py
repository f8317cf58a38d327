"""Tile and shard math on the web-mercator XYZ grid (mercantile underneath).

Glossary used across GeoAudit:

* **tile**: an XYZ tile at the AOI's *work zoom* (256 x 256 pixels).
* **shard**: a tile at the coarser *shard zoom*; it contains
  ``n = 2 ** (work_zoom - shard_zoom)`` tiles per side and is the unit of work
  and storage. Its mosaic raster is ``256 * n`` pixels per side in EPSG:3857.

A work tile ``(x, y)`` sits in its shard's mosaic at block
``(row, col) = (y - shard.y * n, x - shard.x * n)``, i.e. pixel rows
``row * 256 : (row + 1) * 256``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

import mercantile
import numpy as np

from pipeline.errors import ConfigError, InvalidTileError

if TYPE_CHECKING:
    from affine import Affine

TILE_SIZE = 256
MAX_ZOOM = 24
#: Latitude limit of the web-mercator square: ``atan(sinh(pi))`` degrees.
MAX_LATITUDE = math.degrees(math.atan(math.sinh(math.pi)))
#: Half the width of the EPSG:3857 square in metres: ``pi * R``.
HALF_WORLD_M = math.pi * 6378137.0


class Tile(NamedTuple):
    """An XYZ web-mercator tile; ``y`` counts from the north."""

    x: int
    y: int
    z: int

    def __str__(self) -> str:
        return f"{self.z}/{self.x}/{self.y}"


class LngLatBbox(NamedTuple):
    """A WGS84 bounding box in degrees."""

    west: float
    south: float
    east: float
    north: float


class Shard(NamedTuple):
    """A shard: a parent tile at ``tile.z`` grouping work tiles at ``work_zoom``."""

    tile: Tile
    work_zoom: int

    @property
    def id(self) -> str:
        """Stable text id, ``"z-x-y"`` of the shard tile (safe in paths and task ids)."""
        return f"{self.tile.z}-{self.tile.x}-{self.tile.y}"

    @property
    def tiles_per_side(self) -> int:
        """``n = 2 ** (work_zoom - shard_zoom)``."""
        return 2 ** (self.work_zoom - self.tile.z)

    @property
    def size(self) -> int:
        """Mosaic size in pixels per side: ``256 * n``."""
        return TILE_SIZE * self.tiles_per_side


def check_zooms(work_zoom: int, shard_zoom: int) -> None:
    """Raise :class:`InvalidTileError` unless ``0 <= shard_zoom <= work_zoom <= 24``."""
    if not 0 <= work_zoom <= MAX_ZOOM:
        raise InvalidTileError(f"work zoom must be within 0..{MAX_ZOOM}, got {work_zoom}")
    if not 0 <= shard_zoom <= work_zoom:
        raise InvalidTileError(
            f"shard zoom must be within 0..work zoom ({work_zoom}), got {shard_zoom}"
        )


def check_bbox(bbox: Sequence[float]) -> LngLatBbox:
    """``bbox`` as :class:`LngLatBbox`: 4 numbers with ``-180 <= west < east <= 180`` and
    ``-MAX_LATITUDE <= south < north <= MAX_LATITUDE``; :class:`ConfigError` otherwise."""
    try:
        west, south, east, north = (float(v) for v in bbox)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"bbox must be 4 numbers [west, south, east, north], got {bbox!r}"
        ) from exc
    if -180 <= east < west <= 180 and west - east > 180:  # the short way is across ±180°
        raise ConfigError(
            f"bbox must be [west, south, east, north] with west < east, got {list(bbox)}: "
            "west > east: an AOI across the antimeridian is given as a polygon, a "
            "MultiPolygon with one part on each side of ±180°"
        )
    if not (-180 <= west < east <= 180 and -MAX_LATITUDE <= south < north <= MAX_LATITUDE):
        raise ConfigError(
            "bbox must be [west, south, east, north] in degrees with west < east and "
            f"south < north, inside the web-mercator range (±180, ±{MAX_LATITUDE:.4f}); "
            f"got {list(bbox)}"
        )
    return LngLatBbox(west, south, east, north)


def shard_of(tile: Tile, shard_zoom: int) -> Shard:
    """The shard at ``shard_zoom`` holding work tile ``tile``."""
    return Shard(parent(tile, shard_zoom), tile.z)


def shard_tile(shard_id: str) -> Tile:
    """The tile ``z-x-y`` that a shard id (:attr:`Shard.id`) names; InvalidTileError when
    it is not of that form or off the grid."""
    try:
        z, x, y = (int(part) for part in shard_id.split("-"))
    except (AttributeError, ValueError) as exc:
        raise InvalidTileError(f"shard id must look like 'z-x-y', got {shard_id!r}") from exc
    if not (0 <= z <= MAX_ZOOM and 0 <= x < 2**z and 0 <= y < 2**z):
        raise InvalidTileError(f"Tile(x={x}, y={y}, z={z}) is outside the zoom {z} grid")
    return Tile(x, y, z)


def parse_shard_id(shard_id: str, work_zoom: int) -> Shard:
    """Inverse of :attr:`Shard.id`."""
    tile = shard_tile(shard_id)
    check_zooms(work_zoom, tile.z)
    return Shard(tile, work_zoom)


def cover(bbox: tuple[float, float, float, float], zoom: int) -> list[Tile]:
    """Tiles at ``zoom`` intersecting a WGS84 ``(west, south, east, north)`` bbox, sorted."""
    west, south, east, north = bbox
    if not (west < east and south < north):
        raise InvalidTileError(f"bbox must have west < east and south < north, got {bbox}")
    tiles = {Tile(t.x, t.y, t.z) for t in mercantile.tiles(west, south, east, north, zooms=[zoom])}
    return sorted(tiles, key=lambda t: (t.y, t.x))


def parent(tile: Tile, zoom: int) -> Tile:
    """The ancestor of ``tile`` at ``zoom`` (``x >> dz, y >> dz``)."""
    if zoom > tile.z:
        raise InvalidTileError(f"parent zoom {zoom} must not exceed the tile's zoom {tile.z}")
    dz = tile.z - zoom
    return Tile(tile.x >> dz, tile.y >> dz, zoom)


def group_into_shards(tiles: Iterable[Tile], shard_zoom: int) -> dict[Shard, list[Tile]]:
    """Group work tiles by their parent at ``shard_zoom``; shards and tiles sorted."""
    groups: dict[Shard, list[Tile]] = defaultdict(list)
    for tile in tiles:
        groups[shard_of(tile, shard_zoom)].append(tile)
    return {s: sorted(groups[s], key=lambda t: (t.y, t.x)) for s in sorted(groups)}


def shard_tiles(shard: Shard) -> list[Tile]:
    """All work tiles inside a shard, row by row."""
    n = shard.tiles_per_side
    x0, y0 = shard.tile.x * n, shard.tile.y * n
    return [Tile(x0 + c, y0 + r, shard.work_zoom) for r in range(n) for c in range(n)]


def block_of(tile: Tile, shard: Shard) -> tuple[int, int]:
    """``(row, col)`` block index of a work tile in its shard mosaic."""
    n = shard.tiles_per_side
    row, col = tile.y - shard.tile.y * n, tile.x - shard.tile.x * n
    if tile.z != shard.work_zoom or not (0 <= row < n and 0 <= col < n):
        raise InvalidTileError(
            f"Tile(x={tile.x}, y={tile.y}, z={tile.z}) is not in shard {shard.id}"
        )
    return row, col


def tiles_of_points(x: np.ndarray, y: np.ndarray, zoom: int) -> tuple[np.ndarray, np.ndarray]:
    """XYZ tile columns and rows at ``zoom`` of EPSG:3857 points, vectorised.

    ``col = floor((X + πR) / (2πR) * 2**zoom)``, ``row = floor((πR - Y) / (2πR) * 2**zoom)``,
    clipped to the grid. A point on a tile edge belongs to the tile east / south of it.
    """
    n = 2**zoom
    fx = (np.asarray(x, np.float64) + HALF_WORLD_M) / (2 * HALF_WORLD_M) * n
    fy = (HALF_WORLD_M - np.asarray(y, np.float64)) / (2 * HALF_WORLD_M) * n
    cols = np.clip(np.floor(fx), 0, n - 1).astype(np.int64)
    rows = np.clip(np.floor(fy), 0, n - 1).astype(np.int64)
    return cols, rows


def xy_bounds(tile: Tile) -> tuple[float, float, float, float]:
    """Web-mercator (EPSG:3857) bounds ``(left, bottom, right, top)`` of a tile."""
    b = mercantile.xy_bounds(tile.x, tile.y, tile.z)
    return (b.left, b.bottom, b.right, b.top)


def lnglat_bounds(tile: Tile) -> tuple[float, float, float, float]:
    """WGS84 bounds ``(west, south, east, north)`` of a tile."""
    b = mercantile.bounds(tile.x, tile.y, tile.z)
    return (b.west, b.south, b.east, b.north)


def shard_transform(shard: Shard) -> Affine:
    """Affine transform of the shard mosaic in EPSG:3857.

    ``pixel size = (right - left) / (256 * n)``; origin at the shard's top-left corner.
    """
    from affine import Affine  # loaded on first use: start-up of commands that need none

    left, bottom, right, top = xy_bounds(shard.tile)
    res = (right - left) / shard.size
    return Affine(res, 0.0, left, 0.0, -res, top)


def resolution(zoom: int, latitude: float = 0.0) -> float:
    """Ground metres per pixel at ``zoom``: ``40075016.686 * cos(lat) / (256 * 2**zoom)``."""
    return 40075016.686 * math.cos(math.radians(latitude)) / (TILE_SIZE * 2**zoom)
