"""The audit and retraining DAGs run end to end with ``dag.test()``: Airflow metadata in
a temporary SQLite AIRFLOW_HOME, GeoAudit results in PostgreSQL/PostGIS."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.context import Context, open_context
from pipeline.db import repo
from pipeline.db.models import Run
from pipeline.run.layout import labels_key
from pipeline.run.local import run_audit
from pipeline.sample import LATER_IMAGERY_STEP, SampleInfo, add_later_imagery
from pipeline.sample.demo import create_sample_aoi
from pipeline.settings import Settings
from pipeline.training.challenger import train_aoi_model

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
RUN_DAG = Path(__file__).with_name("run_dag.py")


@dataclass
class AirflowSetup:
    ctx: Context
    env: dict[str, str]
    aoi: str
    steps: tuple[str, ...]
    champion_id: int
    sample_info: SampleInfo

    @property
    def sample_root(self) -> Path:
        return self.sample_info.root

    def run(self, dag_id: str, conf: dict, logical_date: str | None = None) -> dict:
        """``dag.test()`` in a fresh interpreter; its JSON outcome."""
        args = [sys.executable, str(RUN_DAG), dag_id, json.dumps(conf)]
        if logical_date:
            args.append(logical_date)
        out = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-4000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    def run_by_airflow_id(self, airflow_run_id: str) -> Run:
        with Session(self.ctx.engine) as s:
            run = repo.run_by_external_id(s, airflow_run_id)
            assert run is not None, f"no GeoAudit run for Airflow run {airflow_run_id}"
            s.expunge(run)
            return run


@pytest.fixture(scope="session")
def airflow_setup(tmp_path_factory, _pg_server) -> Iterator[AirflowSetup]:
    """A small sample AOI with a briefly trained production model, and an Airflow home."""
    home = tmp_path_factory.mktemp("af-geoaudit")
    url = _pg_server.create_database().render_as_string(hide_password=False)
    ctx = open_context(Settings(home=home, database_url=url), progress=False)
    info, config = create_sample_aoi(ctx, size_m=300.0)
    champion = train_aoi_model(
        ctx, config.name, [info.steps[0]], max_steps=4, max_seconds=300, promote="always"
    )
    airflow_home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "GEOAUDIT_HOME": str(home),
        "GEOAUDIT_DATABASE_URL": url,
        "GEOAUDIT_TASK_RETRIES": "0",
    }
    env.pop("GEOAUDIT_AOI_DIR", None)
    migrate = subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    yield AirflowSetup(ctx, env, config.name, info.steps, champion.model_version_id, info)
    ctx.engine.dispose()


def _states(outcome: dict, task_id: str) -> list[str]:
    return [t["state"] for t in outcome["tasks"] if t["task_id"] == task_id]


def test_audit_dag_matches_a_cli_audit_and_reruns_hit_the_cache(airflow_setup) -> None:
    af = airflow_setup
    step = af.steps[0]
    first = af.run(f"audit__{af.aoi}", {"step": step})
    assert first["state"] == "success", first
    shards = _states(first, "shard")
    assert shards and set(shards) == {"success"}  # one mapped task per shard
    run = af.run_by_airflow_id(first["run_id"])
    assert run.status == "succeeded" and run.step == step and run.trigger == "airflow"
    assert run.shards_total == len(shards)

    cli = run_audit(af.ctx, af.aoi, step, force=True)
    with Session(af.ctx.engine) as s:
        a = repo.tile_scores_frame(s, run.id).sort_values(["x", "y"])
        b = repo.tile_scores_frame(s, cli.run_id).sort_values(["x", "y"])
        fa, fb = repo.findings_frame(s, run.id), repo.findings_frame(s, cli.run_id)
    assert a["iou"].to_numpy() == pytest.approx(b["iou"].to_numpy(), abs=1e-9, nan_ok=True)
    assert sorted(fa["kind"]) == sorted(fb["kind"])
    assert cli.predicted_shards == 0  # the Airflow run's predictions were reused

    # the same step again, forced: a new run, every shard from the prediction cache
    again = af.run(f"audit__{af.aoi}", {"step": step, "force": True})
    assert again["state"] == "success"
    rerun = af.run_by_airflow_id(again["run_id"])
    with Session(af.ctx.engine) as s:
        stats = [sh.stats for sh in repo.get_run(s, rerun.id).shards]
    assert stats and all(st.get("cache_hit") for st in stats if st.get("status") == "done")

    # and unforced with nothing changed: no new GeoAudit run, nothing mapped
    same = af.run(f"audit__{af.aoi}", {"step": step})
    assert same["state"] == "success"
    with Session(af.ctx.engine) as s:
        assert repo.run_by_external_id(s, same["run_id"]) is None
    assert _states(same, "shard") in ([], ["skipped"])


def test_params_are_honoured_and_validated(airflow_setup) -> None:
    af = airflow_setup
    step = af.steps[1]
    out = af.run(
        f"audit__{af.aoi}",
        {"step": step, "model_version": af.champion_id, "repredict": True},
    )
    assert out["state"] == "success", out
    run = af.run_by_airflow_id(out["run_id"])
    assert run.step == step and run.model_version_id == af.champion_id
    assert run.params["repredict"] is True
    with Session(af.ctx.engine) as s:
        stats = [sh.stats for sh in repo.get_run(s, run.id).shards]
    assert not any(st.get("cache_hit") for st in stats)

    bad = af.run(f"audit__{af.aoi}", {"step": "2025/06/01"})
    assert "step" in bad["param_error"]
    bad = af.run(f"audit__{af.aoi}", {"model_version": 0})
    assert "model_version" in bad["param_error"]


def test_retraining_promotes_only_a_better_challenger(airflow_setup) -> None:
    af = airflow_setup
    step = af.steps[0]
    better = af.run(f"retrain__{af.aoi}", {"steps": [step], "max_steps": 80})
    assert better["state"] == "success", better
    with Session(af.ctx.engine) as s:
        production = repo.production_model(s, af.aoi)
        versions = repo.list_model_versions(s, af.aoi)
    assert production.id != af.champion_id and production.parent_id == af.champion_id
    assert production.metrics["val_iou"] > production.metrics["champion_val_iou"]

    worse = af.run(f"retrain__{af.aoi}", {"steps": [step], "max_steps": 1})
    assert worse["state"] == "success"
    with Session(af.ctx.engine) as s:
        still = repo.production_model(s, af.aoi)
        latest = max(repo.list_model_versions(s, af.aoi), key=lambda m: m.id)
        assert len(repo.list_model_versions(s, af.aoi)) == len(versions) + 1
    assert still.id == production.id  # the champion stays
    assert latest.id != still.id and latest.stage == "candidate"
    assert latest.metrics["val_iou"] <= latest.metrics["champion_val_iou"]


def test_a_failing_shard_fails_the_dag_run_and_the_geoaudit_run(airflow_setup) -> None:
    af = airflow_setup
    # the stored label mosaic of a shard of step 2 corrupted (validation does not read
    # labels): that shard's task cannot read it
    step = af.steps[1]
    out = af.run(f"audit__{af.aoi}", {"step": step, "force": True})
    assert out["state"] == "success"
    run = af.run_by_airflow_id(out["run_id"])
    with Session(af.ctx.engine) as s:
        snapshot = repo.get_snapshot(s, run.opendata_snapshot_id)
        shard_id = repo.get_run(s, run.id).shards[0].shard_id
        key = labels_key(af.aoi, snapshot.content_hash, shard_id)
    path = Path(af.ctx.store.path(key))
    saved = path.read_bytes()
    try:
        path.write_bytes(b"not a tiff")
        failed = af.run(f"audit__{af.aoi}", {"step": step, "repredict": True})
    finally:
        path.write_bytes(saved)
    assert failed["state"] == "failed"
    assert "failed" in _states(failed, "shard")
    assert _states(failed, "publish") == ["upstream_failed"]
    broken = af.run_by_airflow_id(failed["run_id"])
    assert broken.status == "failed" and broken.error
    with Session(af.ctx.engine) as s:
        runs = s.scalars(select(Run).where(Run.step == step, Run.status == "succeeded")).all()
    assert runs  # earlier results of the step are untouched


def test_a_critical_validation_failure_stops_the_dag_before_any_shard(airflow_setup) -> None:
    af = airflow_setup
    # a new step whose open data has a footprint with NaN coordinates
    step = "2031-01-01"
    shutil.copyfile(
        af.sample_root / "imagery" / f"{af.steps[1]}.tif",
        af.sample_root / "imagery" / f"{step}.tif",
    )
    data = json.loads((af.sample_root / "opendata" / f"{af.steps[1]}.geojson").read_text())
    broken = json.loads(json.dumps(data["features"][0]))
    broken["properties"]["id"] = "nan-dag"
    broken["geometry"]["coordinates"][0][1][0] = float("nan")
    data["features"].append(broken)
    (af.sample_root / "opendata" / f"{step}.geojson").write_text(json.dumps(data))

    failed = af.run(f"audit__{af.aoi}", {"step": step})
    assert failed["state"] == "failed"
    assert _states(failed, "validate") == ["failed"]
    # nothing downstream of the gate ran; the shard ids are read from the plan alone
    assert set(_states(failed, "shard")) == {"upstream_failed"}
    assert _states(failed, "changes") == _states(failed, "publish") == ["upstream_failed"]
    run = af.run_by_airflow_id(failed["run_id"])
    assert run.status == "failed"
    assert "validation failed (critical)" in run.error and "nan-dag" in run.error
    with Session(af.ctx.engine) as s:
        assert repo.tile_scores_frame(s, run.id).empty  # nothing was scored


def test_scheduled_runs_with_no_params_audit_new_imagery_then_record_no_new_data(
    airflow_setup,
) -> None:
    """As the scheduler runs it: no conf, the logical date decides. A later flight is
    added (as the demo does); the first run audits it with the newest open data, the
    next records "no new data" without a retry or a failure."""
    af = airflow_setup
    add_later_imagery(af.sample_info, size_m=300.0)

    first = af.run(f"audit__{af.aoi}", {}, logical_date="2026-11-29T00:00:00+00:00")
    assert first["state"] == "success", first
    run = af.run_by_airflow_id(first["run_id"])
    assert run.status == "succeeded" and run.step > LATER_IMAGERY_STEP
    assert run.params["source_steps"] == {"imagery": LATER_IMAGERY_STEP, "opendata": af.steps[1]}
    assert set(_states(first, "shard")) == {"success"}

    second = af.run(f"audit__{af.aoi}", {}, logical_date="2026-12-06T00:00:00+00:00")
    assert second["state"] == "success", second
    quiet = af.run_by_airflow_id(second["run_id"])
    assert quiet.status == "no_new_data" and quiet.params["same_as_run"] == run.id
    assert quiet.step > run.step and quiet.trigger == "airflow"
    assert _states(second, "shard") in ([], ["skipped"])
    assert all(t["state"] in ("success", "skipped") for t in second["tasks"])
    with Session(af.ctx.engine) as s:
        assert repo.latest_run(s, quiet.aoi_id).id == run.id  # its results stay current
