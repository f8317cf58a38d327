"""A 100 km² audit on 2 cores: wall time and peak memory per stage.

The area is built from the synthetic town: one town of ``--town-m`` (default 2 km) is
generated once and laid ``--grid`` x ``--grid`` times side by side (default 5 x 5:
10 km x 10 km). The imagery is one VRT that places the town's GeoTIFF at each copy's
offset; the open data is the town's footprints moved by the same metres, each copy's
ids made unique. The AOI's model is trained briefly (``--train-steps``, one fold: this
measures speed, not verdicts), then the first step is audited in this process by the
audit's own runner, each stage timed and the peak resident memory of the whole process
tree (the validation helper included) sampled every 50 ms while the stage runs::

    .venv/bin/python bench/scale.py [--town-m 2000] [--grid 5] [--train-steps 400] [--airflow]

With ``--airflow`` the same AOI is then audited again (``force``, ``repredict``: every
shard predicted again) through a real Airflow deployment on loopback
(``bench/airflow_overhead.py``'s: api-server, scheduler, dag-processor, LocalExecutor;
one task per shard), and its wall time, the stage time the engine recorded and the
orchestration overhead are printed last.

Needs PostgreSQL with PostGIS (``GEOAUDIT_TEST_PG_URL``, default postgres@127.0.0.1):
the audit writes to a new database, dropped at the end. Threads: 2. The audit's wall time and
peak memory come last (before the Airflow line).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

os.environ.setdefault("OMP_NUM_THREADS", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "dags"))
sys.path.insert(0, str(ROOT / "bench"))

from deployment import tree_rss  # noqa: E402
from pgdb import drop_database, new_database  # noqa: E402

AOI = "scale-town"


class PeakMemory:
    """Samples the resident memory of this process and its children (every 50 ms in a
    thread); :meth:`window` returns the peak since the previous call."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self._interval_s = interval_s
        self._peak = 0
        self._overall = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            rss = tree_rss(os.getpid())
            with self._lock:
                self._peak = max(self._peak, rss)
                self._overall = max(self._overall, rss)

    def window(self) -> int:
        """Peak bytes since the last call (at least the current reading)."""
        rss = tree_rss(os.getpid())
        with self._lock:
            peak, self._peak = max(self._peak, rss), 0
            self._overall = max(self._overall, peak)
        return peak

    @property
    def overall(self) -> int:
        return self._overall


def tiled_area(work: Path, town_m: float, grid: int, seed: int) -> dict[str, Any]:
    """Generate the town, lay it ``grid`` x ``grid`` times; the AOI settings that audit it."""
    import geopandas as gpd
    import pandas as pd
    import rasterio
    from shapely import affinity

    from pipeline.sample import create_sample

    info = create_sample(work / "town", seed=seed, size_m=town_m, progress=True)
    step = info.steps[0]
    (work / "imagery").mkdir()
    (work / "opendata").mkdir()
    with rasterio.open(info.imagery[step]) as src:
        width, height, t, crs, count = src.width, src.height, src.transform, src.crs, src.count
        interps = [c.name.capitalize() for c in src.colorinterp]
    bands = []
    for b in range(1, count + 1):
        sources = "".join(
            f'<SimpleSource><SourceFilename relativeToVRT="0">{info.imagery[step]}'
            f"</SourceFilename><SourceBand>{b}</SourceBand>"
            f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            f'<DstRect xOff="{i * width}" yOff="{j * height}" xSize="{width}" ySize="{height}"/>'
            "</SimpleSource>"
            for j in range(grid)
            for i in range(grid)
        )
        bands.append(
            f'<VRTRasterBand dataType="Byte" band="{b}"><ColorInterp>{interps[b - 1]}'
            f"</ColorInterp>{sources}</VRTRasterBand>"
        )
    (work / "imagery" / f"{step}.vrt").write_text(
        f'<VRTDataset rasterXSize="{width * grid}" rasterYSize="{height * grid}">'
        f"<SRS>{escape(crs.to_wkt())}</SRS>"
        f"<GeoTransform>{t.c}, {t.a}, 0, {t.f}, 0, {t.e}</GeoTransform>"
        + "".join(bands)
        + "</VRTDataset>"
    )
    town = gpd.read_file(info.opendata[step]).to_crs(crs)
    copies = []
    for j in range(grid):
        for i in range(grid):
            copy = town.copy()
            copy["geometry"] = copy.geometry.apply(
                affinity.translate, xoff=i * width * t.a, yoff=j * height * t.e
            )
            copy["id"] = [f"{i}-{j}-{v}" for v in town["id"]]
            copies.append(copy)
    area = gpd.GeoDataFrame(pd.concat(copies, ignore_index=True), crs=crs).to_crs("EPSG:4326")
    area.to_file(work / "opendata" / f"{step}.geojson", driver="GeoJSON")
    west, south, east, north = area.total_bounds
    return {
        "name": AOI,
        "bbox": [float(west), float(south), float(east), float(north)],
        "work_zoom": 18,
        "shard_zoom": 16,
        "imagery": {"kind": "geotiff", "path": str(work / "imagery" / "{step}.vrt")},
        "opendata": {
            "kind": "vector",
            "path": str(work / "opendata" / "{step}.geojson"),
            "id_field": "id",
        },
        "steps": [step],
        "schedule": None,  # audited when the bench says, by hand or trigger
        # the sample town's network, with which README's figures were measured
        "model": {
            "encoder": "tu-mobilenetv3_small_100",
            "train": {"folds": 1, "geometric_augment": False},
        },
    }


