"""The local runner: a whole audit in this process, the stages of
:data:`~pipeline.run.stages.AUDIT_STAGES` in their declared order (``geoaudit audit``,
the demo, tests).

What it adds to the stages is its own: it holds the AOI-and-step lock for the whole
run (verified before each write; what a lost connection broke runs again); it first
asks whether an earlier run answers the request already
(:func:`~pipeline.run.uptodate.up_to_date_summary`), which an unchanged re-audit
answers without importing the libraries the stages use; and it validates in a forked
helper process (:class:`~pipeline.run.validation_helper.AuditGate`) so that Great
Expectations loads while the sources are read and the input suites run while the
shards' predictions fill the cache. Nothing is scored or stored before the verdict.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DBAPIError

from pipeline.aoi.steps import check_step
from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.engine import write_session
from pipeline.db.faults import is_disconnect
from pipeline.errors import GeoAuditError
from pipeline.locks import AuditLock, audit_lock
from pipeline.progress import progress_bar
from pipeline.redact import redact
from pipeline.run.handoffs import AuditPlan, AuditRequest, Handoff, RunSummary, ShardOutcome
from pipeline.run.lifecycle import close_abandoned_runs, record_failure
from pipeline.run.stages import AUDIT_STAGES, Stage
from pipeline.run.uptodate import up_to_date_summary

if TYPE_CHECKING:
    from pipeline.run.validation_helper import AuditGate

log = logging.getLogger(__name__)

#: tries of a retryable stage or shard whose database connection is lost
DISCONNECT_ATTEMPTS = 3
DISCONNECT_BACKOFF_S = 1.0


@dataclass
class AuditResult:
    """Outcome of a whole audit run."""

    run_id: int
    aoi: str
    step: str
    seconds: float
    summary: RunSummary
    shards: list[ShardOutcome] = field(default_factory=list)
    reused: bool = False

    @property
    def cache_hits(self) -> int:
        """Shards whose prediction came from an earlier run's cache."""
        return sum(1 for s in self.shards if s.cache_hit)

    @property
    def predicted_shards(self) -> int:
        """Shards that ran inference in this run."""
        return sum(1 for s in self.shards if s.predicted)


