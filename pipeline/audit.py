"""One audit of AOI ``a`` at time step ``t``: fetch → plan → shards → publish.

The same functions run from the CLI (:func:`run_audit`), from Airflow (one task
per function, one mapped task per shard) and from tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session
from tqdm import tqdm

from pipeline.aoi import AoiConfig, check_step, shards_in_bbox
from pipeline.aois import get_aoi_config
from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import GeoAuditError, NotFoundError
from pipeline.fetch import SnapshotRef, fetch_imagery, fetch_opendata
from pipeline.locks import audit_lock
from pipeline.publish import publish_run, stored_run_summary
from pipeline.redact import redact
from pipeline.shard_stage import predict_ahead, process_shard
from pipeline.validate.helper import AuditGate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditPlan:
    """A started run and the shard ids to process.

    ``reused`` is True when an earlier succeeded run was made from exactly the same
    inputs: ``run_id`` is that run and there is nothing to process.
    """

    run_id: int
    shard_ids: list[str]
    reused: bool = False


@dataclass
class AuditResult:
    """Outcome of a whole audit run."""

    run_id: int
    aoi: str
    step: str
    seconds: float
    summary: dict[str, Any]
    shard_stats: list[dict[str, Any]] = field(default_factory=list)
    reused: bool = False

    @property
    def cache_hits(self) -> int:
        """Shards whose prediction came from the cache."""
        return sum(1 for s in self.shard_stats if s.get("cache_hit"))

    @property
    def predicted_shards(self) -> int:
        """Shards that ran inference in this run."""
        return sum(
            1 for s in self.shard_stats if s.get("status") == "done" and not s.get("cache_hit")
        )


def resolve_model_version(ctx: Context, config: AoiConfig, model_version_id: int | None) -> int:
    """The requested model version, or the production model of the AOI's model name."""
    with Session(ctx.engine) as s:
        if model_version_id is not None:
            return repo.get_model_version(s, model_version_id).id
        mv = repo.production_model(s, config.model.name)
        if mv is None:
            raise NotFoundError(
                f"no production model named {config.model.name!r}: train one first "
                f"(geoaudit train {config.name}) or pass a model version"
            )
        return mv.id


# AOI settings that do not change results; the model settings act through the model version.
_KEY_EXCLUDE = {"description", "schedule", "owner", "tags", "steps", "model", "validation"}


