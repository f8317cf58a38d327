"""Builders for database tests: a Lisbon shard of 4 x 4 work tiles and tile-score rows."""

from __future__ import annotations

from typing import Any

import shapely

from pipeline.tiles import Tile, lnglat_bounds

# shard 16/31104/25114 (Lisbon) holds the z18 tiles x 124416..124419, y 100456..100459
SHARD = Tile(31104, 25114, 16)
SHARD_ID = "16-31104-25114"
WORK_ZOOM = 18


def shard_tiles(shard: Tile = SHARD, work_zoom: int = WORK_ZOOM) -> list[Tile]:
    n = 2 ** (work_zoom - shard.z)
    return [Tile(shard.x * n + c, shard.y * n + r, work_zoom) for r in range(n) for c in range(n)]


def shard_id(shard: Tile) -> str:
    return f"{shard.z}-{shard.x}-{shard.y}"


def tile_rows(tiles: list[Tile], iou: float = 0.5) -> list[dict[str, Any]]:
    return [
        {"z": t.z, "x": t.x, "y": t.y, "iou": iou, "tp": 10, "fp": 2, "fn": 3, "valid_px": 65536}
        for t in tiles
    ]


def aoi_polygon() -> shapely.Polygon:
    return shapely.box(*lnglat_bounds(SHARD))
