"""Airflow DAGs of GeoAudit: one audit DAG and one retraining DAG per registered AOI.

The AOIs are the YAML files of the GeoAudit AOI folder (``GEOAUDIT_AOI_DIR``, default
``$GEOAUDIT_HOME/aois``), the same ones the ``geoaudit`` CLI uses. Tasks only wire
:mod:`pipeline.orchestrate` steps; XCom carries ids and hashes, never arrays.
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
)
from pipeline.aoi import AoiConfig, scan_aoi_folder
from pipeline.settings import load_settings

START = pendulum.datetime(2025, 1, 1, tz="UTC")
GPU_QUEUE = os.environ.get("GEOAUDIT_GPU_QUEUE", "default")  # "gpu" on a GPU deployment
GPU_POOL = os.environ.get("GEOAUDIT_GPU_POOL", "default_pool")
RETRIES = int(os.environ.get("GEOAUDIT_TASK_RETRIES", "2"))
STEP_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


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
    from pipeline.settings import load_settings

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
    from pipeline.orchestrate import record_failure_of

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
    return when.date().isoformat() if isinstance(when, dt.datetime) else str(when)[:10]


def build_audit_dag(config: AoiConfig):
    """The audit DAG ``audit__<aoi>``: fetch, plan, validate, shards (mapped), changes, publish."""
    name = config.name

    @dag(
        dag_id=audit_dag_id(name),
        schedule=config.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["geoaudit", "audit", *config.tags],
        doc_md=(
            f"### Audit of AOI `{name}`\n\n{config.description}\n\n"
            "Fetches imagery and open data for the run's time step (its data interval, or "
            "the `step` param), plans the run, validates the inputs with the Great "
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
                description="Time step (ISO date); default: the run's data interval end.",
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
        @task(retries=RETRIES)
        def fetch_imagery(params: dict[str, Any] | None = None) -> dict[str, Any]:
            from pipeline.orchestrate import fetch_imagery_step

            step = _step_of(params or {}, get_current_context())
            return {"step": step, **fetch_imagery_step(_context(), name, step)}

        @task(retries=RETRIES)
        def fetch_opendata(imagery: dict[str, Any]) -> dict[str, Any]:
            from pipeline.orchestrate import fetch_opendata_step

            return fetch_opendata_step(_context(), name, imagery["step"])

        @task(retries=0)
        def plan(
            imagery: dict[str, Any],
            opendata: dict[str, Any],
            params: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
            from pipeline.orchestrate import plan_step

            params = params or {}
            dag_run = get_current_context()["dag_run"]
            return plan_step(
                _context(),
                name,
                imagery["step"],
                imagery,
                opendata,
                model_version_id=params.get("model_version"),
                force=bool(params.get("force")),
                repredict=bool(params.get("repredict")),
                bbox=params.get("bbox"),
                trigger="airflow",
                external_id=dag_run.run_id,
                params={k: v for k, v in params.items() if v is not None},
            )

        @task(retries=0)
        def validate(planned: dict[str, Any]) -> dict[str, Any]:
            """The Great Expectations gate: a critical failure fails the run, no retry."""
            from pipeline.orchestrate import validate_step

            with _no_retry_on_failed_validation():
                return validate_step(_context(), planned)

        @task
        def shard_ids(planned: dict[str, Any], validated: dict[str, Any]) -> list[str]:
            return list(planned["shard_ids"])

        @task(queue=GPU_QUEUE, pool=GPU_POOL, retries=RETRIES, map_index_template="{{ shard_id }}")
        def process_shard(planned: dict[str, Any], shard_id: str) -> dict[str, Any]:
            from pipeline.orchestrate import shard_step

            return shard_step(_context(), planned["run_id"], shard_id)

        @task(retries=RETRIES)
        def changes(planned: dict[str, Any]) -> dict[str, Any]:
            from pipeline.orchestrate import changes_step

            return changes_step(_context(), planned)

        @task(outlets=[results_asset(name)], retries=RETRIES)
        def publish(
            planned: dict[str, Any], changed: dict[str, Any], validated: dict[str, Any]
        ) -> dict[str, Any]:
            from pipeline.orchestrate import publish_step

            with _no_retry_on_failed_validation():  # the output suites
                return publish_step(_context(), planned, changed, validated)

        imagery = fetch_imagery()
        opendata = fetch_opendata(imagery)
        planned = plan(imagery, opendata)
        validated = validate(planned)
        done = process_shard.partial(planned=planned).expand(shard_id=shard_ids(planned, validated))
        # changes run after every mapped shard succeeded (a failed shard fails the run
        # instead); the shards' own results stay in the database, not in XCom
        changed = changes(planned)
        done >> changed
        publish(planned, changed, validated)

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
            from pipeline.orchestrate import retrain_step

            params = params or {}
            return retrain_step(
                _context(),
                name,
                list(params.get("steps") or []),
                max_steps=params.get("max_steps"),
                max_seconds=params.get("max_seconds"),
            )

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
