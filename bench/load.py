"""Load: many AOIs x steps audited at once through a real CeleryExecutor deployment.

Registers ``--aois`` sample towns (each its own seed, all served by one trained model
lineage), starts PostgreSQL-backed Airflow on loopback (api-server, scheduler,
dag-processor, ``--workers`` Celery workers), triggers every (AOI, step) audit through
the REST API at the same moment and waits for all of them. Then checks each run with
SQL (``tests/dags/consistency.py``: succeeded, every shard done, exactly one score per
planned tile, no finding off the scored tiles, one AOI score) and prints the wall time,
the tasks each worker ran and each worker's peak resident memory (its whole process
tree: Celery parent, pool child and the task processes it forks)::

    .venv/bin/python bench/load.py [--aois 8] [--steps 2] [--size-m 500] [--workers 2]

Needs PostgreSQL (``GEOAUDIT_TEST_PG_URL``, default postgres@127.0.0.1) and Redis.
Exits 1 when any run is inconsistent or failed.
"""

from __future__ import annotations

import argparse
import collections
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "dags"))
sys.path.insert(0, str(ROOT / "bench"))

from consistency import run_problems  # noqa: E402
from deployment import (  # noqa: E402
    Api,
    Deployment,
    MemorySampler,
    airflow_env,
    free_port,
    migrate,
)
from pgdb import drop_database, new_database  # noqa: E402

REDIS_DB = 13  # a database of the local Redis that nothing else uses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aois", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="audited steps per AOI (<= 2)")
    parser.add_argument("--size-m", type=float, default=500.0, help="side of each sample town")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=1, help="tasks per worker")
    parser.add_argument("--train-steps", type=int, default=200)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import redis

    redis.Redis(db=REDIS_DB).flushdb()
    work = Path(tempfile.mkdtemp(prefix="geoaudit-load-"))
    geo_url, meta_url = new_database(postgis=True), new_database(postgis=False)
    try:
        return load(args, work, geo_url, meta_url)
    finally:
        drop_database(geo_url)
        drop_database(meta_url)


def load(args: argparse.Namespace, work: Path, geo_url: str, meta_url: str) -> int:
    """Set up, run every audit at once, check and print; 1 when a run is wrong."""
    from sqlalchemy.orm import Session

    from pipeline.aoi.config import ModelSettings
    from pipeline.aoi.registry import register_aoi
    from pipeline.context import open_context
    from pipeline.db import repo
    from pipeline.sample.demo import create_sample_aoi
    from pipeline.settings import Settings
    from pipeline.training.challenger import train_aoi_model

    ctx = open_context(Settings(home=work / "home", database_url=geo_url), progress=False)
    t0 = time.perf_counter()
    lineage = ModelSettings(name="load-model")
    configs, steps = [], []
    for i in range(args.aois):
        info, config = create_sample_aoi(
            ctx, work / f"town-{i}", size_m=args.size_m, seed=100 + i, name=f"load-{i}"
        )
        update = {"schedule": None, "model": lineage}
        configs.append(register_aoi(ctx, config.model_copy(update=update)))
        steps.append(info.steps[: args.steps])
    train_aoi_model(
        ctx, configs[0].name, steps[0][:1], max_steps=args.train_steps, promote="always"
    )
    ctx.engine.dispose()
    n_tiles = sum(len(t) for c in configs for t in c.shards().values())
    print(
        f"{args.aois} AOIs of {args.size_m:.0f} m x {args.steps} steps, {n_tiles} tiles per "
        f"step in all; set up in {time.perf_counter() - t0:.0f} s; logs under {work}"
    )

    port = free_port()
    (work / "airflow").mkdir()
    env = airflow_env(
        airflow_home=work / "airflow",
        meta_url=meta_url,
        port=port,
        executor="CeleryExecutor",
        password="load",
        geoaudit_home=work / "home",
        geoaudit_url=geo_url,
        broker_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
    )
    env["AIRFLOW__CORE__PARALLELISM"] = str(args.workers * args.concurrency)
    migrate(env)
    dep = Deployment(env, work)
    workers = [f"worker-{i + 1}" for i in range(args.workers)]
    runs = [(c, step) for c, s in zip(configs, steps, strict=True) for step in s]
    try:
        for name in ("api-server", "scheduler", "dag-processor"):
            dep.start(name, name)
        for name in workers:
            dep.start(
                name,
                *("celery", "worker", "--queues", "default"),
                *("--concurrency", str(args.concurrency), "--celery-hostname", f"{name}@%h"),
                GEOAUDIT_TEST_WORKER=name,
                AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            )
        api = Api(f"http://127.0.0.1:{port}", "load", dep)
        with MemorySampler(dep, [*workers, "scheduler", "api-server"]) as memory:
            start = time.perf_counter()
            for config, step in runs:
                api.trigger(f"audit__{config.name}", f"load-{config.name}-{step}", {"step": step})
            results = [
                api.wait(f"audit__{config.name}", f"load-{config.name}-{step}", timeout=3600)
                for config, step in runs
            ]
            wall = time.perf_counter() - start
    finally:
        dep.stop()

    ctx = open_context(Settings(home=work / "home", database_url=geo_url), progress=False)
    bad = 0
    tasks_by_worker: collections.Counter[str] = collections.Counter()
    task_seconds = 0.0
    print(f"{'run':<28}{'airflow':>9}{'tiles':>7}{'findings':>10}{'stages s':>10}  problems")
    for (config, step), (state, tis) in zip(runs, results, strict=True):
        for ti in tis:
            tasks_by_worker[ti.get("hostname") or "-"] += 1
            task_seconds += float(ti.get("duration") or 0.0)
        with Session(ctx.engine) as s:
            run = repo.run_by_external_id(s, f"load-{config.name}-{step}")
            problems = ["no run row"] if run is None else run_problems(ctx.engine, run.id, config)
            counts = repo.run_result_counts(s, run.id) if run else {}
            n_tiles = len(repo.tile_scores_frame(s, run.id)) if run else 0
            stages = sum(float(v["seconds"]) for v in ((run and run.stage_seconds) or {}).values())
        if state != "success":
            problems.insert(0, f"Airflow state {state}")
        bad += bool(problems)
        print(
            f"{config.name + ' ' + step:<28}{state:>9}{n_tiles:>7}"
            f"{counts.get('n_findings', 0):>10}{stages:>10.1f}  {'; '.join(problems) or 'ok'}"
        )
    ctx.engine.dispose()

    print(
        f"\n{len(runs)} runs at once on {args.workers} workers x {args.concurrency}: "
        f"wall {wall:.0f} s ({wall / len(runs):.1f} s per run), task time {task_seconds:.0f} s, "
        f"{len(runs) - bad}/{len(runs)} consistent"
    )
    for name, peak in memory.peak_bytes.items():
        print(f"  {name:<12} peak RSS {peak / 2**20:>7.0f} MiB   tasks {tasks_by_worker[name]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
