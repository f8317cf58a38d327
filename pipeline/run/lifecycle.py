"""The run lifecycle: start a run (or reuse an identical one), record a failure, close
runs abandoned by a dead process.

A run row is ``running`` from :func:`start_run` until the publish stage marks it
``succeeded`` or a failure marks it ``failed`` with its reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging

from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig, shards_in_bbox
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.db.errors import RunStateError
from pipeline.db.models import Run
from pipeline.errors import ConfigError, NotFoundError
from pipeline.locks import AuditBusyError
from pipeline.redact import redact
from pipeline.run.handoffs import AuditPlan, AuditRequest, FetchedSnapshot
from pipeline.run.snapshots import imagery_snapshot

log = logging.getLogger(__name__)

# AOI settings that do not change results; the model settings act through the model version.
_KEY_EXCLUDE = {
    "description",
    "schedule",
    "owner",
    "tags",
    "steps",
    "dates",
    "model",
    "validation",
}  # dates act through the snapshots they select


def resolve_model_version(ctx: Context, config: AoiConfig, model_version_id: int | None) -> int:
    """The requested model version, or the production model of the AOI's model name."""
    with Session(ctx.engine) as s:
        if model_version_id is not None:
            return repo.get_model_version(s, model_version_id).id
        mv = repo.production_model(s, config.model_name)
        if mv is None:
            raise NotFoundError(
                f"no production model named {config.model_name!r}: train one first "
                f"(geoaudit train {config.name}) or pass a model version"
            )
        return mv.id


