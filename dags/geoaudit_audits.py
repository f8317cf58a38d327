"""Airflow DAGs of GeoAudit: one audit DAG and one retraining DAG per registered AOI.

The AOIs are the YAML files of the GeoAudit AOI folder (``GEOAUDIT_AOI_DIR``, default
``$GEOAUDIT_HOME/aois``), the same ones the ``geoaudit`` CLI uses. The audit DAG is the
stage sequence of :mod:`pipeline.run.stages` (the one ``geoaudit audit`` runs in one
process): one task per stage, one mapped task per shard, wired as declared there.
XCom carries the typed hand-offs in their JSON form: ids and hashes, never arrays.
Malformed AOI files are reported by ``geoaudit_aoi_errors.py`` as import errors.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from typing import Any

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, task

from pipeline.airflow_api import (
    audit_dag_id,
    results_asset_uri,
    retrain_dag_id,
    reviews_asset_uri,
    trigger_role_access,
)
from pipeline.aoi.config import AoiConfig, scan_aoi_folder
from pipeline.aoi.steps import STEP_PATTERN, step_of
from pipeline.run.stages import AUDIT_STAGES, Stage
from pipeline.settings import load_settings

START = pendulum.datetime(2025, 1, 1, tz="UTC")
GPU_QUEUE = os.environ.get("GEOAUDIT_GPU_QUEUE", "default")  # "gpu" on a GPU deployment
GPU_POOL = os.environ.get("GEOAUDIT_GPU_POOL", "default_pool")
RETRIES = int(os.environ.get("GEOAUDIT_TASK_RETRIES", "2"))
# the dashboard's Airflow role under the FAB auth manager (docker-compose.yml creates it)
TRIGGER_ROLE = os.environ.get("GEOAUDIT_AIRFLOW_TRIGGER_ROLE") or None


def results_asset(aoi: str) -> Asset:
    """Updated when an audit of ``aoi`` publishes results."""
    return Asset(results_asset_uri(aoi))


def reviews_asset(aoi: str) -> Asset:
    """Updated when reviewers give verdicts on ``aoi`` (the dashboard's review step)."""
    return Asset(reviews_asset_uri(aoi))


def _context():
    """GeoAudit's database and artifact store, with its secrets masked in task logs."""
    from airflow.sdk.log import mask_secret

    from pipeline.context import open_context

    settings = load_settings()
    for secret in settings.secret_values():
        mask_secret(secret)
    return open_context(settings)


@contextlib.contextmanager
def _no_retry_on_failed_validation() -> Iterator[None]:
    """A critical validation failure fails the task at once: retrying cannot help."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.errors import ValidationFailedError

    try:
        yield
    except ValidationFailedError as exc:
        raise AirflowFailException(str(exc)) from exc


def _record_failure(context: dict[str, Any]) -> None:
    """DAG failure callback: mark the GeoAudit run of this DAG run failed, with the reason."""
    from pipeline.run.lifecycle import record_failure_of

    dag_run = context["dag_run"]
    reason = context.get("reason") or "Airflow task failed"
    record_failure_of(
        _context(), dag_run.run_id, f"airflow {dag_run.dag_id}/{dag_run.run_id}: {reason}"
    )


def _step_of(params: dict[str, Any], context: dict[str, Any]) -> str:
    """The time step: the ``step`` param, else the end of the run's data interval."""
    if params.get("step"):
        return str(params["step"])
    when = context.get("data_interval_end") or context.get("logical_date")
    if when is None:
        when = context["dag_run"].run_after
    return step_of(when) if isinstance(when, dt.date) else str(when)[:10]


def _request(aoi: str):
    """The audit request of the running DAG run: its params and time step."""
    from pipeline.run.handoffs import AuditRequest

    context = get_current_context()
    params = dict(context.get("params") or {})
    bbox = params.get("bbox")
    return AuditRequest(
        aoi=aoi,
        step=_step_of(params, context),
        pinned=bool(params.get("step")),
        model_version_id=params.get("model_version"),
        force=bool(params.get("force")),
        repredict=bool(params.get("repredict")),
        bbox=tuple(float(v) for v in bbox) if bbox else None,
        trigger="airflow",
        external_id=context["dag_run"].run_id,
        params={k: v for k, v in params.items() if v is not None},
    )


def _stage_task(aoi: str, stage: Stage):
    """The task that runs ``stage`` of the audit of ``aoi`` (a thin wrapper)."""
    options: dict[str, Any] = {
        "task_id": stage.name,
        "retries": RETRIES if stage.retry else 0,
        # a per-shard stage with no shard (a reused run) is skipped: go on after it
        "trigger_rule": "none_failed",
    }
    if stage.per_shard:
        options.update(queue=GPU_QUEUE, pool=GPU_POOL, map_index_template="{{ shard_id }}")
    if stage.name == "publish":
        options["outlets"] = [results_asset(aoi)]

    @task(**options)
    def run(handoffs: dict[str, Any], shard_id: str | None = None) -> dict[str, Any]:
        from pipeline.run.stages import run_stage

        with _no_retry_on_failed_validation():
            done = run_stage(_context(), stage.name, _request(aoi), handoffs, shard_id=shard_id)
        return done.to_xcom()

    return run


@task(retries=0)
def shard_ids(plan: dict[str, Any]) -> list[str]:
    """The plan's shard ids: what a per-shard stage is mapped over."""
    return list(plan["shard_ids"])


def build_audit_dag(config: AoiConfig):
    """The audit DAG ``audit__<aoi>``: the stages of :data:`AUDIT_STAGES`."""
    name = config.name
    sequence = " → ".join(s.name + ("[shard]" if s.per_shard else "") for s in AUDIT_STAGES)

    @dag(
        dag_id=audit_dag_id(name),
        schedule=config.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        access_control=trigger_role_access(TRIGGER_ROLE, audit=True),
        tags=["geoaudit", "audit", *config.tags],
        doc_md=(
            f"### Audit of AOI `{name}`\n\n{config.description}\n\n"
            f"Stages: {sequence}.\n\n"
            "Audits at the run's date (its data interval end, or the `step` param): each "
            "source is read at its own date by the AOI's date rules (by default its newest "
            "snapshot on or before that date). When neither source nor the model changed "
            "since the last succeeded audit, the run is recorded as *no new data* and ends "
            "there. Otherwise it plans the run, validates the inputs with the Great "
            "Expectations suites (a critical failure fails the run before anything is "
            "scored; warnings are stored and shown), then rasterizes, predicts and scores every "
            "shard as a mapped task, computes the changes against the previous step, and "
            "publishes findings, changes and the AOI score to the GeoAudit database. "
            "Params allow an ad-hoc step, model version, forced re-run and re-prediction."
        ),
        default_args={
            "owner": config.owner,
            "retries": RETRIES,
            "retry_delay": dt.timedelta(seconds=30),
            "retry_exponential_backoff": True,
            "max_retry_delay": dt.timedelta(minutes=10),
        },
        on_failure_callback=_record_failure,
        params={
            "step": Param(
                None,
                type=["null", "string"],
                pattern=STEP_PATTERN,
                description="Audit date (ISO date) that pins the run; default: the run's data "
                "interval end, each source at its newest snapshot.",
            ),
            "model_version": Param(
                None, type=["null", "integer"], minimum=1, description="Model version id."
            ),
            "bbox": Param(
                None,
                type=["null", "array"],
                items={"type": "number"},
                minItems=4,
                maxItems=4,
                description="Audit only the shards touching [west, south, east, north].",
            ),
            "force": Param(False, type="boolean", description="Audit even if nothing changed."),
            "repredict": Param(False, type="boolean", description="Ignore the prediction cache."),
        },
    )
    def audit():
        # the stage sequence, wired as declared: hand-offs as inputs, `after` as ordering
        tasks: dict[str, Any] = {}
        for stage in AUDIT_STAGES:
            run = _stage_task(name, stage)
            handoffs = {dep: tasks[dep] for dep in stage.inputs}
            if stage.per_shard:
                tasks[stage.name] = run.partial(handoffs=handoffs).expand(
                    shard_id=shard_ids(tasks["plan"])
                )
            else:
                tasks[stage.name] = run(handoffs=handoffs)
            for dep in stage.after:
                tasks[dep] >> tasks[stage.name]

    return audit()


def build_retrain_dag(config: AoiConfig):
    """``retrain__<aoi>``: monthly and on new reviews; promotes only a better challenger."""
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable

    name = config.name

    @dag(
        dag_id=retrain_dag_id(name),
        schedule=AssetOrTimeSchedule(
            timetable=CronTriggerTimetable("0 3 1 * *", timezone="UTC"),
            assets=[reviews_asset(name)],
        ),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        access_control=trigger_role_access(TRIGGER_ROLE, audit=False),
        tags=["geoaudit", "retrain", *config.tags],
        doc_md=(
            f"### Retraining for AOI `{name}`\n\nMonthly, and when reviewers give verdicts: "
            "trains a challenger on the AOI's open data (tiles reviewed `label_wrong` "
            "excluded), evaluates champion and challenger on the same held-out tiles and "
            "promotes the challenger only if it is better. Everything lands in the model "
            "registry."
        ),
        default_args={"owner": config.owner, "retries": 1},
        params={
            "steps": Param(
                [],
                type="array",
                items={"type": "string", "pattern": STEP_PATTERN},
                description="Time steps to train on; default: the AOI's latest step.",
            ),
            "max_steps": Param(None, type=["null", "integer"], minimum=1),
            "max_seconds": Param(None, type=["null", "number"], exclusiveMinimum=0),
        },
    )
    def retrain():
        @task(queue=GPU_QUEUE, pool=GPU_POOL)
        def train_challenger(params: dict[str, Any] | None = None) -> dict[str, Any]:
            from pipeline.training.challenger import retrain

            params = params or {}
            return retrain(
                _context(),
                name,
                list(params.get("steps") or []),
                max_steps=params.get("max_steps"),
                max_seconds=params.get("max_seconds"),
            ).to_xcom()

        train_challenger()

    return retrain()


def build_all() -> dict[str, Any]:
    """A DAG pair per valid AOI file (invalid files: see ``geoaudit_aoi_errors.py``)."""
    settings = load_settings()
    configs, _ = scan_aoi_folder(settings.resolved_aoi_dir, max_km2=settings.max_aoi_km2)
    dags = {}
    for config in configs:
        dags[audit_dag_id(config.name)] = build_audit_dag(config)
        dags[retrain_dag_id(config.name)] = build_retrain_dag(config)
    return dags


globals().update(build_all())
