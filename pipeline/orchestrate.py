"""The audit as separate steps that exchange only small metadata (ids, hashes).

A scheduler runs each function as its own task, possibly on another machine:
everything heavy goes through the database and the artifact store, and what a
function returns is a small JSON-able ``dict`` (Airflow keeps it in XCom). The
in-process equivalent is :func:`pipeline.audit.run_audit`.

    imagery = fetch_imagery_step(ctx, aoi, step)
    opendata = fetch_opendata_step(ctx, aoi, step)
    plan = plan_step(ctx, aoi, step, imagery, opendata, ...)
    validated = validate_step(ctx, plan)           # the gate: stops on critical failures
    for shard_id in plan["shard_ids"]:            # one mapped task each
        shard_step(ctx, plan["run_id"], shard_id)
    changes = changes_step(ctx, plan)
    publish_step(ctx, plan, changes, validated)
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.orm import Session

from pipeline.aoi import check_step
from pipeline.aois import get_aoi_config
from pipeline.audit import fail_run, start_audit
from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import ConfigError
from pipeline.fetch import SnapshotRef, fetch_imagery, fetch_opendata
from pipeline.locks import audit_lock
from pipeline.publish import publish_run, store_run_changes, stored_run_summary
from pipeline.shard_stage import process_shard


def _snapshot_meta(ref: SnapshotRef, seconds: float) -> dict[str, Any]:
    return {
        "snapshot_id": ref.id,
        "content_hash": ref.content_hash,
        "reused": ref.reused,
        "seconds": round(seconds, 3),
    }


def fetch_imagery_step(ctx: Context, aoi: str, step: str) -> dict[str, Any]:
    """Fetch the imagery snapshot of ``aoi`` at ``step``; its id, hash and timing."""
    check_step(step)
    t0 = time.perf_counter()
    ref = fetch_imagery(ctx, get_aoi_config(ctx, aoi), step)
    return _snapshot_meta(ref, time.perf_counter() - t0)


def fetch_opendata_step(ctx: Context, aoi: str, step: str) -> dict[str, Any]:
    """Fetch the open-data snapshot of ``aoi`` at ``step``; its id, hash and timing."""
    check_step(step)
    t0 = time.perf_counter()
    ref = fetch_opendata(ctx, get_aoi_config(ctx, aoi), step)
    return _snapshot_meta(ref, time.perf_counter() - t0)


def _ref(ctx: Context, meta: dict[str, Any], kind: str) -> SnapshotRef:
    try:
        snapshot_id = int(meta["snapshot_id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{kind} snapshot metadata has no valid 'snapshot_id': {meta!r}") from exc
    with Session(ctx.engine) as s:
        snap = repo.get_snapshot(s, snapshot_id)
        if snap.kind != kind:
            raise ConfigError(f"snapshot {snapshot_id} is {snap.kind}, not {kind}")
        return SnapshotRef(id=snap.id, content_hash=snap.content_hash, reused=True)


def plan_step(
    ctx: Context,
    aoi: str,
    step: str,
    imagery: dict[str, Any],
    opendata: dict[str, Any],
    *,
    model_version_id: int | None = None,
    force: bool = False,
    repredict: bool = False,
    bbox: list[float] | None = None,
    trigger: str = "airflow",
    external_id: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start the run (or find the identical earlier one); its id and shard ids.

    ``imagery`` / ``opendata`` are what the fetch steps returned. ``reused`` is True
    when an earlier run had the same inputs: then ``shard_ids`` is empty. Refuses with
    :class:`~pipeline.locks.AuditBusyError` while another process audits the same AOI
    and step (a scheduler serialises its own runs of one AOI).
    """
    check_step(step)
    config = get_aoi_config(ctx, aoi)
    fetch_seconds = float(imagery.get("seconds", 0.0)) + float(opendata.get("seconds", 0.0))
    refs = (_ref(ctx, imagery, "imagery"), _ref(ctx, opendata, "opendata"))
    _check_snapshots_belong(ctx, aoi, step, refs)
    with audit_lock(ctx.engine, aoi, step, home=ctx.settings.home):
        plan = start_audit(
            ctx,
            config,
            step,
            imagery=refs[0],
            opendata=refs[1],
            model_version_id=model_version_id,
            force=force,
            repredict=repredict,
            bbox=bbox,
            trigger=trigger,
            external_id=external_id,
            params=params,
        )
    return {
        "aoi": aoi,
        "step": step,
        "run_id": plan.run_id,
        "shard_ids": list(plan.shard_ids),
        "reused": plan.reused,
        "fetch_seconds": round(fetch_seconds, 3),
    }


def shard_step(ctx: Context, run_id: int, shard_id: str) -> dict[str, Any]:
    """Rasterize, predict and score one shard of a run (a re-run replaces its rows)."""
    return process_shard(ctx, int(run_id), str(shard_id))


