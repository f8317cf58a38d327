"""Orchestration overhead of the audit DAG: Airflow run wall time minus the stage times
the engine measured, as a share of the run, per executor and shard size.

Starts real deployments on loopback (PostgreSQL metadata, LocalExecutor; then Redis +
CeleryExecutor with two workers), triggers ``audit__<sample>`` through the REST API
with ``force`` and ``repredict`` (every shard predicted again, imagery already
fetched) and prints one line per (executor, shard zoom):

    .venv/bin/python bench/airflow_overhead.py [--size-m 1000] [--shard-zooms 16 15]
        [--idle-sleeps 1.0 0.1]

Needs PostgreSQL (``GEOAUDIT_TEST_PG_URL``, default postgres@127.0.0.1) and Redis.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "dags"))
sys.path.insert(0, str(ROOT / "bench"))

from deployment import Api, Deployment, airflow_env, free_port, migrate  # noqa: E402
from pgdb import new_database  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-m", type=float, default=1000.0)
    parser.add_argument("--shard-zooms", type=int, nargs="+", default=[16, 15])
    parser.add_argument("--executors", nargs="+", default=["LocalExecutor", "CeleryExecutor"])
    parser.add_argument(
        "--idle-sleeps",
        type=float,
        nargs="+",
        default=[0.1],
        help="scheduler_idle_sleep_time values to compare (Airflow's default is 1.0)",
    )
    args = parser.parse_args()
    # stop the deployments (finally blocks) on SIGTERM too, not only on Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import redis

    redis.Redis(db=12).flushdb()  # no task of an earlier deployment may linger

    from pipeline.aoi.registry import register_aoi
    from pipeline.context import open_context
    from pipeline.db import repo
    from pipeline.sample.demo import create_sample_aoi
    from pipeline.settings import Settings
    from pipeline.training.challenger import train_aoi_model

    work = Path(tempfile.mkdtemp(prefix="geoaudit-af-bench-"))
    geo_url = new_database(postgis=True)
    ctx = open_context(Settings(home=work / "home", database_url=geo_url))
    info, config = create_sample_aoi(ctx, size_m=args.size_m)
    # a real model (an untrained one predicts noise, which no audit should be timed on)
    train_aoi_model(ctx, config.name, [info.steps[0]], max_steps=300, promote="always")
    step = info.steps[0]
    print(f"sample {args.size_m:.0f} m, {len(config.tiles())} tiles; logs under {work}")
    print(
        f"{'executor':<16}{'idle s':>7}{'shard z':>8}{'shards':>8}{'run s':>8}{'stages s':>10}"
        f"{'overhead':>10}{'tasks s':>9}{'per task':>10}"
    )

    runs = [(e, z, i) for e in args.executors for z in args.shard_zooms for i in args.idle_sleeps]
    for executor, zoom, idle in runs:
        cfg = register_aoi(ctx, config.model_copy(update={"shard_zoom": zoom, "schedule": None}))
        n_shards = len(cfg.shards())
        port = free_port()
        home = work / f"airflow-{executor}-{zoom}-{idle}"
        home.mkdir()
        env = airflow_env(
            airflow_home=home,
            meta_url=new_database(postgis=False),
            port=port,
            executor=executor,
            password="bench",
            geoaudit_home=work / "home",
            geoaudit_url=geo_url,
            broker_url="redis://127.0.0.1:6379/12" if executor == "CeleryExecutor" else None,
        )
        env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] = str(idle)
        migrate(env)
        dep = Deployment(env, home)
        try:
            for name in ("api-server", "scheduler", "dag-processor"):
                dep.start(name, name)
            if executor == "CeleryExecutor":
                for name in ("worker-1", "worker-2"):
                    dep.start(
                        name,
                        *("celery", "worker", "--queues", "default", "--concurrency", "1"),
                        *("--celery-hostname", f"{name}@%h"),
                        GEOAUDIT_TEST_WORKER=name,
                        AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
                    )
            api = Api(f"http://127.0.0.1:{port}", "bench", dep)
            run_id = f"bench-{executor}-{zoom}-{idle}"
            state, wall, tis = api.trigger_and_wait(
                f"audit__{config.name}",
                run_id,
                {"step": step, "force": True, "repredict": True},
            )
        finally:
            dep.stop()
        with Session(ctx.engine) as s:
            run = repo.run_by_external_id(s, run_id)
            stages = sum(float(v["seconds"]) for v in (run.stage_seconds or {}).values())
        share = (wall - stages) / wall
        # time inside task instances, and what each task costs beyond engine work
        task_s = sum(float(ti.get("duration") or 0.0) for ti in tis)
        ran = [ti for ti in tis if ti.get("duration")]
        per_task = (task_s - stages) / max(len(ran), 1)
        print(
            f"{executor:<16}{idle:>7.1f}{zoom:>8}{n_shards:>8}{wall:>8.1f}{stages:>10.1f}"
            f"{share:>10.0%}{task_s:>9.1f}{per_task:>9.1f}s  ({state})"
        )


if __name__ == "__main__":
    main()