def run_audit(
    ctx: Context,
    aoi_name: str,
    step: str,
    *,
    pinned: bool = True,
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
    ignores the prediction cache). ``pinned=False`` audits as a scheduler does (see
    :class:`AuditRequest`): when no source changed since the last succeeded run the
    run is recorded as ``no_new_data`` and its result is that run's summary. While
    another process audits the same AOI and step,
    wait up to ``wait_s`` seconds, then raise :class:`~pipeline.locks.AuditBusyError`.
    """
    request = AuditRequest(
        aoi=aoi_name,
        step=check_step(step),
        pinned=pinned,
        model_version_id=model_version_id,
        force=force,
        repredict=repredict,
        bbox=tuple(bbox) if bbox is not None else None,
        trigger=trigger,
    )
    started = time.perf_counter()
    with audit_lock(ctx.engine, aoi_name, step, wait_s=wait_s, home=ctx.settings.home) as lock:
        # as planning would: the runs a dead process left are closed first
        close_abandoned_runs(ctx, aoi_name, step, own_external_id=request.external_id)
        current = up_to_date_summary(ctx, request)
        if current is not None:
            return AuditResult(
                run_id=current.run_id,
                aoi=aoi_name,
                step=step,
                seconds=time.perf_counter() - started,
                summary=current,
                reused=True,
            )
        from pipeline.run.validation_helper import AuditGate

        with AuditGate(ctx) as gate:  # Great Expectations loads while the sources are read
            done = LocalRunner(ctx.with_validator(gate), gate, lock).run(request)
    summary: RunSummary = done["publish"]
    plan: AuditPlan = done["plan"]
    return AuditResult(
        run_id=plan.run_id if plan.no_new_data else summary.run_id,
        aoi=aoi_name,
        step=step,
        seconds=time.perf_counter() - started,
        summary=summary,
        shards=list(done.get("shard", [])),
        reused=summary.reused,
    )


class LocalRunner:
    """Runs :data:`AUDIT_STAGES` in order in this process, each with the hand-offs it
    takes; a per-shard stage once for each shard of the plan, with a progress bar.

    Before each stage and shard it verifies the audit lock (taken back if a database
    restart dropped it); a retryable stage or shard that loses its database connection
    runs again, up to :data:`DISCONNECT_ATTEMPTS` times."""

    def __init__(self, ctx: Context, gate: AuditGate, lock: AuditLock) -> None:
        self.ctx = ctx
        self.gate = gate
        self.lock = lock

    def run(self, request: AuditRequest) -> dict[str, Any]:
        """Every stage's hand-off by stage name (a per-shard stage: their list)."""
        done: dict[str, Any] = {}
        plan: AuditPlan | None = None
        try:
            for stage in AUDIT_STAGES:
                if stage.name == "validate" and plan is not None and not plan.reused:
                    self._predict_while_validating(plan)
                done[stage.name] = self._run(stage, request, done)
                if isinstance(done[stage.name], AuditPlan):
                    plan = done[stage.name]
        except Exception as exc:
            if plan is not None and not plan.reused:
                reason = (
                    str(exc) if isinstance(exc, GeoAuditError) else f"{type(exc).__name__}: {exc}"
                )
                record_failure(self.ctx, plan.run_id, reason)
            raise
        except BaseException as exc:  # KeyboardInterrupt and friends: record, then propagate
            if plan is not None and not plan.reused:
                record_failure(self.ctx, plan.run_id, f"interrupted: {exc!r}")
            raise
        return done

    def _attempt(self, stage: Stage, request: AuditRequest, **kwargs: Any) -> Any:
        """One stage (or shard) under the verified lock, again after a lost connection."""
        for attempt in range(1, DISCONNECT_ATTEMPTS + 1):
            self.lock.verify()
            try:
                return stage.run(self.ctx, request, **kwargs)
            except DBAPIError as exc:
                if not (stage.retry and is_disconnect(exc)) or attempt == DISCONNECT_ATTEMPTS:
                    raise
                log.warning(
                    "database connection lost; stage runs again",
                    extra={"stage": stage.name, "attempt": attempt, "error": redact(str(exc))},
                )
                time.sleep(DISCONNECT_BACKOFF_S * attempt)
        raise AssertionError("unreachable")

    def _run(self, stage: Stage, request: AuditRequest, done: dict[str, Any]) -> Any:
        kwargs = {name: done[name] for name in stage.inputs}
        if not stage.per_shard:
            return self._attempt(stage, request, **kwargs)
        plan: AuditPlan = done["plan"]
        outcomes: list[Handoff] = []
        for shard_id in progress_bar(
            plan.shard_ids,
            desc=f"audit {request.aoi} {request.step}",
            unit="shard",
            enabled=self.ctx.progress,
        ):
            outcomes.append(self._attempt(stage, request, **kwargs, shard_id=shard_id))
        return outcomes

    def _predict_while_validating(self, plan: AuditPlan) -> None:
        """Submit the input suites to the helper and fill the prediction cache until
        their answer is ready (the validate stage then takes it)."""
        from pipeline.run.inputs import load_run_inputs
        from pipeline.run.predict import predict_ahead, shard_images_ahead

        self.gate.submit_inputs(plan.run_id)
        if self.gate.inputs_ready():
            return
        inputs = load_run_inputs(self.ctx, plan.run_id)
        seconds = 0.0
        images = shard_images_ahead(self.ctx, inputs, plan.shard_ids)
        try:
            for _ in plan.shard_ids:
                if self.gate.inputs_ready():
                    break
                shard_id, image = next(images)
                seconds += predict_ahead(self.ctx, inputs, shard_id, image)
        finally:
            images.close()
        if seconds:
            with write_session(self.ctx.engine) as s:
                repo.add_stage_seconds(s, plan.run_id, {"predict": seconds})