def audit_inputs_key(
    config: AoiConfig,
    imagery: FetchedSnapshot,
    opendata: FetchedSnapshot,
    model_version_id: int,
    previous_run_id: int | None,
    bbox: tuple[float, ...] | None = None,
) -> str:
    """sha256 of everything an audit's results depend on: the snapshots' content, the
    model version, the AOI settings that change results, the bbox and the previous
    step's run (changes are computed against it)."""
    payload = {
        "bbox": list(bbox) if bbox is not None else None,
        "imagery": imagery.content_hash,
        "opendata": opendata.content_hash,
        "model_version_id": model_version_id,
        "previous_run_id": previous_run_id,
        "aoi": config.model_dump(mode="json", exclude=_KEY_EXCLUDE),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def start_run(
    ctx: Context,
    config: AoiConfig,
    request: AuditRequest,
    imagery: FetchedSnapshot,
    opendata: FetchedSnapshot,
) -> AuditPlan:
    """Create the run row and list its shards (the plan a scheduler fans out over).

    Unless ``force`` or ``repredict``, an earlier succeeded run of the step made from
    the same inputs (:func:`audit_inputs_key`) is reused: no new run is created and the
    plan has no shards. A scheduled run (``pinned`` false) whose snapshots and model
    are those of the AOI's last succeeded run is recorded as ``no_new_data`` and has
    no shards either. The fetch stages' seconds are the run's first stage timing.
    """
    check_snapshots_belong(ctx, config.name, request.step, imagery, opendata)
    mv_id = resolve_model_version(ctx, config, request.model_version_id)
    bbox = request.bbox
    if bbox is not None:
        shard_ids = shards_in_bbox(config, bbox)  # validates bbox
        bbox = tuple(float(v) for v in bbox)
    else:
        shard_ids = [shard.id for shard in config.shards()]
    with write_session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
        previous = repo.previous_run(s, aoi_id, request.step)
        inputs_key = audit_inputs_key(
            config, imagery, opendata, mv_id, previous.id if previous else None, bbox
        )
        source_steps = {
            "imagery": imagery.source_step or request.step,
            "opendata": opendata.source_step or request.step,
        }
        if not (request.force or request.repredict or request.pinned or bbox is not None):
            last = repo.latest_run(s, aoi_id, status="succeeded")
            if last is not None and _same_inputs(s, last, imagery, opendata, mv_id):
                run = repo.record_no_new_data(
                    s,
                    aoi_id,
                    request.step,
                    trigger=request.trigger,
                    external_id=request.external_id,
                    params={**request.params, "source_steps": source_steps, "same_as_run": last.id},
                    imagery_snapshot_id=imagery.snapshot_id,
                    opendata_snapshot_id=opendata.snapshot_id,
                    model_version_id=mv_id,
                )
                log.info(
                    "no new data: sources and model unchanged since the last succeeded run",
                    extra={
                        "aoi": config.name,
                        "step": request.step,
                        "run_id": run.id,
                        "same_as_run": last.id,
                    },
                )
                return AuditPlan(
                    config.name, request.step, run.id, (), reused=True, no_new_data=True
                )
        if not (request.force or request.repredict):
            same = _identical_run(s, aoi_id, request, imagery, opendata, mv_id, inputs_key)
            if same is not None:
                log.info(
                    "audit up to date: inputs unchanged since an earlier run",
                    extra={"aoi": config.name, "step": request.step, "run_id": same.id},
                )
                return AuditPlan(config.name, request.step, same.id, (), reused=True)
        run = repo.start_run(
            s,
            aoi_id,
            request.step,
            trigger=request.trigger,
            external_id=request.external_id,
            params={
                **request.params,
                "force": request.force,
                "repredict": request.repredict,
                "bbox": list(bbox) if bbox is not None else None,
                "inputs_key": inputs_key,
                "source_steps": source_steps,
            },
            shards_total=len(shard_ids),
            imagery_snapshot_id=imagery.snapshot_id,
            opendata_snapshot_id=opendata.snapshot_id,
            model_version_id=mv_id,
        )
        repo.add_stage_seconds(s, run.id, {"fetch": imagery.seconds + opendata.seconds})
        return AuditPlan(config.name, request.step, run.id, tuple(shard_ids))


def reusable_run_id(
    ctx: Context,
    config: AoiConfig,
    request: AuditRequest,
    imagery: FetchedSnapshot,
    opendata: FetchedSnapshot,
) -> int | None:
    """The earlier succeeded run that :func:`start_run` would reuse for ``request`` over
    the whole AOI, asked before anything starts; None when the request forces a new
    run, has a bbox, or no run was made from the same inputs."""
    if request.force or request.repredict or request.bbox is not None:
        return None
    mv_id = resolve_model_version(ctx, config, request.model_version_id)
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
        previous = repo.previous_run(s, aoi_id, request.step)
        inputs_key = audit_inputs_key(
            config, imagery, opendata, mv_id, previous.id if previous else None
        )
        same = _identical_run(s, aoi_id, request, imagery, opendata, mv_id, inputs_key)
        return None if same is None else same.id


def _identical_run(
    s: Session,
    aoi_id: int,
    request: AuditRequest,
    imagery: FetchedSnapshot,
    opendata: FetchedSnapshot,
    model_version_id: int,
    inputs_key: str,
) -> Run | None:
    """The succeeded run of the request's step made from the same snapshots, model
    version and inputs (:func:`audit_inputs_key`)."""
    return repo.reusable_run(
        s,
        aoi_id,
        request.step,
        imagery_snapshot_id=imagery.snapshot_id,
        opendata_snapshot_id=opendata.snapshot_id,
        model_version_id=model_version_id,
        inputs_key=inputs_key,
    )


def _same_inputs(
    s: Session,
    run: Run,
    imagery: FetchedSnapshot,
    opendata: FetchedSnapshot,
    model_version_id: int,
) -> bool:
    """Whether ``run`` (a succeeded run, over the whole AOI) was made from snapshots of
    the same content and the same model version."""
    if run.model_version_id != model_version_id or (run.params or {}).get("bbox"):
        return False
    if run.imagery_snapshot_id is None or run.opendata_snapshot_id is None:
        return False
    return (
        repo.get_snapshot(s, run.imagery_snapshot_id).content_hash == imagery.content_hash
        and repo.get_snapshot(s, run.opendata_snapshot_id).content_hash == opendata.content_hash
    )


def check_snapshots_belong(
    ctx: Context, aoi: str, step: str, imagery: FetchedSnapshot, opendata: FetchedSnapshot
) -> None:
    """Both snapshots are of ``aoi`` and ``step`` and of their kind, and the imagery
    covers a shard; ConfigError (the run must not start) otherwise."""
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, aoi).id
        for ref, kind in ((imagery, "imagery"), (opendata, "opendata")):
            snap = repo.get_snapshot(s, ref.snapshot_id)
            if snap.kind != kind:
                raise ConfigError(f"snapshot {snap.id} is {snap.kind}, not {kind}")
            if snap.aoi_id != aoi_id or snap.step != step:
                raise ConfigError(
                    f"snapshot {snap.id} is of AOI id {snap.aoi_id} step {snap.step!r}, "
                    f"not of {aoi!r} step {step!r}"
                )
        if not imagery_snapshot(s, imagery.snapshot_id).shards:
            raise ConfigError(
                f"imagery snapshot {imagery.snapshot_id} of {aoi!r} {step} covers no shard"
            )


