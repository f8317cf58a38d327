"""A published run's summary, read back from storage: what ``geoaudit audit`` prints and
the publish stage hands on, for a run just published and for an earlier run that a
reused or "no new data" plan stands for.
"""

from __future__ import annotations

import dataclasses

from sqlalchemy.orm import Session

from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.errors import RunStateError
from pipeline.run import layout
from pipeline.run.handoffs import AuditPlan, RunSummary

#: the AOI score's own columns; every other aggregate is kept in its ``extra``
AOI_SCORE_COLUMNS = (
    "completeness",
    "correctness",
    "mean_iou",
    "mean_qod",
    "flagged_tile_share",
    "n_opendata",
    "n_predicted",
    "findings_by_kind",
    "model_oof_iou",
    "model_validated_tiles",
    "model_trusted",
)


def stored_run_summary(ctx: Context, run_id: int, *, reused: bool = False) -> RunSummary:
    """The summary of a published run, read back from storage."""
    with Session(ctx.engine) as s:
        run = repo.get_run(s, run_id)
        if run.status != "succeeded" or run.score is None:
            raise RunStateError(f"run {run_id} has no published results (status {run.status})")
        score = run.score
        aggregates = {k: getattr(score, k) for k in AOI_SCORE_COLUMNS}
        aggregates.update(score.extra or {})
        counts = repo.run_result_counts(s, run_id)
        return RunSummary(
            run_id=run_id,
            aoi=run.aoi.name,
            step=run.step,
            aggregates=aggregates,
            n_findings=counts["n_findings"],
            n_changes=counts["n_changes"],
            n_hotspots=counts["n_hotspots"],
            buildings_uri=ctx.store.uri(layout.run_buildings_key(run_id)),
            stage_seconds=dict(run.stage_seconds or {}),
            reused=reused,
        )


def reused_run_summary(ctx: Context, plan: AuditPlan) -> RunSummary:
    """The summary a reused plan stands for: the earlier identical run's, or for a
    "no new data" run, that of the run whose results stay current."""
    if plan.no_new_data:
        with Session(ctx.engine) as s:
            same_as = int((repo.get_run(s, plan.run_id).params or {})["same_as_run"])
        summary = stored_run_summary(ctx, same_as, reused=True)
        return dataclasses.replace(summary, no_new_data=True)
    return stored_run_summary(ctx, plan.run_id, reused=True)
