"""Builders shared by the run tests: fetched snapshots and planned runs of the Lalitpur
AOIs, copies of the tile tree with tiles left out, and small AOIs over a few tiles."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mercantile
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig
from pipeline.aoi.registry import register_aoi
from pipeline.context import Context
from pipeline.db import repo
from pipeline.run.fetch import fetch_imagery, fetch_opendata
from pipeline.run.handoffs import AuditPlan, AuditRequest, FetchedSnapshot
from pipeline.run.lifecycle import start_run
from pipeline.tiles import Tile

from .conftest import DATA, STEP, lalitpur_config

#: the four z19 shards of the Lalitpur cluster, each 2 x 2 z20 tiles
SHARD_IDS = ("19-386697-220263", "19-386697-220264", "19-386698-220263", "19-386698-220264")
_names = itertools.count(1)


def unique_name(prefix: str) -> str:
    """A new AOI name (AOIs of one test module share a database)."""
    return f"{prefix}-{next(_names)}"


def tiles_of_shard(shard_id: str, work_zoom: int = 20) -> list[Tile]:
    """The work tiles of a shard ``z-x-y``, row by row."""
    z, x, y = (int(v) for v in shard_id.split("-"))
    n = 2 ** (work_zoom - z)
    return [Tile(x * n + c, y * n + r, work_zoom) for r in range(n) for c in range(n)]


def bbox_of(tiles: Iterable[Tile], shrink: float = 1e-7) -> list[float]:
    """WGS84 bounds of some tiles, shrunk a little so no neighbour tile is touched."""
    bounds = [mercantile.bounds(t.x, t.y, t.z) for t in tiles]
    return [
        min(b.west for b in bounds) + shrink,
        min(b.south for b in bounds) + shrink,
        max(b.east for b in bounds) - shrink,
        max(b.north for b in bounds) - shrink,
    ]


def tile_tree_without(dest: Path, dropped: Iterable[Tile]) -> Path:
    """A copy of the Lalitpur tile tree without the given tiles (their imagery is gone)."""
    root = dest / "tiles"
    shutil.copytree(DATA / "tiles", root)
    for t in dropped:
        (root / str(t.z) / str(t.x) / f"{t.y}.png").unlink()
    return root


def register(ctx: Context, prefix: str = "aoi", **overrides: Any) -> AoiConfig:
    """A new Lalitpur AOI (a unique name) registered with ``overrides``."""
    return register_aoi(ctx, lalitpur_config(unique_name(prefix), **overrides))


def small_config_overrides(tiles: list[Tile], shard_zoom: int = 20) -> dict[str, Any]:
    """Overrides for an AOI over ``tiles`` only (one tile per shard by default: the
    model predicts 256 px shards, fast)."""
    return {"bbox": bbox_of(tiles), "shard_zoom": shard_zoom}


def fetched(
    ctx: Context, config: AoiConfig, step: str = STEP
) -> tuple[FetchedSnapshot, FetchedSnapshot]:
    """Both snapshots of the AOI at ``step``."""
    return fetch_imagery(ctx, config, step), fetch_opendata(ctx, config, step)


def planned(ctx: Context, config: AoiConfig, step: str = STEP, **request: Any) -> AuditPlan:
    """Fetch and start a run of the AOI (``request``: AuditRequest options)."""
    imagery, opendata = fetched(ctx, config, step)
    return start_run(ctx, config, AuditRequest(config.name, step, **request), imagery, opendata)


def finish_unscored(ctx: Context, plan: AuditPlan) -> None:
    """Mark every shard of a planned run done (no tile rows) and the run succeeded: a run
    row in its final state, for lifecycle tests that need no scores."""
    with Session(ctx.engine) as s, s.begin():
        for sid in plan.shard_ids:
            repo.replace_shard_results(s, plan.run_id, sid, [], {"shard_id": sid})
        repo.finish_run(s, plan.run_id, "succeeded")


def run_row(ctx: Context, run_id: int) -> Any:
    """The run row, detached (its columns stay readable)."""
    with Session(ctx.engine, expire_on_commit=False) as s:
        run = repo.get_run(s, run_id)
        s.expunge(run)
        return run