def fail_run(ctx: Context, run_id: int, error: BaseException | str) -> None:
    """Record a failed run with its reason (results already stored stay as they were)."""
    with write_session(ctx.engine) as s:
        repo.finish_run(s, run_id, "failed", error=redact(str(error))[:4000])


def record_failure(ctx: Context, run_id: int, reason: str) -> None:
    """Mark a run failed with ``reason`` unless it already finished (idempotent)."""
    with Session(ctx.engine) as s:
        status = repo.get_run(s, int(run_id)).status
    if status in ("queued", "running"):
        fail_run(ctx, int(run_id), reason)


def record_failure_of(ctx: Context, external_id: str, reason: str) -> int | None:
    """:func:`record_failure` for the run a scheduler started as ``external_id`` (e.g. an
    Airflow run id); the run's id, or None when that scheduler run made no GeoAudit run."""
    with Session(ctx.engine) as s:
        run = repo.run_by_external_id(s, external_id)
        run_id = run.id if run is not None else None
    if run_id is not None:
        record_failure(ctx, run_id, reason)
    return run_id


def close_abandoned_runs(
    ctx: Context, aoi_name: str, step: str, *, own_external_id: str | None = None
) -> list[int]:
    """Before a new run of the AOI and step (call it holding the audit lock exclusively):
    mark failed the runs left unfinished by a process that died, whoever started them.

    A local run (no ``external_id``) whose lock is free has lost its process. A
    scheduler's run (an Airflow run other than ``own_external_id``) holds the lock only
    while a task of it runs: it is abandoned when no task of it was seen
    (``heartbeat_at``, else its start) for ``abandoned_run_s``; until then it is alive,
    and :class:`~pipeline.locks.AuditBusyError` names it. The ids closed."""
    now = dt.datetime.now(dt.UTC)
    with write_session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, aoi_name).id
        ids = []
        for run in repo.unfinished_runs(s, aoi_id, step, scheduled=False):
            repo.finish_run(
                s, run.id, "failed", error="interrupted: its process stopped before it finished"
            )
            ids.append(run.id)
        for run in repo.unfinished_runs(s, aoi_id, step, scheduled=True):
            if run.external_id == own_external_id:
                continue
            idle = (now - (run.heartbeat_at or run.started_at)).total_seconds()
            if idle < ctx.settings.abandoned_run_s:
                raise AuditBusyError(
                    f"AOI {aoi_name!r} step {step} is being audited by {run.trigger} run "
                    f"{run.external_id!r} (GeoAudit run {run.id}, a task of it seen "
                    f"{idle:.0f} s ago); let it finish, or fail it in {run.trigger}"
                )
            repo.finish_run(
                s,
                run.id,
                "failed",
                error=f"interrupted: no task of it was seen for {idle / 60:.0f} min "
                f"(GEOAUDIT_ABANDONED_RUN_S={ctx.settings.abandoned_run_s:g})",
            )
            ids.append(run.id)
    if ids:
        log.warning(
            "abandoned runs marked failed", extra={"aoi": aoi_name, "step": step, "runs": ids}
        )
    return ids


def check_run_alive(ctx: Context, run_id: int) -> None:
    """A scheduler's task of a run, before it writes: record that the run is alive, or
    raise :class:`~pipeline.db.errors.RunStateError` when the run is no longer running
    (failed, or closed as abandoned while its scheduler was away)."""
    with write_session(ctx.engine) as s:
        run = repo.touch_run(s, run_id)
        status, error = run.status, run.error
    if status not in ("queued", "running"):
        raise RunStateError(
            f"run {run_id} is {status}"
            + (f" ({error})" if error else "")
            + "; this task writes nothing more"
        )
