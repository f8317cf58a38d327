"""What must hold for every finished audit run in the database, checked with SQL
independently of the engine's own output gate: the load test and ``bench/load.py``
use it after runs that shared workers, the database and the lock table."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Engine

from pipeline.aoi.config import AoiConfig


def run_problems(engine: Engine, run_id: int, config: AoiConfig) -> list[str]:
    """Everything wrong with run ``run_id`` of ``config``'s AOI (empty when consistent):
    status, shard rows, exactly one score per expected tile, no finding off the scored
    tiles, one AOI score."""
    expected = {(t.z, t.x, t.y) for tiles in config.shards().values() for t in tiles}
    problems: list[str] = []
    with engine.connect() as conn:
        run = conn.execute(
            text("SELECT status, shards_total FROM run WHERE id = :r"), {"r": run_id}
        ).one()
        if run.status != "succeeded":
            problems.append(f"status {run.status}")
        shards = dict(
            conn.execute(
                text("SELECT status, count(*) FROM run_shard WHERE run_id = :r GROUP BY status"),
                {"r": run_id},
            ).all()
        )
        planned = len(config.shards())
        if shards != {"done": run.shards_total} or run.shards_total != planned:
            problems.append(f"shards {shards} of {run.shards_total} ({planned} planned)")
        keys = conn.execute(
            text("SELECT z, x, y FROM tile_score WHERE run_id = :r"), {"r": run_id}
        ).all()
        stored = {tuple(k) for k in keys}
        if len(keys) != len(stored):
            problems.append(f"{len(keys) - len(stored)} duplicate tile rows")
        if stored != expected:
            problems.append(
                f"tiles: {len(expected - stored)} missing, {len(stored - expected)} unexpected"
            )
        orphans = conn.execute(
            text(
                "SELECT count(*) FROM finding f WHERE f.run_id = :r AND NOT EXISTS ("
                " SELECT 1 FROM tile_score t WHERE t.run_id = :r"
                " AND ST_Intersects(t.geometry, f.geometry))"
            ),
            {"r": run_id},
        ).scalar_one()
        if orphans:
            problems.append(f"{orphans} findings on no scored tile")
        n_scores = conn.execute(
            text("SELECT count(*) FROM aoi_score WHERE run_id = :r"), {"r": run_id}
        ).scalar_one()
        if n_scores != 1:
            problems.append(f"{n_scores} AOI score rows")
    return problems
