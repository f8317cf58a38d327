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

from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

import mercantile
from affine import Affine

from pipeline.errors import InvalidTileError

TILE_SIZE = 256
MAX_ZOOM = 24


class Tile(NamedTuple):
    """An XYZ web-mercator tile; ``y`` counts from the north."""

    x: int
    y: int
    z: int

    def __str__(self) -> str:
        return f"{self.z}/{self.x}/{self.y}"


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


def parse_shard_id(shard_id: str, work_zoom: int) -> Shard:
    """Inverse of :attr:`Shard.id`."""
    try:
        z, x, y = (int(part) for part in shard_id.split("-"))
    except ValueError as exc:
        raise InvalidTileError(f"shard id must look like 'z-x-y', got {shard_id!r}") from exc
    check_zooms(work_zoom, z)
    if not (0 <= x < 2**z and 0 <= y < 2**z):
        raise InvalidTileError(f"Tile(x={x}, y={y}, z={z}) is outside the zoom {z} grid")
    return Shard(Tile(x, y, z), work_zoom)


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
        groups[Shard(parent(tile, shard_zoom), tile.z)].append(tile)
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
    left, bottom, right, top = xy_bounds(shard.tile)
    res = (right - left) / shard.size
    return Affine(res, 0.0, left, 0.0, -res, top)


def resolution(zoom: int, latitude: float = 0.0) -> float:
    """Ground metres per pixel at ``zoom``: ``40075016.686 * cos(lat) / (256 * 2**zoom)``."""
    import math

    return 40075016.686 * math.cos(math.radians(latitude)) / (TILE_SIZE * 2**zoom)
