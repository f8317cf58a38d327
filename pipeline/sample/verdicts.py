"""Score an audit's findings against errors planted into real open data
(:mod:`pipeline.sample.plant`).

A planted error is **found** when a finding of its kind hits it: ``missing_in_opendata``
for a deleted building, ``unsupported_by_imagery`` for a phantom, ``misaligned`` for a
shifted one. A finding *hits* a planted footprint when their IoU exceeds ``min_iou``
(``by_iou``) or, more leniently, when the finding contains the footprint's point on
surface or the footprint contains the finding's (``by_point``). Recall counts only the
first ``2 N`` findings of the kind in review-queue order (``N`` = how many were
planted), as a reviewer works down the queue. Precision is the share of all findings of
the kind that hit a planted error (real errors of the open data count as false: their
truth is not known).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import geopandas as gpd
import numpy as np
import shapely

from pipeline.context import Context
from pipeline.rasterize import prepare_footprints, rasterize_shard
from pipeline.run.inputs import load_run_inputs, read_shard_image
from pipeline.run.predict import predict_run_shard
from pipeline.sample.plant import Planted
from pipeline.tiles import TILE_SIZE, Shard, Tile, block_of

KIND_OF = {
    "deleted": "missing_in_opendata",
    "phantoms": "unsupported_by_imagery",
    "shifted": "misaligned",
}


@dataclass(frozen=True)
class KindScore:
    """How well one kind of planted error was found."""

    planted: int
    findings: int
    recall_top2n: float
    recall_top2n_by_point: float
    precision: float


def review_order(findings: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Findings in the order the review queue shows them: by ``evidence`` when the
    findings carry it, else by ``area_m2 * confidence``, highest first."""
    if "evidence" in findings.columns and findings["evidence"].notna().any():
        key = findings["evidence"].fillna(0.0)
    else:
        key = findings["area_m2"].fillna(0.0) * findings["confidence"].fillna(0.0)
    return findings.assign(_key=key.to_numpy()).sort_values("_key", ascending=False, kind="stable")


def score_kind(
    planted: gpd.GeoDataFrame, findings: gpd.GeoDataFrame, *, min_iou: float = 0.3
) -> KindScore:
    """Recall in the top ``2 N`` and precision of one kind (both frames in one CRS)."""
    n = len(planted)
    ordered = review_order(findings) if len(findings) else findings
    truth = np.asarray(planted.geometry.values, dtype=object)
    found = np.asarray(ordered.geometry.values, dtype=object)
    if n == 0 or len(found) == 0:
        # nothing planted: perfect recall, and any finding is a false one
        recall = 1.0 if n == 0 else 0.0
        return KindScore(n, len(found), recall, recall, 0.0 if len(found) else 1.0)
    iou, point = _hits(truth, found, min_iou)
    top = slice(0, 2 * n)
    hit_any = iou | point
    return KindScore(
        planted=n,
        findings=len(found),
        recall_top2n=float(iou[:, top].any(axis=1).mean()),
        recall_top2n_by_point=float(hit_any[:, top].any(axis=1).mean()),
        precision=float(hit_any.any(axis=0).mean()),
    )


def score_planted(
    planted: Planted, findings: gpd.GeoDataFrame, *, min_iou: float = 0.3
) -> dict[str, dict[str, float]]:
    """:func:`score_kind` for deleted, phantom and shifted buildings (findings in any CRS;
    a shifted building is hit where the building really is or where the data put it)."""
    utm = planted.on_imagery.estimate_utm_crs()
    found = findings.to_crs(utm)
    out = {}
    for name, kind in KIND_OF.items():
        frame = getattr(planted, name)
        if name == "shifted" and len(frame):
            frame = frame.set_geometry(
                shapely.union(frame.geometry.to_numpy(), np.asarray(frame["true_geometry"]))
            ).set_crs(frame.crs, allow_override=True)
        score = score_kind(frame.to_crs(utm), found[found["kind"] == kind], min_iou=min_iou)
        out[name] = asdict(score)
    return out


def _hits(truth: np.ndarray, found: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """``(n_truth, n_found)`` boolean matrices: IoU above ``min_iou``; one holds the
    other's point on surface."""
    iou = np.zeros((truth.size, found.size), bool)
    point = np.zeros_like(iou)
    ti, fi = shapely.STRtree(found).query(truth, predicate="intersects")
    if ti.size:
        inter = shapely.area(shapely.intersection(truth[ti], found[fi]))
        union = shapely.area(shapely.union(truth[ti], found[fi]))
        iou[ti, fi] = inter / np.maximum(union, 1e-12) > min_iou
        point[ti, fi] = shapely.contains(found[fi], shapely.point_on_surface(truth[ti])) | (
            shapely.contains(truth[ti], shapely.point_on_surface(found[fi]))
        )
    return iou, point


def pixel_iou_against(ctx: Context, run_id: int, truth: gpd.GeoDataFrame) -> float:
    """Pooled pixel IoU of a run's predictions (probability >= 0.5) against ``truth``
    footprints, over the valid pixels of the AOI's tiles: ``ΣTP / Σ(TP + FP + FN)``."""
    inputs = load_run_inputs(ctx, run_id)
    prepared, _ = prepare_footprints(truth.to_crs("EPSG:4326"))
    tp = fp = fn = 0
    for shard, tiles in inputs.aoi.shards().items():
        ref = inputs.imagery.shards.get(shard.id)
        if ref is None:
            continue
        valid = read_shard_image(ctx, ref).valid & _tiles_mask(shard, tiles)
        prob = predict_run_shard(ctx, inputs, shard).prob
        pred = (prob >= 0.5) & valid
        label = rasterize_shard(prepared, shard).labels.astype(bool) & valid
        tp += int(np.count_nonzero(pred & label))
        fp += int(np.count_nonzero(pred & ~label))
        fn += int(np.count_nonzero(~pred & label))
    union = tp + fp + fn
    return tp / union if union else 1.0


def _tiles_mask(shard: Shard, tiles: list[Tile]) -> np.ndarray:
    mask = np.zeros((shard.size, shard.size), bool)
    for tile in tiles:
        r, c = block_of(tile, shard)
        mask[r * TILE_SIZE : (r + 1) * TILE_SIZE, c * TILE_SIZE : (c + 1) * TILE_SIZE] = True
    return mask
