"""Read-side summaries of an AOI for the CLI (and anything else that reports)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from pipeline.context import Context
from pipeline.db import repo
from pipeline.errors import NotFoundError


def run_for_step(ctx: Context, aoi: str, step: str | None) -> int:
    """Id of the latest succeeded run of ``aoi`` (at ``step`` when given)."""
    with Session(ctx.engine) as s:
        aoi_row = repo.get_aoi(s, aoi)
        run = repo.latest_run(s, aoi_row.id, step=step, status="succeeded")
        if run is None:
            at = f" at step {step}" if step else ""
            raise NotFoundError(
                f"AOI {aoi!r} has no finished audit{at}: run `geoaudit audit {aoi} --step ...`"
            )
        return run.id


def aoi_report(ctx: Context, aoi: str, *, top_k: int = 5) -> dict[str, Any]:
    """Trend of AOI scores over runs, plus the latest run's findings and its ``top_k``
    hotspots (significant cells only, see :func:`pipeline.score.hotspots.hotspots`)."""
    with Session(ctx.engine) as s:
        aoi_row = repo.get_aoi(s, aoi)
        trend = [
            {
                "step": sc.step,
                "run_id": sc.run_id,
                "completeness": sc.completeness,
                "correctness": sc.correctness,
                "mean_iou": sc.mean_iou,
                "mean_qod": sc.mean_qod,
                "flagged_tile_share": sc.flagged_tile_share,
                "findings_by_kind": sc.findings_by_kind,
            }
            for sc in repo.aoi_scores(s, aoi_row.id)
        ]
        latest = repo.latest_run(s, aoi_row.id, status="succeeded")
        if latest is None:
            return {"aoi": aoi, "trend": trend, "latest": None}
        kinds = repo.kinds_of_results(s, latest.id)
        hotspots = [
            {
                "rank": int(h.rank),
                "cell": f"{int(h.z)}/{int(h.x)}/{int(h.y)}",
                "gi_star": float(h.gi_star),
                "q_value": None if h.q_value is None else float(h.q_value),
                "n_findings": int(h.n_findings),
            }
            for h in repo.top_hotspots(s, latest.id, top_k)
        ]
    return {
        "aoi": aoi,
        "trend": trend,
        "latest": {
            "run_id": latest.id,
            "step": latest.step,
            "findings_by_kind": kinds["findings"],
            "changes_by_kind": kinds["changes"],
            "hotspots": hotspots,
        },
    }