def changes_step(ctx: Context, plan: dict[str, Any]) -> dict[str, Any]:
    """The changes of a planned run against the previous step, stored; a small summary.

    A reused run already has its changes: their count is returned.
    """
    run_id = int(plan["run_id"])
    if plan.get("reused"):
        with Session(ctx.engine) as s:
            n = repo.run_result_counts(s, run_id)["n_changes"]
        return {"run_id": run_id, "n_changes": n, "seconds": 0.0, "reused": True}
    return {**store_run_changes(ctx, run_id), "reused": False}


def publish_step(
    ctx: Context,
    plan: dict[str, Any],
    changes: dict[str, Any] | None = None,
    validated: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Findings, hotspots and the AOI score of a planned run (and its changes, unless
    :func:`changes_step` stored them); a small summary.

    A reused run is not published again: its stored summary is returned.
    """
    run_id = int(plan["run_id"])
    if plan.get("reused"):
        summary = stored_run_summary(ctx, run_id)
    else:
        extra = {"fetch": float(plan.get("fetch_seconds", 0.0))}
        if changes is not None:
            extra["changes"] = float(changes.get("seconds", 0.0))
        if validated is not None:
            extra["validate"] = float(validated.get("seconds", 0.0))
        summary = publish_run(ctx, run_id, extra_seconds=extra, changes_stored=changes is not None)
    return {
        "run_id": run_id,
        "aoi": summary["aoi"],
        "step": summary["step"],
        "reused": bool(plan.get("reused")),
        "n_findings": summary["n_findings"],
        "n_changes": summary["n_changes"],
        "completeness": summary["aggregates"].get("completeness"),
        "correctness": summary["aggregates"].get("correctness"),
    }


def record_failure_of(ctx: Context, external_id: str, reason: str) -> int | None:
    """:func:`record_failure` for the run a scheduler started as ``external_id`` (e.g. an
    Airflow run id); the run's id, or None when that scheduler run made no GeoAudit run."""
    with Session(ctx.engine) as s:
        run = repo.run_by_external_id(s, external_id)
        run_id = run.id if run is not None else None
    if run_id is not None:
        record_failure(ctx, run_id, reason)
    return run_id


def record_failure(ctx: Context, run_id: int, reason: str) -> None:
    """Mark a run failed with ``reason`` unless it already finished (idempotent)."""
    with Session(ctx.engine) as s:
        status = repo.get_run(s, int(run_id)).status
    if status in ("queued", "running"):
        fail_run(ctx, int(run_id), reason)


def _check_snapshots_belong(
    ctx: Context, aoi: str, step: str, refs: tuple[SnapshotRef, SnapshotRef]
) -> None:
    """Both snapshots belong to ``aoi`` and ``step``, and the imagery covers a shard;
    ConfigError (the run must not start) otherwise."""
    with Session(ctx.engine) as s:
        aoi_id = repo.get_aoi(s, aoi).id
        for ref in refs:
            snap = repo.get_snapshot(s, ref.id)
            if snap.aoi_id != aoi_id or snap.step != step:
                raise ConfigError(
                    f"snapshot {snap.id} is of AOI id {snap.aoi_id} step {snap.step!r}, "
                    f"not of {aoi!r} step {step!r}"
                )
        imagery = repo.get_snapshot(s, refs[0].id)
        if not dict(imagery.meta or {}).get("shards"):
            raise ConfigError(f"imagery snapshot {imagery.id} of {aoi!r} {step} covers no shard")


def validate_step(ctx: Context, plan: dict[str, Any]) -> dict[str, Any]:
    """The gate before scoring: the Great Expectations suites on the planned run's
    snapshots, stored on the run. A critical failure marks the run failed with the
    reason and raises :class:`~pipeline.errors.ValidationFailedError`; warnings are
    returned. A reused run was validated when it ran: nothing to do.
    """
    from pipeline.errors import ValidationFailedError
    from pipeline.validate import validate_inputs

    run_id = int(plan["run_id"])
    if plan.get("reused"):
        return {"run_id": run_id, "reused": True, "success": True}
    report = validate_inputs(ctx, run_id)
    if report.critical:
        record_failure(ctx, run_id, report.reason())
        raise ValidationFailedError(report.reason())
    return {"run_id": run_id, "reused": False, **report.summary()}


def retrain_step(
    ctx: Context,
    aoi: str,
    steps: list[str],
    *,
    max_steps: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Train a challenger on ``steps`` (default: the AOI's latest configured step) and
    promote it only if it beats the champion on the same held-out tiles."""
    from pipeline.training import train_aoi_model

    config = get_aoi_config(ctx, aoi)
    steps = steps or config.steps[-1:]
    if not steps:
        raise ConfigError(f"AOI {aoi!r}: no time step to train on (set 'steps' or pass some)")
    for step in steps:
        check_step(step)
    out = train_aoi_model(
        ctx, aoi, steps, max_steps=max_steps, max_seconds=max_seconds, promote="auto"
    )
    return {
        "model_version_id": out.model_version_id,
        "val_iou": out.val_iou,
        "champion_id": out.champion_id,
        "champion_val_iou": out.champion_val_iou,
        "promoted": out.promoted,
        "steps": steps,
    }