def audit_inputs_key(
    config: AoiConfig,
    imagery: SnapshotRef,
    opendata: SnapshotRef,
    model_version_id: int,
    previous_run_id: int | None,
    bbox: list[float] | None = None,
) -> str:
    """Hash of everything an audit's results depend on (see :func:`start_audit`)."""
    payload = {
        "bbox": bbox,
        "imagery": imagery.content_hash,
        "opendata": opendata.content_hash,
        "model_version_id": model_version_id,
        "previous_run_id": previous_run_id,
        "aoi": config.model_dump(mode="json", exclude=_KEY_EXCLUDE),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def start_audit(
    ctx: Context,
    config: AoiConfig,
    step: str,
    *,
    imagery: SnapshotRef,
    opendata: SnapshotRef,
    model_version_id: int | None = None,
    force: bool = False,
    repredict: bool = False,
    bbox: list[float] | None = None,
    trigger: str = "cli",
    external_id: str | None = None,
    params: dict[str, Any] | None = None,
) -> AuditPlan:
    """Create the run row and list its shards (the plan a scheduler fans out over).

    Unless ``force`` or ``repredict``, an earlier succeeded run of the step made from
    the same imagery, open data, model version, AOI settings and previous-step run is
    reused: no new run is created and the plan has no shards (its results would be
    identical). ``repredict`` also ignores the prediction cache. ``bbox`` (WGS84 west,
    south, east, north) audits only the shards it touches.
    """
    mv_id = resolve_model_version(ctx, config, model_version_id)
    if bbox is not None:
        shard_ids = shards_in_bbox(config, bbox)  # validates bbox
        bbox = [float(v) for v in bbox]
    else:
        shard_ids = [shard.id for shard in config.shards()]
    with Session(ctx.engine) as s, s.begin():
        aoi_id = repo.get_aoi(s, config.name).id
        previous = repo.previous_run(s, aoi_id, step)
        inputs_key = audit_inputs_key(
            config, imagery, opendata, mv_id, previous.id if previous else None, bbox
        )
        if not (force or repredict):
            same = repo.reusable_run(
                s,
                aoi_id,
                step,
                imagery_snapshot_id=imagery.id,
                opendata_snapshot_id=opendata.id,
                model_version_id=mv_id,
                inputs_key=inputs_key,
            )
            if same is not None:
                log.info(
                    "audit up to date: inputs unchanged since an earlier run",
                    extra={"aoi": config.name, "step": step, "run_id": same.id},
                )
                return AuditPlan(run_id=same.id, shard_ids=[], reused=True)
        run = repo.start_run(
            s,
            aoi_id,
            step,
            trigger=trigger,
            external_id=external_id,
            params={
                **(params or {}),
                "force": force,
                "repredict": repredict,
                "bbox": bbox,
                "inputs_key": inputs_key,
            },
            shards_total=len(shard_ids),
            imagery_snapshot_id=imagery.id,
            opendata_snapshot_id=opendata.id,
            model_version_id=mv_id,
        )
        return AuditPlan(run_id=run.id, shard_ids=shard_ids)


def fail_run(ctx: Context, run_id: int, error: BaseException | str) -> None:
    """Record a failed run with its reason (results already stored stay as they were)."""
    with Session(ctx.engine) as s, s.begin():
        repo.finish_run(s, run_id, "failed", error=redact(str(error))[:4000])


def close_abandoned_runs(ctx: Context, aoi_name: str, step: str) -> list[int]:
    """Mark failed the local runs of the AOI and step left unfinished by a process that
    died (killed, machine lost); call it holding the audit lock. Their ids."""
    with Session(ctx.engine) as s, s.begin():
        aoi_id = repo.get_aoi(s, aoi_name).id
        ids = []
        for run in repo.unfinished_local_runs(s, aoi_id, step):
            repo.finish_run(
                s, run.id, "failed", error="interrupted: its process stopped before it finished"
            )
            ids.append(run.id)
    if ids:
        log.warning(
            "abandoned runs marked failed", extra={"aoi": aoi_name, "step": step, "runs": ids}
        )
    return ids


def run_audit(
    ctx: Context,
    aoi_name: str,
    step: str,
    *,
    model_version_id: int | None = None,
    force: bool = False,
    repredict: bool = False,
    bbox: list[float] | None = None,
    trigger: str = "cli",
    wait_s: float = 0.0,
) -> AuditResult:
    """Run a complete audit in this process; a failure is recorded on the run and re-raised.

    With unchanged inputs the earlier run is returned (``reused``) unless ``force``
    (a new run, still using the prediction cache) or ``repredict`` (a new run that
    ignores the prediction cache). While another process audits the same AOI and step,
    wait up to ``wait_s`` seconds, then raise :class:`~pipeline.locks.AuditBusyError`.
    """
    check_step(step)
    with (
        audit_lock(ctx.engine, aoi_name, step, wait_s=wait_s, home=ctx.settings.home),
        AuditGate(ctx) as gate,  # Great Expectations loads while the sources are read
    ):
        return _audit(
            ctx,
            gate,
            aoi_name,
            step,
            model_version_id=model_version_id,
            force=force,
            repredict=repredict,
            bbox=bbox,
            trigger=trigger,
        )


def _audit(
    ctx: Context,
    gate: AuditGate,
    aoi_name: str,
    step: str,
    *,
    model_version_id: int | None,
    force: bool,
    repredict: bool,
    bbox: list[float] | None,
    trigger: str,
) -> AuditResult:
    started = time.perf_counter()
    config = get_aoi_config(ctx, aoi_name)
    close_abandoned_runs(ctx, aoi_name, step)
    t0 = time.perf_counter()
    imagery = fetch_imagery(ctx, config, step)
    opendata = fetch_opendata(ctx, config, step)
    fetch_s = time.perf_counter() - t0
    plan = start_audit(
        ctx,
        config,
        step,
        imagery=imagery,
        opendata=opendata,
        model_version_id=model_version_id,
        force=force,
        repredict=repredict,
        bbox=bbox,
        trigger=trigger,
    )
    if plan.reused:
        return AuditResult(
            run_id=plan.run_id,
            aoi=aoi_name,
            step=step,
            seconds=time.perf_counter() - started,
            summary=stored_run_summary(ctx, plan.run_id),
            reused=True,
        )
    stats: list[dict[str, Any]] = []
    try:
        t_gate = time.perf_counter()
        gate.submit_inputs(plan.run_id)
        # while the suites run, fill the prediction cache (nothing is scored or stored)
        predicted: dict[str, float | None] = {}
        for shard_id in plan.shard_ids:
            if gate.inputs_ready():
                break
            predicted[shard_id] = predict_ahead(ctx, plan.run_id, shard_id)
        ahead_s = sum(s for s in predicted.values() if s)
        validation = gate.inputs_report()
        gate_s = max(time.perf_counter() - t_gate - ahead_s, 0.0)  # the wait for the gate
        validation.raise_for_critical()
        for shard_id in tqdm(
            plan.shard_ids, desc=f"audit {aoi_name} {step}", unit="shard", disable=not ctx.progress
        ):
            stats.append(
                process_shard(ctx, plan.run_id, shard_id, predicted_s=predicted.get(shard_id))
            )
        summary = publish_run(
            ctx,
            plan.run_id,
            extra_seconds={"fetch": fetch_s, "validate": gate_s},
            outputs_validator=gate.validate_outputs,
        )
    except (GeoAuditError, OSError, ValueError, RuntimeError) as exc:
        fail_run(ctx, plan.run_id, exc)
        raise
    except BaseException as exc:  # KeyboardInterrupt and friends: record, then propagate
        fail_run(ctx, plan.run_id, f"interrupted: {exc!r}")
        raise
    return AuditResult(
        run_id=plan.run_id,
        aoi=aoi_name,
        step=step,
        seconds=time.perf_counter() - started,
        summary=summary,
        shard_stats=stats,
    )
