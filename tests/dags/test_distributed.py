"""A real CeleryExecutor deployment on loopback: PostgreSQL metadata, Redis broker,
scheduler, dag-processor, api-server and two Celery workers as separate processes.
Both steps of the sample AOI are audited at once through the REST API; their mapped
shard tasks must run on both workers and their results land consistent in the GeoAudit
database (``bench/load.py`` does the same for many AOIs)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
import redis
from consistency import run_problems
from deployment import Api, Deployment, airflow_env, create_fab_accounts, free_port, migrate
from sqlalchemy.orm import Session

from pipeline.aoi.registry import get_aoi_config, register_aoi
from pipeline.context import open_context
from pipeline.db import repo
from pipeline.sample.demo import create_sample_aoi
from pipeline.settings import Settings
from pipeline.training.challenger import train_aoi_model

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.distributed]

REDIS_DB = 11  # a database of the local Redis that nothing else uses
PASSWORD = "dist-test-pw"
DASHBOARD_PASSWORD = "dist-dashboard-pw"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, _pg_server) -> Iterator[tuple[Deployment, dict]]:
    home = tmp_path_factory.mktemp("dist-geoaudit")
    geo_url = _pg_server.create_database().render_as_string(hide_password=False)
    meta_url = _pg_server.create_database().render_as_string(hide_password=False)
    ctx = open_context(Settings(home=home, database_url=geo_url), progress=False)
    info, config = create_sample_aoi(ctx, size_m=300.0)
    # finer shards (4 tiles each) so the run has several mapped tasks; no schedule, so
    # the only run is the one the test triggers
    config = register_aoi(ctx, config.model_copy(update={"shard_zoom": 17, "schedule": None}))
    train_aoi_model(ctx, config.name, [info.steps[0]], max_steps=4, promote="always")
    n_shards = len(config.shards())
    ctx.engine.dispose()

    redis.Redis(db=REDIS_DB).flushdb()
    port = free_port()
    env = airflow_env(
        airflow_home=tmp_path_factory.mktemp("dist-airflow"),
        meta_url=meta_url,
        port=port,
        executor="CeleryExecutor",
        password=PASSWORD,
        geoaudit_home=home,
        geoaudit_url=geo_url,
        broker_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
        auth="fab",  # roles, as docker-compose.yml runs it
    )
    migrate(env)
    create_fab_accounts(env, PASSWORD, DASHBOARD_PASSWORD)
    dep = Deployment(env, tmp_path_factory.mktemp("dist-logs"))
    print(f"\ndistributed deployment logs: {dep.logs}")
    dep.start("api-server", "api-server")
    dep.start("scheduler", "scheduler")
    dep.start("dag-processor", "dag-processor")
    for name in ("worker-1", "worker-2"):
        dep.start(
            name,
            *("celery", "worker", "--queues", "default", "--concurrency", "1"),
            *("--celery-hostname", f"{name}@%h"),
            GEOAUDIT_TEST_WORKER=name,
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
        )
    facts = {
        "base": f"http://127.0.0.1:{port}",
        "aoi": config.name,
        "step": info.steps[0],
        "steps": info.steps[:2],
        "n_shards": n_shards,
        "geo_url": geo_url,
        "home": home,
    }
    try:
        yield dep, facts
    finally:
        dep.stop()  # idempotent: the last test has normally stopped everything already


def test_celery_deployment_runs_audits_at_once_on_both_workers(deployment) -> None:
    """Both steps of the AOI triggered together: two runs share the workers, the
    database and the AOI's lock table; each ends consistent (every shard once, one score
    per tile, no finding off the scored tiles)."""
    dep, facts = deployment
    api = Api(facts["base"], PASSWORD, dep)
    dag_id = f"audit__{facts['aoi']}"
    t0 = time.perf_counter()
    for i, step in enumerate(facts["steps"]):
        api.trigger(dag_id, f"dist-{i}", {"step": step})
    results = [api.wait(dag_id, f"dist-{i}") for i in range(len(facts["steps"]))]
    wall = time.perf_counter() - t0

    ctx = open_context(Settings(home=facts["home"], database_url=facts["geo_url"]))
    config = get_aoi_config(ctx, facts["aoi"])
    hosts = set()
    for i, (state, tis) in enumerate(results):
        assert state == "success", tis
        shards = [ti for ti in tis if ti["task_id"] == "shard"]
        assert len(shards) == facts["n_shards"] >= 2
        assert all(ti["state"] == "success" for ti in shards)
        hosts |= {ti["hostname"] for ti in shards}
        with Session(ctx.engine) as s:
            run = repo.run_by_external_id(s, f"dist-{i}")
            assert run is not None and run.step == facts["steps"][i]
            assert run_problems(ctx.engine, run.id, config) == []
    ctx.engine.dispose()
    assert hosts == {"worker-1", "worker-2"}
    print(f"CeleryExecutor: {len(results)} runs at once in {wall:.1f} s")


def test_the_dashboards_airflow_client_against_the_real_api(deployment) -> None:
    """What the Runs and Review pages do, as the dashboard's account (the trigger role
    the DAGs' ``access_control`` grants): trigger an audit, follow it, emit a reviews
    event; and what that account may not do: start or unpause a retraining, delete runs,
    see other DAGs."""
    from pipeline.airflow_api import (
        AirflowClient,
        AirflowError,
        audit_conf,
        audit_dag_id,
        retrain_dag_id,
        reviews_asset_uri,
    )

    dep, facts = deployment
    aoi = facts["aoi"]
    dag_id = audit_dag_id(aoi)
    Api(facts["base"], PASSWORD, dep).wait_parsed(dag_id)  # the api-server is up, the DAG in
    with (
        AirflowClient(facts["base"], "admin", PASSWORD, timeout=30) as admin,
        AirflowClient(facts["base"], "dashboard", DASHBOARD_PASSWORD, timeout=30) as client,
    ):
        # an operator paused the DAG: the client refuses, and never unpauses it
        admin._request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": True})
        with pytest.raises(AirflowError, match=rf"{dag_id} is paused in Airflow.*unpause"):
            client.trigger(dag_id, audit_conf(facts["step"]), run_id="dash-0")
        assert client.dag(dag_id)["is_paused"] is True
        admin._request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        run = client.trigger(
            dag_id, audit_conf(facts["step"]), run_id="dash-1", note="triggered by ada"
        )
        assert run.run_id == "dash-1" and run.conf["step"] == facts["step"]
        raw = client._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/dash-1").json()
        assert raw["note"] == "triggered by ada"
        deadline = time.monotonic() + 600
        while not run.finished and time.monotonic() < deadline:
            time.sleep(1)
            run = client.dag_run(audit_dag_id(aoi), "dash-1")
        assert run.state == "success"

        event_id = client.emit_asset_event(reviews_asset_uri(aoi), {"reviewer": "ada"})
        (event,) = [e for e in client.asset_events(reviews_asset_uri(aoi)) if e["id"] == event_id]
        assert event["uri"] == reviews_asset_uri(aoi) and event["extra"]["reviewer"] == "ada"

        # the role starts audits only: a retraining comes from reviews, runs stay
        retrain = retrain_dag_id(aoi)
        assert client.dag(retrain)["dag_id"] == retrain  # it may read it
        with pytest.raises(AirflowError, match="does not allow user 'dashboard' to PATCH"):
            client._request("PATCH", f"/api/v2/dags/{retrain}", json={"is_paused": False})
        with pytest.raises(AirflowError, match="does not allow user 'dashboard' to POST"):
            client._request("POST", f"/api/v2/dags/{retrain}/dagRuns", json={"logical_date": None})
        with pytest.raises(AirflowError, match="does not allow user 'dashboard' to DELETE"):
            client._request("DELETE", f"/api/v2/dags/{dag_id}/dagRuns/dash-1")
        assert admin.dag_run(dag_id, "dash-1").state == "success"

        with pytest.raises(AirflowError, match="has no DAG 'audit__nowhere'"):
            admin.trigger(audit_dag_id("nowhere"), {})
        # a DAG the role was not granted is not even readable for it
        with pytest.raises(AirflowError, match="does not allow user 'dashboard' to GET"):
            client.trigger(audit_dag_id("nowhere"), {})
    with (
        AirflowClient(facts["base"], "dashboard", "wrong-password") as client,
        pytest.raises(AirflowError, match="did not log in user 'dashboard'"),
    ):
        client.dag_run(audit_dag_id(aoi), "dash-1")


def test_the_deployment_shuts_down_cleanly(deployment) -> None:
    dep, _ = deployment
    codes = dep.stop()
    assert all(proc.poll() is not None for proc in dep.procs.values())
    print(f"exit codes after SIGTERM: {codes}")
    # a clean stop: exit 0 or "terminated by SIGTERM", never the SIGKILL of a hung process
    clean = (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    assert all(code in clean for code in codes.values()), codes
