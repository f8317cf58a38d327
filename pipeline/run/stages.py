"""The audit's stages, declared once. Every runner executes this sequence: the local
runner behind ``geoaudit audit`` (:mod:`pipeline.run.local`) loops over it in one
process; the Airflow DAG (``dags/geoaudit_audits.py``) makes one task per stage and
one mapped task per shard of the ``shard`` stage, wired as declared here.

    fetch_imagery ─┐
                   ├─► plan ─► validate ─► shard (one per shard) ─► changes ─► publish
    fetch_opendata ┘

A stage is a function ``(ctx, request, **inputs) -> Handoff``: ``request`` is the
:class:`~pipeline.run.handoffs.AuditRequest`, ``inputs`` the hand-offs of the stages
it names in ``inputs`` (by stage name). ``after`` lists stages that must succeed first
without passing anything. A ``per_shard`` stage also takes ``shard_id`` and runs once
for each shard of the plan.

A stage function imports the module that does its work when it runs: declaring the
sequence (a DAG file being parsed, ``geoaudit audit`` finding its run up to date)
imports no raster, vector, model or validation library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.aoi.registry import get_aoi_config
from pipeline.aoi.steps import check_step
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.errors import ValidationFailedError
from pipeline.locks import audit_lock
from pipeline.run.handoffs import (
    AuditPlan,
    AuditRequest,
    ChangesOutcome,
    FetchedSnapshot,
    Handoff,
    RunSummary,
    ShardOutcome,
    ValidationOutcome,
)
from pipeline.run.lifecycle import (
    check_run_alive,
    close_abandoned_runs,
    record_failure,
    start_run,
)


def fetch_imagery_stage(ctx: Context, request: AuditRequest) -> FetchedSnapshot:
    """Snapshot the AOI's imagery at the request's step."""
    from pipeline.run.fetch import fetch_imagery

    check_step(request.step)
    return fetch_imagery(ctx, get_aoi_config(ctx, request.aoi), request.step)


def fetch_opendata_stage(ctx: Context, request: AuditRequest) -> FetchedSnapshot:
    """Snapshot the AOI's open data at the request's step."""
    from pipeline.run.fetch import fetch_opendata

    check_step(request.step)
    return fetch_opendata(ctx, get_aoi_config(ctx, request.aoi), request.step)


def plan_stage(
    ctx: Context,
    request: AuditRequest,
    *,
    fetch_imagery: FetchedSnapshot,
    fetch_opendata: FetchedSnapshot,
) -> AuditPlan:
    """Start the run (or find the identical earlier one) over the AOI's shards, once the
    runs of the AOI and step that a dead process or scheduler left are closed (a live
    one refuses: :class:`~pipeline.locks.AuditBusyError`)."""
    close_abandoned_runs(ctx, request.aoi, request.step, own_external_id=request.external_id)
    return start_run(ctx, get_aoi_config(ctx, request.aoi), request, fetch_imagery, fetch_opendata)


def validate_stage(ctx: Context, request: AuditRequest, *, plan: AuditPlan) -> ValidationOutcome:
    """The gate before scoring: the input suites on the run's snapshots, stored on the run.

    A critical failure marks the run failed with the reason and raises
    :class:`~pipeline.errors.ValidationFailedError`. A reused run was validated when it
    ran: nothing to do.
    """
    if plan.reused:
        return ValidationOutcome(plan.run_id, reused=True)
    from pipeline.run.validate import validator_of

    report = validator_of(ctx).validate_inputs(plan.run_id)
    if report.critical:
        record_failure(ctx, plan.run_id, report.reason())
        raise ValidationFailedError(report.reason())
    with write_session(ctx.engine) as s:
        repo.add_stage_seconds(s, plan.run_id, {"validate": report.seconds})
    return ValidationOutcome(
        plan.run_id,
        success=report.success,
        n_warnings=len(report.warnings),
        warnings=tuple(report.warning_lines()),
        data_docs=report.index_uri,
        seconds=report.seconds,
    )


def shard_stage(
    ctx: Context, request: AuditRequest, *, plan: AuditPlan, shard_id: str
) -> ShardOutcome:
    """Rasterize, predict and score one shard of the run (a re-run replaces its rows)."""
    from pipeline.run.shard import process_shard

    return process_shard(ctx, plan.run_id, shard_id)


def changes_stage(ctx: Context, request: AuditRequest, *, plan: AuditPlan) -> ChangesOutcome:
    """The run's changes against the previous step, stored."""
    from pipeline.run.changes import store_run_changes

    return store_run_changes(ctx, plan)