def train(home: str, url: str, step: str, steps: int) -> None:
    """The AOI's model, trained in a child process so that the audit's memory figures
    start from a process that never trained (as ``geoaudit audit`` does)."""
    import torch

    from pipeline.context import open_context
    from pipeline.settings import Settings
    from pipeline.training.challenger import train_aoi_model

    torch.set_num_threads(2)
    ctx = open_context(Settings(home=Path(home), database_url=url))
    train_aoi_model(ctx, AOI, [step], max_steps=steps, promote="always")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--town-m", type=float, default=2000.0, help="side of one town")
    parser.add_argument("--grid", type=int, default=5, help="towns per side")
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--airflow",
        action="store_true",
        help="then audit the same AOI again through a real Airflow deployment (LocalExecutor)",
    )
    args = parser.parse_args()

    import torch

    from pipeline.aoi.config import parse_aoi
    from pipeline.aoi.registry import register_aoi
    from pipeline.context import open_context
    from pipeline.locks import audit_lock
    from pipeline.run.handoffs import AuditPlan, AuditRequest
    from pipeline.run.local import LocalRunner
    from pipeline.run.validation_helper import AuditGate
    from pipeline.settings import Settings

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="geoaudit-scale-"))
    url = new_database(postgis=True)
    try:
        started = time.perf_counter()
        settings = Settings(home=work / "home", database_url=url)
        ctx = open_context(settings, progress=sys.stderr.isatty())
        config = register_aoi(ctx, parse_aoi(tiled_area(work, args.town_m, args.grid, args.seed)))
        step = config.steps[0]
        print(
            f"area: {config.area_km2():.1f} km², {len(config.tiles()):,} tiles at z"
            f"{config.work_zoom}, {len(config.shards()):,} shards; built in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        t0 = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(
            target=train, args=(str(settings.home), url, step, args.train_steps)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"training failed (exit code {child.exitcode})")
        print(f"trained {args.train_steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)

        figures: list[tuple[str, float, int]] = []
        with PeakMemory() as memory:

            class MeasuredRunner(LocalRunner):
                """The audit's runner, each stage timed and its peak memory taken."""

                def _run(self, stage: Any, request: AuditRequest, done: dict[str, Any]) -> Any:
                    memory.window()
                    t = time.perf_counter()
                    out = super()._run(stage, request, done)
                    figures.append((stage.name, time.perf_counter() - t, memory.window()))
                    return out

                def _predict_while_validating(self, plan: AuditPlan) -> None:
                    memory.window()
                    t = time.perf_counter()
                    super()._predict_while_validating(plan)
                    figures.append(
                        ("predict while validating", time.perf_counter() - t, memory.window())
                    )

            request = AuditRequest(aoi=AOI, step=step, trigger="bench")
            t0 = time.perf_counter()
            with (
                audit_lock(ctx.engine, AOI, step, home=ctx.settings.home) as lock,
                AuditGate(ctx) as gate,
            ):
                MeasuredRunner(ctx.with_validator(gate), gate, lock).run(request)
            wall = time.perf_counter() - t0
        print(f"\n{'stage':<26}{'seconds':>9}{'share':>8}{'peak MB':>9}")
        for name, seconds, peak in figures:
            print(f"{name:<26}{seconds:>9.1f}{seconds / wall:>8.0%}{peak / 2**20:>9.0f}")
        print(
            f"audit of {config.area_km2():.1f} km²: {wall:.0f} s wall "
            f"({wall / config.area_km2():.2f} s per km²), peak {memory.overall / 2**20:.0f} MB"
        )
        if args.airflow:
            from airflow_overhead import timed_dag_run

            timed = timed_dag_run(ctx, work, url, AOI, step, timeout_s=3 * 3600)
            print(
                f"through Airflow (LocalExecutor, {timed.tasks} tasks, every shard predicted "
                f"again): {timed.wall_s:.0f} s wall ({timed.state}), stages {timed.stages_s:.0f} "
                f"s, overhead {timed.overhead:.0%} of the run, {timed.wall_s / wall:.2f}x the "
                "audit in one process"
            )
    finally:
        drop_database(url)


if __name__ == "__main__":
    main()
