"""Dashboard render times at scale, in PostgreSQL: every page's first render (empty data
caches, as after a restart or the 60 s TTL) and its re-render from cache.

Seeds a fresh PostGIS database through the engine's own repository functions with
``--aois`` AOIs x ``--steps`` audited steps (default 5 x 10 = 50 runs), each run
``--side``² work tiles (default 64² = 4096, i.e. 204,800 tile scores) and
``--findings`` findings (default 400, i.e. 20,000), plus real shard mosaics (imagery,
labels, predictions) so the map, tile inspector, changes and review pages read pixels.
Then times each page under Streamlit's AppTest, and, side by side, the baseline that
the SQL queries replace: the same overview and map cells computed in Python from ORM
frames (what a dashboard without ``sql/queries`` would do).

    .venv/bin/python bench/dashboard_render.py [--aois 5 --steps 10 --side 64 --repeat 3]

Needs PostgreSQL with PostGIS (``GEOAUDIT_TEST_PG_URL``, default postgres@127.0.0.1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mercantile
import numpy as np
from shapely.geometry import box
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pgdb import drop_database, new_database  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
PAGES = ["overview", "trends", "hotspots", "tile_inspector", "changes", "review", "runs", "models"]
WORK_ZOOM, SHARD_ZOOM = 18, 15
FINDING_KINDS = ("missing_in_opendata", "unsupported_by_imagery", "misaligned")
CHANGE_KINDS = ("appeared", "disappeared", "stale_opendata", "added", "removed")


def _town(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic shard: ground with texture, rectangular roofs; labels; predictions."""
    image = np.empty((3, size, size), np.uint8)
    ground = rng.integers(70, 110, size=(size // 64, size // 64, 3)).astype(np.uint8)
    image[:] = np.moveaxis(np.kron(ground, np.ones((64, 64, 1), np.uint8)), -1, 0)
    label = np.zeros((size, size), np.uint8)
    for _ in range(size // 24):
        y, x = rng.integers(0, size - 40, 2)
        h, w = rng.integers(12, 40, 2)
        label[y : y + h, x : x + w] = 1
        image[:, y : y + h, x : x + w] = rng.integers(150, 220, (3, 1, 1))
    pred = np.roll(label, int(rng.integers(-4, 5)), axis=1)
    pred[rng.random((size, size)) < 0.002] = 1
    return image, label, pred


def seed(url: str, home: Path, args: argparse.Namespace) -> dict[str, int]:
    """Fill the database and artifact store; counts of what was written."""
    from pipeline.aoi import parse_aoi
    from pipeline.context import open_context
    from pipeline.db import repo
    from pipeline.mosaic import array_hash, write_mosaic
    from pipeline.run.layout import imagery_key, labels_key, prediction_key
    from pipeline.run.snapshots import ShardRef, imagery_meta
    from pipeline.settings import Settings
    from pipeline.tiles import Tile

    rng = np.random.default_rng(7)
    ctx = open_context(Settings(home=home, database_url=url))
    counts = {"runs": 0, "tile_scores": 0, "findings": 0, "changes": 0}
    with Session(ctx.engine) as s, s.begin():
        model = repo.register_model_version(
            s,
            "buildings",
            arch="unet",
            encoder="resnet18",
            weights_uri="models/buildings/v1.pt",
            weights_sha256="0" * 64,
            metrics={"val_iou": 0.78},
            stage="production",
        )
        model_id = model.id
    steps = [f"{2016 + i}-06-01" for i in range(args.steps)]
    n = 2 ** (WORK_ZOOM - SHARD_ZOOM)
    for a in range(args.aois):
        first = mercantile.tile(7.0 + 0.25 * a, 47.2, WORK_ZOOM)
        x0, y0 = (first.x // n) * n, (first.y // n) * n
        west, _, _, north = mercantile.bounds(x0, y0, WORK_ZOOM)
        _, south, east, _ = mercantile.bounds(x0 + args.side - 1, y0 + args.side - 1, WORK_ZOOM)
        name = f"bench-{a}"
        config = parse_aoi(
            {
                "name": name,
                "bbox": [west + 1e-6, south + 1e-6, east - 1e-6, north - 1e-6],
                "work_zoom": WORK_ZOOM,
                "shard_zoom": SHARD_ZOOM,
                "imagery": {"kind": "geotiff", "path": "imagery/{step}.tif"},
                "opendata": {"kind": "vector", "path": "opendata/{step}.geojson"},
                "schedule": "@weekly",
            },
            source=name,
        )
        shards = config.shards()
        with Session(ctx.engine) as s, s.begin():
            aoi_id = repo.upsert_aoi(
                s, name, config.model_dump(mode="json"), box(west, south, east, north)
            ).id
        od_hash = f"{a:02d}" + "e" * 62
        shard_meta = {}
        for shard in tqdm(shards, desc=f"{name} mosaics", unit="shard", leave=False):
            image, label, pred = _town(rng, shard.size)
            key = imagery_key(name, "all", "f" * 16, shard.id)
            h = array_hash(image)
            with ctx.store.writable_path(key) as p:
                write_mosaic(p, image, shard, kind="image")
            with ctx.store.writable_path(labels_key(name, od_hash, shard.id)) as p:
                write_mosaic(p, label, shard, kind="label")
            with ctx.store.writable_path(prediction_key(name, model_id, h, shard.id)) as p:
                write_mosaic(p, pred.astype(np.float32), shard, kind="prob")
            shard_meta[shard.id] = ShardRef(shard.id, key, h, 1.0)
        for i, step in enumerate(tqdm(steps, desc=f"{name} runs", unit="run", leave=False)):
            with Session(ctx.engine) as s, s.begin():
                img = repo.add_snapshot(
                    s,
                    aoi_id,
                    "imagery",
                    step,
                    source="bench",
                    content_hash=f"{a}-{i}-img",
                    meta=imagery_meta("f" * 16, 1.0, shard_meta, {}),
                )
                od = repo.add_snapshot(
                    s,
                    aoi_id,
                    "opendata",
                    step,
                    source="bench",
                    content_hash=od_hash,
                    meta={"key": "unused"},
                    feature_count=5000,
                )
                run = repo.start_run(
                    s,
                    aoi_id,
                    step,
                    trigger="bench",
                    shards_total=len(shards),
                    imagery_snapshot_id=img.id,
                    opendata_snapshot_id=od.id,
                    model_version_id=model_id,
                )
                run_id = run.id
                drift = 0.03 * i
                for shard, tiles in shards.items():
                    rows = []
                    for t in tiles:
                        qod = float(np.clip(rng.normal(82 - 20 * drift, 12), 0, 100))
                        iou = qod / 100 * 0.9
                        rows.append(
                            {
                                "z": t.z,
                                "x": t.x,
                                "y": t.y,
                                "qod": qod,
                                "iou": iou,
                                "precision": min(1.0, iou + 0.1),
                                "recall": min(1.0, iou + 0.05),
                                "f1": iou,
                                "tp": 900,
                                "fp": 100,
                                "fn": 120,
                                "valid_px": 65536,
                                "fg_label": 1000,
                                "fg_pred": 1000,
                                "flagged": qod < 70,
                                "n_findings": int(rng.integers(0, 3)),
                            }
                        )
                    repo.replace_shard_results(s, run_id, shard.id, rows)
                    counts["tile_scores"] += len(rows)
                all_tiles = [t for ts in shards.values() for t in ts]
                picks = rng.choice(len(all_tiles), size=args.findings)
                findings = []
                for k in picks:
                    t: Tile = all_tiles[int(k)]
                    w, s_, e, n_ = mercantile.bounds(t.x, t.y, t.z)
                    fx, fy = rng.random(2) * 0.7
                    findings.append(
                        {
                            "kind": FINDING_KINDS[int(k) % 3],
                            "area_m2": float(rng.uniform(40, 600)),
                            "confidence": float(rng.uniform(0.5, 1)),
                            "tile_z": t.z,
                            "tile_x": t.x,
                            "tile_y": t.y,
                            "shard_id": f"{SHARD_ZOOM}-{t.x // n}-{t.y // n}",
                            "geometry": box(
                                w + (e - w) * fx,
                                s_ + (n_ - s_) * fy,
                                w + (e - w) * (fx + 0.2),
                                s_ + (n_ - s_) * (fy + 0.2),
                            ),
                        }
                    )
                counts["findings"] += repo.replace_findings(s, run_id, findings)
                if i:
                    changes = [
                        {**f, "kind": CHANGE_KINDS[j % 5]} for j, f in enumerate(findings[:40])
                    ]
                    changes = [
                        {
                            k: v
                            for k, v in c.items()
                            if k in ("kind", "area_m2", "confidence", "geometry")
                        }
                        for c in changes
                    ]
                    counts["changes"] += repo.replace_changes(
                        s, run_id, changes, step_from=steps[i - 1]
                    )
                repo.replace_hotspots(
                    s,
                    run_id,
                    [
                        {
                            "z": 16,
                            "x": x0 // 4 + j,
                            "y": y0 // 4 + j,
                            "gi_star": 3.0 - j,
                            "n_findings": 20 - j,
                        }
                        for j in range(5)
                    ],
                )
                repo.write_aoi_score(
                    s,
                    run_id,
                    {
                        "step": step,
                        "aoi_id": aoi_id,
                        "completeness": 0.9 - drift,
                        "correctness": 0.92 - drift / 2,
                        "mean_iou": 0.7 - drift,
                        "mean_qod": 82 - 20 * drift,
                        "flagged_tile_share": 0.15 + drift,
                        "n_tiles": len(all_tiles),
                        "n_opendata": 5000,
                        "n_predicted": 5100,
                        "findings_by_kind": {},
                    },
                )
                repo.finish_run(s, run_id, "succeeded", stage_seconds={"score": {"seconds": 1.0}})
            counts["runs"] += 1
    with ctx.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    ctx.engine.dispose()
    return counts


def time_pages(repeat: int) -> dict[str, tuple[float, float]]:
    """(first render, cached re-render) seconds per page, medians of ``repeat``."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    results: dict[str, tuple[float, float]] = {}
    warm = AppTest.from_file(str(APP), default_timeout=300)
    warm.run()  # engine, imports: a running server has these already
    for page in PAGES:
        firsts, cached = [], []
        for _ in range(repeat):
            st.cache_data.clear()
            at = AppTest.from_file(str(APP), default_timeout=300)
            at.switch_page(f"views/{page}.py")
            t0 = time.perf_counter()
            at.run()
            firsts.append(time.perf_counter() - t0)
            if at.exception or not at.title:
                raise SystemExit(f"page {page} did not render: {list(at.exception)}")
            t0 = time.perf_counter()
            at.run()
            cached.append(time.perf_counter() - t0)
        results[page] = (statistics.median(firsts), statistics.median(cached))
    return results


def time_baseline(url: str, home: Path, repeat: int) -> dict[str, tuple[float, float]]:
    """Overview and map cells: SQL queries vs the same numbers from ORM frames in Python."""
    from pipeline.context import open_context
    from pipeline.db import repo
    from pipeline.db.queries import read_query
    from pipeline.settings import Settings

    ctx = open_context(Settings(home=home, database_url=url))
    engine = ctx.engine

    def overview_python() -> list[dict]:
        rows = []
        with Session(engine) as s:
            for aoi in repo.list_aois(s):
                scores = repo.aoi_scores(s, aoi.id)
                latest = repo.latest_run(s, aoi.id)
                findings = repo.findings_frame(s, latest.id)
                reviewed = {r.finding_id for r in repo.list_reviews(s, aoi.id)}
                last = repo.list_runs(s, aoi.id, limit=1)[0]
                rows.append(
                    {
                        "aoi": aoi.name,
                        "qod": scores[-1].mean_qod,
                        "qod_change": scores[-1].mean_qod - scores[-2].mean_qod,
                        "open": int((~findings["id"].isin(reviewed)).sum()),
                        "last": last.status,
                    }
                )
        return rows

    with Session(engine) as s:
        run_id = repo.latest_run(s, repo.list_aois(s)[0].id).id

    def cells_python():
        with Session(engine) as s:
            tiles = repo.tile_scores_frame(s, run_id)
        return tiles.groupby([tiles["x"] // 4, tiles["y"] // 4])["qod"].mean()

    cases = {
        "overview": (lambda: read_query(engine, "aoi_overview"), overview_python),
        "map cells": (
            lambda: read_query(engine, "tile_cells", run_id=run_id, factor=4),
            cells_python,
        ),
    }
    out = {}
    for name, (sql, python) in cases.items():
        out[name] = (
            statistics.median(_timed(sql) for _ in range(repeat)),
            statistics.median(_timed(python) for _ in range(repeat)),
        )
    ctx.engine.dispose()
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aois", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--side", type=int, default=64, help="work tiles per AOI side")
    parser.add_argument("--findings", type=int, default=400, help="findings per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="geoaudit-dash-bench-"))
    url = new_database()
    os.environ.update(
        GEOAUDIT_HOME=str(home),
        GEOAUDIT_DATABASE_URL=url,
        GEOAUDIT_AIRFLOW_URL="http://127.0.0.1:9",
    )
    try:
        t0 = time.perf_counter()
        counts = seed(url, home, args)
        print(
            f"seeded {counts['runs']} runs, {counts['tile_scores']:,} tile scores, "
            f"{counts['findings']:,} findings, {counts['changes']:,} changes "
            f"in {time.perf_counter() - t0:.0f} s ({make_url(url).database})"
        )
        pages = time_pages(args.repeat)
        print(
            f"\n{'page':<16}{'first s':>9}{'cached s':>10}   targets: first <= 2 s, cached <= 0.5 s"
        )
        for page, (first, cached) in pages.items():
            ok = "ok" if first <= 2.0 and cached <= 0.5 else "MISSED"
            print(f"{page:<16}{first:>9.3f}{cached:>10.3f}   {ok}")
        print(f"\n{'aggregation':<16}{'SQL s':>9}{'Python s':>10}{'ratio':>8}", end="")
        print("   (baseline: ORM frames + pandas)")
        for name, (sql, python) in time_baseline(url, home, args.repeat).items():
            print(f"{name:<16}{sql:>9.3f}{python:>10.3f}{python / sql:>7.1f}x")
    finally:
        if not args.keep:
            drop_database(url)


if __name__ == "__main__":
    sys.exit(main())