def publish_stage(ctx: Context, request: AuditRequest, *, plan: AuditPlan) -> RunSummary:
    """Findings, hotspots and the AOI score; the run marked succeeded."""
    from pipeline.run.publish import publish_run

    return publish_run(ctx, plan)


@dataclass(frozen=True)
class Stage:
    """One stage of the audit: its name, function, the hand-offs it takes (``inputs``,
    by stage name), the stages that must succeed before it (``after``), whether it runs
    once per shard, whether a scheduler may retry it on a transient fault, and how a
    scheduler's task of it holds the AOI-and-step audit lock: ``exclusive`` (planning a
    run), ``shared`` (writing into the planned run, side by side with its other tasks)
    or not at all (fetching snapshots)."""

    name: str
    run: Callable[..., Handoff]
    returns: type[Handoff]
    inputs: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    per_shard: bool = False
    retry: bool = True
    lock: Literal["exclusive", "shared"] | None = None


AUDIT_STAGES: tuple[Stage, ...] = (
    Stage("fetch_imagery", fetch_imagery_stage, FetchedSnapshot),
    Stage("fetch_opendata", fetch_opendata_stage, FetchedSnapshot),
    Stage(
        "plan",
        plan_stage,
        AuditPlan,
        inputs=("fetch_imagery", "fetch_opendata"),
        retry=False,
        lock="exclusive",
    ),
    Stage(
        "validate", validate_stage, ValidationOutcome, inputs=("plan",), retry=False, lock="shared"
    ),
    Stage(
        "shard",
        shard_stage,
        ShardOutcome,
        inputs=("plan",),
        after=("validate",),
        per_shard=True,
        lock="shared",
    ),
    Stage(
        "changes", changes_stage, ChangesOutcome, inputs=("plan",), after=("shard",), lock="shared"
    ),
    Stage(
        "publish", publish_stage, RunSummary, inputs=("plan",), after=("changes",), lock="shared"
    ),
)
STAGES_BY_NAME: Mapping[str, Stage] = {stage.name: stage for stage in AUDIT_STAGES}


def run_stage(
    ctx: Context,
    name: str,
    request: AuditRequest,
    handoffs: Mapping[str, Any],
    *,
    shard_id: str | None = None,
    hold_lock: bool = True,
) -> Handoff:
    """Run stage ``name`` with the hand-offs of the stages it takes (typed, or in their
    XCom form), as a scheduler does, one stage per process. ``hold_lock``: take the
    AOI-and-step lock as the stage says (a runner that holds it already says no); a
    stage that writes into a planned run first checks that the run is still running
    and records it alive.
    """
    stage = STAGES_BY_NAME[name]
    kwargs: dict[str, Any] = {
        dep: STAGES_BY_NAME[dep].returns.from_xcom(handoffs[dep]) for dep in stage.inputs
    }
    if stage.per_shard:
        if shard_id is None:
            raise ValueError(f"stage {name!r} runs per shard: give a shard_id")
        kwargs["shard_id"] = shard_id
    if stage.lock is None or not hold_lock:
        return stage.run(ctx, request, **kwargs)
    with audit_lock(
        ctx.engine,
        request.aoi,
        request.step,
        home=ctx.settings.home,
        shared=stage.lock == "shared",
    ):
        plan = kwargs.get("plan")
        if isinstance(plan, AuditPlan) and not plan.reused:
            check_run_alive(ctx, plan.run_id)
        return stage.run(ctx, request, **kwargs)
