"""A run's results as GeoDataFrames: the layers every export and the Python API share.

Each layer is in EPSG:4326 and carries the AOI's name, the step and the run id, so
a layer read on its own (in QGIS, in a notebook) says where and when it is from.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.context import Context
from pipeline.db import repo
from pipeline.db.models import AoiScore, Review
from pipeline.geometries import as_multipolygon
from pipeline.results.links import josm_url, osm_url

# the AOI layer's columns from the run's score
_SCORE_COLUMNS = (
    "mean_qod",
    "completeness",
    "correctness",
    "mean_iou",
    "flagged_tile_share",
    "n_tiles",
    "n_opendata",
    "n_predicted",
    "model_trusted",
    "model_oof_iou",
)


@dataclass(frozen=True)
class RunLayers:
    """The results of one audit run, one GeoDataFrame per layer."""

    run_id: int
    aoi: str
    step: str
    outline: gpd.GeoDataFrame  # one row: the AOI outline with the run's scores
    tile_scores: gpd.GeoDataFrame
    findings: gpd.GeoDataFrame
    changes: gpd.GeoDataFrame
    hotspots: gpd.GeoDataFrame

    def items(self) -> list[tuple[str, gpd.GeoDataFrame]]:
        """``(layer name, frame)`` in the order exports write them."""
        return [
            ("aoi", self.outline),
            ("tile_scores", self.tile_scores),
            ("findings", self.findings),
            ("changes", self.changes),
            ("hotspots", self.hotspots),
        ]


def run_layers(ctx: Context, run_id: int) -> RunLayers:
    """Read every layer of run ``run_id`` (any status; exports ask for succeeded runs)."""
    with Session(ctx.engine) as s:
        run = repo.get_run(s, run_id)
        aoi = repo.get_aoi(s, run.aoi_id)
        score = s.scalars(select(AoiScore).where(AoiScore.run_id == run_id)).one_or_none()
        tiles = repo.tile_scores_frame(s, run_id)
        findings = repo.findings_frame(s, run_id)
        changes = repo.changes_frame(s, run_id)
        hotspots = repo.hotspots_frame(s, run_id)
        reviews = s.execute(
            select(
                Review.finding_id,
                Review.verdict,
                Review.reviewer,
                Review.comment,
                Review.updated_at.label("reviewed_at"),
            ).where(Review.finding_id.in_([int(i) for i in findings["id"]]))
        ).all()
        step, aoi_name, outline_geom = run.step, aoi.name, aoi.geometry
    scores = {c: getattr(score, c, None) for c in _SCORE_COLUMNS}
    outline = gpd.GeoDataFrame(
        [{"aoi": aoi_name, "step": step, "run_id": run_id, **scores}],
        geometry=[as_multipolygon(outline_geom)],
        crs="EPSG:4326",
    )
    return RunLayers(
        run_id=run_id,
        aoi=aoi_name,
        step=step,
        outline=outline,
        tile_scores=_stamped(tiles, aoi_name, step),
        findings=_stamped(_with_reviews(findings, reviews), aoi_name, step),
        changes=_stamped(changes, aoi_name, None),
        hotspots=_stamped(hotspots, aoi_name, step),
    )


def _with_reviews(findings: gpd.GeoDataFrame, reviews: list) -> gpd.GeoDataFrame:
    """Findings with their evidence (the review queue's order), links to the open-data
    object where it has one and to JOSM, and the reviewer's verdict."""
    out = findings.copy()
    details = out["detail"].map(lambda d: d if isinstance(d, dict) else {})
    out.insert(out.columns.get_loc("confidence") + 1, "evidence", details.map(_evidence))
    out["osm_url"] = out["feature_id"].map(osm_url)
    out["josm_url"] = [josm_url(g, f) for g, f in zip(out.geometry, out["feature_id"], strict=True)]
    verdicts = pd.DataFrame(
        reviews, columns=["finding_id", "verdict", "reviewer", "comment", "reviewed_at"]
    )
    out = out.merge(verdicts, how="left", left_on="id", right_on="finding_id")
    out = out.drop(columns="finding_id")
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")


def _evidence(detail: dict) -> float | None:
    value = detail.get("evidence")
    return float(value) if isinstance(value, int | float) else None


def _stamped(frame: gpd.GeoDataFrame, aoi: str, step: str | None) -> gpd.GeoDataFrame:
    """``frame`` with ``aoi`` (and ``step``) as its first columns."""
    out = frame.copy()
    if step is not None and "step" not in out.columns:
        out.insert(0, "step", step)
    out.insert(0, "aoi", aoi)
    return gpd.GeoDataFrame(out, geometry="geometry", crs="EPSG:4326")
