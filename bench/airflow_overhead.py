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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "dags"))
sys.path.insert(0, str(ROOT / "bench"))

from deployment import Api, Deployment, airflow_env, free_port, migrate  # noqa: E402
from pgdb import new_database  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from pipeline.db import repo  # noqa: E402


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
        timed = timed_dag_run(
            ctx, work, geo_url, cfg.name, step, executor=executor, idle_s=idle, tag=f"z{zoom}"
        )
        # time inside task instances, and what each task costs beyond engine work
        per_task = (timed.task_s - timed.stages_s) / max(timed.tasks, 1)
        print(
            f"{executor:<16}{idle:>7.1f}{zoom:>8}{len(cfg.shards()):>8}{timed.wall_s:>8.1f}"
            f"{timed.stages_s:>10.1f}{timed.overhead:>10.0%}{timed.task_s:>9.1f}"
            f"{per_task:>9.1f}s  ({timed.state})"
        )


@dataclass(frozen=True)
class TimedDagRun:
    """One ``audit__<aoi>`` run through a real deployment: its wall time, the stage
    seconds the engine recorded on the run, and the time inside task instances."""

    state: str
    wall_s: float
    stages_s: float
    task_s: float
    tasks: int

    @property
    def overhead(self) -> float:
        """Share of the run's wall time outside the engine's stages."""
        return (self.wall_s - self.stages_s) / self.wall_s


def timed_dag_run(
    ctx: Any,
    work: Path,
    geo_url: str,
    aoi: str,
    step: str,
    *,
    executor: str = "LocalExecutor",
    idle_s: float = 0.1,
    timeout_s: float = 900,
    tag: str = "",
) -> TimedDagRun:
    """Start a deployment on loopback (api-server, scheduler, dag-processor; two Celery
    workers with ``CeleryExecutor``) over the GeoAudit home ``work / "home"``, trigger
    ``audit__<aoi>`` with ``force`` and ``repredict`` for ``step``, wait for its end and
    stop the deployment. ``tag`` tells apart runs of the same AOI, executor and idle time."""
    port = free_port()
    label = f"{aoi}-{executor}-{idle_s}{tag}"
    home = work / f"airflow-{label}"
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
    env["AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME"] = str(idle_s)
    migrate(env)
    dep = Deployment(env, home)
    run_id = f"bench-{label}"
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
        state, wall, tis = api.trigger_and_wait(
            f"audit__{aoi}", run_id, {"step": step, "force": True, "repredict": True}, timeout_s
        )
    finally:
        dep.stop()
    with Session(ctx.engine) as s:
        run = repo.run_by_external_id(s, run_id)
        stages = sum(float(v["seconds"]) for v in (run.stage_seconds or {}).values())
    ran = [ti for ti in tis if ti.get("duration")]
    return TimedDagRun(state, wall, stages, sum(float(ti["duration"]) for ti in ran), len(ran))


if __name__ == "__main__":
    main()
