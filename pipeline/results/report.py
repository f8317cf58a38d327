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
        findings = repo.findings_frame(s, latest.id)
        hotspots = repo.hotspots_frame(s, latest.id).sort_values("rank").head(top_k)
        changes = repo.changes_frame(s, latest.id)
    return {
        "aoi": aoi,
        "trend": trend,
        "latest": {
            "run_id": latest.id,
            "step": latest.step,
            "findings_by_kind": findings["kind"].value_counts().to_dict()
            if not findings.empty
            else {},
            "changes_by_kind": changes["kind"].value_counts().to_dict()
            if not changes.empty
            else {},
            "hotspots": [
                {
                    "rank": int(r.rank),
                    "cell": f"{int(r.z)}/{int(r.x)}/{int(r.y)}",
                    "gi_star": float(r.gi_star),
                    "q_value": None if r.q_value is None else float(r.q_value),
                    "n_findings": int(r.n_findings),
                }
                for r in hotspots.itertuples()
            ],
        },
    }
