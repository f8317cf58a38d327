"""Object-level comparison of predicted buildings with open-data buildings.

Rules (all areas and distances in true metres: EPSG:3857 lengths are scaled by
``cos(lat)`` and areas by ``cos^2(lat)`` at each polygon's centroid):

1. **Eligible** polygons have a true area ``>= min_area_m2`` (smaller ones are
   specks or sheds the imagery cannot resolve), predictions also a confidence
   ``>= min_confidence``, and, when an imagery ``footprint`` is given, at least
   half their area inside it. Only eligible polygons are matched, counted and
   reported; *all* polygons of the other side still count as cover in rule 4.
2. **Matched**: one-to-one pairs with ``IoU >= iou_match``, assigned greedily by
   decreasing IoU.
3. **Misaligned**: among polygons left unmatched, a pair that overlaps
   (``iou_misaligned_min <= IoU < iou_match``) and whose IoU after translating
   the open-data polygon onto the predicted centroid is ``>= iou_match`` and at
   least ``shift_gain`` above the original, with a centroid offset within
   ``[min_offset_m, max_offset_m]``; one-to-one, greedy by shifted IoU. The
   building is in the open data, in the wrong place.
4. **Coverage** of a polygon = share of its area inside polygons of the other
   side, summed pairwise and clipped to 1 (exact when the covering polygons do
   not overlap each other, as vectorised predictions never do).
5. **missing_in_opendata**: the building-sized parts of the prediction minus the
   open data. From every eligible prediction the open-data polygons are removed
   (each grown by ``mapped_buffer_m``; a misaligned one also where the imagery puts
   it), the rest is opened by ``opening_m`` (slivers along mapped outlines and
   blobs thinner than ``2 * opening_m``, 4 m by default, vanish: on the sample town
   a 1 m opening left 43 such false findings of 69, a 2 m one 9 of 36) and every
   remaining part of at least ``min_area_m2`` is a finding. So a building that was
   predicted merged with a mapped neighbour is reported on its own, and a wholly
   unmapped one whole.
6. **unsupported_by_imagery**: an eligible open-data polygon neither matched nor
   misaligned whose predicted share is below ``unsupported_max_coverage``. The
   predicted share and the imagery under the polygon come from the prediction
   rasters when the open data carries them (columns ``imagery_share``,
   ``pred_share``, ``mean_prob``, see :func:`pipeline.score.metrics.footprint_stats`),
   else from rule 4. A polygon with less than ``min_imagery_share`` of imagery under
   it is **not covered**: counted, never a finding.
7. **Evidence** ranks the review queue: ``size = 1 - exp(-area / (2 min_area))``;
   missing: ``confidence * size`` (confidence = mean probability of the prediction
   it came from); unsupported: ``(1 - mean probability) * imagery share * size``;
   misaligned: ``confidence * (shifted IoU - IoU)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ConfigError, VectorDataError
from pipeline.score.geometry import (
    MERCATOR,
    area_m2,
    best_per,
    coverage,
    geometries,
    greedy_one_to_one,
    inside_share,
    mercator_scale,
    overlap_pairs,
    pair_iou,
    rotate,
    to_mercator,
    translate,
)

log = logging.getLogger(__name__)

FINDING_KINDS = ("missing_in_opendata", "unsupported_by_imagery", "misaligned")
FINDING_COLUMNS = (
    "kind",
    "feature_id",
    "area_m2",
    "confidence",
    "evidence",
    "iou",
    "coverage",
    "iou_shifted",
    "offset_m",
    "dx_m",
    "dy_m",
    "rotation_deg",
)


@dataclass(frozen=True)
class MatchConfig:
    """Thresholds of :func:`match`; see the module docstring for the rules."""

    iou_match: float = 0.5
    iou_misaligned_min: float = 0.1
    shift_gain: float = 0.1
    min_offset_m: float = 1.5
    max_offset_m: float = 15.0
    max_rotation_deg: float = 20.0
    min_area_m2: float = 15.0
    min_confidence: float = 0.0
    unsupported_max_coverage: float = 0.15
    min_imagery_share: float = 0.5
    mapped_buffer_m: float = 0.5
    opening_m: float = 2.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or value < 0:
                raise ConfigError(f"MatchConfig.{f.name} must be a finite number >= 0, got {value}")
        for name in (
            "iou_match",
            "iou_misaligned_min",
            "min_confidence",
            "unsupported_max_coverage",
            "min_imagery_share",
        ):
            value = getattr(self, name)
            if value > 1:
                raise ConfigError(f"MatchConfig.{name} must be within 0..1, got {value}")
        if self.iou_match == 0:
            raise ConfigError("MatchConfig.iou_match must be > 0")
        if self.iou_misaligned_min >= self.iou_match:
            raise ConfigError(
                f"MatchConfig.iou_misaligned_min ({self.iou_misaligned_min}) must be below "
                f"iou_match ({self.iou_match})"
            )
        if self.min_offset_m > self.max_offset_m:
            raise ConfigError(
                f"MatchConfig.min_offset_m ({self.min_offset_m}) must not exceed "
                f"max_offset_m ({self.max_offset_m})"
            )


class MatchSummary(NamedTuple):
    """Counts over eligible polygons (rule 1) for the AOI aggregates.

    ``n_matched`` counts every one-to-one pair, aligned or misaligned (the open
    data has the building); ``n_misaligned`` is the misaligned part of it.
    """

    n_predicted: int
    n_opendata: int
    n_matched: int
    n_misaligned: int
    n_missing: int
    n_unsupported: int
    n_not_covered: int = 0


@dataclass(frozen=True)
class MatchResult:
    """What :func:`match` found.

    ``findings``: one EPSG:3857 row per finding. Columns: ``kind`` (one of
    :data:`FINDING_KINDS`), ``feature_id`` (open data, None for missing), ``area_m2``
    (true m²), ``confidence`` (prediction mean probability; ``1 - coverage`` for
    unsupported), ``iou`` (best IoU with the other side; the pair's IoU for misaligned),
    ``coverage`` (rule 4), ``iou_shifted``, ``offset_m``, ``dx_m``, ``dy_m`` (misaligned
    only: metres east/north to move the open-data polygon onto the imagery; NaN
    otherwise), ``geometry`` (the predicted polygon for missing, the open-data polygon
    otherwise).

    ``pairs``: one row per one-to-one pair: ``pred`` (row position in
    ``predicted``), ``feature_id``, ``iou``, ``kind`` ("matched" or "misaligned").
    """

    findings: gpd.GeoDataFrame
    pairs: pd.DataFrame
    summary: MatchSummary


def _check_columns(frame: gpd.GeoDataFrame, column: str, what: str) -> None:
    if column not in frame.columns:
        raise VectorDataError(f"{what}: column {column!r} is missing")


def _finding_rows(kind: str, geoms: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
    """Finding rows of one kind; columns not given are None (feature_id) or NaN."""
    n = len(geoms)
    data: dict[str, object] = {"kind": np.full(n, kind, dtype=object)}
    data["feature_id"] = np.full(n, None, dtype=object)
    for name in FINDING_COLUMNS[2:]:
        data[name] = np.full(n, np.nan)
    for name, values in columns.items():
        data[name] = np.asarray(values, dtype=object if name == "feature_id" else np.float64)
    data["geometry"] = geoms
    return pd.DataFrame(data)


@dataclass(frozen=True)
class Aligned:
    """Open-data polygons moved onto their predictions: the moved ``geoms``, the
    translation ``dx``, ``dy`` and turn ``angle`` (degrees) applied, and the largest
    vertex ``displacement`` (EPSG:3857 units)."""

    geoms: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    angle: np.ndarray
    displacement: np.ndarray


def align(
    pred: np.ndarray, od: np.ndarray, max_rotation_deg: float, step_deg: float = 2.5
) -> Aligned:
    """Each open-data polygon moved onto its predicted polygon: translated centroid to
    centroid, then turned about that centroid by the angle (a multiple of ``step_deg``
    within ``±max_rotation_deg``) that gives the highest IoU."""
    pc, oc = shapely.centroid(pred), shapely.centroid(od)
    px, py = shapely.get_x(pc), shapely.get_y(pc)
    dx, dy = px - shapely.get_x(oc), py - shapely.get_y(oc)
    moved = translate(od, dx, dy)
    pa, oa = shapely.area(pred), shapely.area(od)
    best = moved
    best_iou = pair_iou(shapely.area(shapely.intersection(pred, moved)), pa, oa)
    best_angle = np.zeros(pred.size)
    n = int(max_rotation_deg // step_deg)
    for k in [*range(-n, 0), *range(1, n + 1)]:
        turned = rotate(moved, k * step_deg, px, py)
        t_iou = pair_iou(shapely.area(shapely.intersection(pred, turned)), pa, oa)
        better = t_iou > best_iou + 1e-9
        best = np.where(better, turned, best)
        best_iou = np.where(better, t_iou, best_iou)
        best_angle = np.where(better, k * step_deg, best_angle)
    coords, index = shapely.get_coordinates(od, return_index=True)
    after = shapely.get_coordinates(best)
    moved_by = np.hypot(*(after - coords).T) if len(after) == len(coords) else np.zeros(len(coords))
    displacement = np.zeros(od.size)
    np.maximum.at(displacement, index, moved_by)
    return Aligned(best, dx, dy, best_angle, displacement)


def residual_parts(
    pred: np.ndarray,
    mapped: np.ndarray,
    eligible: np.ndarray,
    scale: np.ndarray,
    config: MatchConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Rule 5: building-sized parts of the eligible predictions outside the (grown) mapped
    polygons, after an opening; the parts and the index of the prediction of each."""
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        return np.empty(0, dtype=object), np.empty(0, np.intp)
    rest = pred[idx].copy()
    grow = config.mapped_buffer_m / scale[idx]  # true metres to EPSG:3857 units
    if mapped.size:
        pi, mi = shapely.STRtree(mapped).query(pred[idx], predicate="intersects")
        for k in np.unique(pi):
            near = mapped[mi[pi == k]]
            rest[k] = shapely.difference(rest[k], shapely.union_all(shapely.buffer(near, grow[k])))
    r = config.opening_m / scale[idx]
    opened = shapely.buffer(shapely.buffer(rest, -r, join_style="mitre"), r, join_style="mitre")
    parts, which = shapely.get_parts(opened, return_index=True)
    solid = ~shapely.is_empty(parts)
    parts, which = parts[solid], which[solid]
    keep = area_m2(parts) >= config.min_area_m2
    return parts[keep], idx[which[keep]]


def _column(frame: gpd.GeoDataFrame, name: str, default: np.ndarray) -> np.ndarray:
    """A float column of ``frame`` (missing values from ``default``), or ``default``."""
    if name not in frame.columns:
        return np.asarray(default, np.float64)
    values = frame[name].to_numpy(np.float64, na_value=np.nan)
    return np.where(np.isnan(values), default, values)


def match(
    predicted: gpd.GeoDataFrame,
    opendata: gpd.GeoDataFrame,
    *,
    config: MatchConfig = MatchConfig(),
    footprint: BaseGeometry | None = None,
) -> MatchResult:
    """Match predicted buildings with open-data buildings; the rules are in the module docstring.

    ``predicted``: polygons with ``confidence``; ``opendata``: polygons with a
    unique ``feature_id`` (and, optionally, ``imagery_share``, ``pred_share`` and
    ``mean_prob`` from the prediction rasters); both EPSG:3857 (other CRSs are
    reprojected, no CRS means EPSG:3857). ``footprint``: optional EPSG:3857 area the
    imagery covers.
    """
    _check_columns(predicted, "confidence", "predicted buildings")
    _check_columns(opendata, "feature_id", "open data")
    pred = to_mercator(predicted, "predicted buildings")
    od = to_mercator(opendata, "open data")
    pg, og = geometries(pred, "predicted buildings"), geometries(od, "open data")
    if od["feature_id"].duplicated().any():
        raise VectorDataError("open data: 'feature_id' must be unique")
    n_p, n_o = pg.size, og.size
    conf = pred["confidence"].to_numpy(np.float64)
    fid = od["feature_id"].to_numpy(object)
    ps, os_ = mercator_scale(pg), mercator_scale(og)
    pa, oa = shapely.area(pg), shapely.area(og)

    p_ok = (pa * ps**2 >= config.min_area_m2) & (conf >= config.min_confidence)
    o_ok = oa * os_**2 >= config.min_area_m2
    p_ok &= inside_share(pg, footprint) >= 0.5
    o_ok &= inside_share(og, footprint) >= 0.5
    imagery_share = _column(od, "imagery_share", np.ones(n_o))
    not_covered = o_ok & (imagery_share < config.min_imagery_share)
    o_ok &= ~not_covered

    ip, io, inter = overlap_pairs(pg, og)
    iou = pair_iou(inter, pa[ip], oa[io])
    cov_p = coverage(n_p, ip, inter, pa)
    cov_o = coverage(n_o, io, inter, oa)
    best_p, best_o = best_per(n_p, ip, iou), best_per(n_o, io, iou)

    used_p, used_o = np.zeros(n_p, bool), np.zeros(n_o, bool)

    # rules 2 and 3: one-to-one pairs, each matched or misaligned. Misalignment is judged
    # on every overlapping pair (a building shifted by less than its width still overlaps
    # its prediction enough to pass for a match); pairs are assigned greedily by the IoU
    # they reach aligned (ties: the higher IoU as mapped).
    cand = np.flatnonzero(p_ok[ip] & o_ok[io] & (iou >= config.iou_misaligned_min))
    a, b = ip[cand], io[cand]
    aligned = align(pg[a], og[b], config.max_rotation_deg)
    s_iou = pair_iou(shapely.area(shapely.intersection(pg[a], aligned.geoms)), pa[a], oa[b])
    scale = os_[b]
    off = aligned.displacement * scale
    is_mis = (
        (s_iou >= config.iou_match)
        & (s_iou - iou[cand] >= config.shift_gain)
        & (off >= config.min_offset_m)
        & (off <= config.max_offset_m)
    )
    paired = np.flatnonzero(is_mis | (iou[cand] >= config.iou_match))
    score = np.where(is_mis, s_iou, iou[cand]) + 1e-3 * iou[cand]
    chosen = paired[greedy_one_to_one(a[paired], b[paired], score[paired])]
    chosen_mis = chosen[is_mis[chosen]]
    acc = cand[chosen[~is_mis[chosen]]]
    mis = cand[chosen_mis]
    shifted_iou, offset, angle = s_iou[chosen_mis], off[chosen_mis], aligned.angle[chosen_mis]
    dx = aligned.dx[chosen_mis] * scale[chosen_mis]
    dy = aligned.dy[chosen_mis] * scale[chosen_mis]
    moved_mis = aligned.geoms[chosen_mis]
    used_p, used_o = np.zeros(n_p, bool), np.zeros(n_o, bool)
    used_p[ip[acc]] = used_p[ip[mis]] = True
    used_o[io[acc]] = used_o[io[mis]] = True

    # rule 5: missing = building-sized parts of the prediction minus the open data
    mapped = og
    if mis.size:  # a misaligned building is mapped where the open data and the imagery put it
        mapped = np.concatenate([og, moved_mis])
    parts, parent = residual_parts(pg, mapped, p_ok, ps, config)
    part_area = area_m2(parts)
    size = 1.0 - np.exp(-part_area / (2.0 * max(config.min_area_m2, 1.0)))

    # rule 6: unsupported
    pred_share = _column(od, "pred_share", cov_o)
    mean_prob = _column(od, "mean_prob", cov_o)
    unsupported = np.flatnonzero(o_ok & ~used_o & (pred_share < config.unsupported_max_coverage))
    o_area = oa * os_**2
    o_size = 1.0 - np.exp(-o_area / (2.0 * max(config.min_area_m2, 1.0)))

    frames = [
        _finding_rows(
            "missing_in_opendata",
            parts,
            area_m2=part_area,
            confidence=conf[parent],
            evidence=conf[parent] * size,
            iou=best_p[parent],
            coverage=cov_p[parent],
        ),
        _finding_rows(
            "unsupported_by_imagery",
            og[unsupported],
            feature_id=fid[unsupported],
            area_m2=o_area[unsupported],
            confidence=1.0 - mean_prob[unsupported],
            evidence=(1.0 - mean_prob[unsupported])
            * imagery_share[unsupported]
            * o_size[unsupported],
            iou=best_o[unsupported],
            coverage=pred_share[unsupported],
        ),
        _finding_rows(
            "misaligned",
            og[io[mis]],
            feature_id=fid[io[mis]],
            area_m2=o_area[io[mis]],
            confidence=conf[ip[mis]],
            evidence=conf[ip[mis]] * (shifted_iou - iou[mis]),
            iou=iou[mis],
            coverage=cov_o[io[mis]],
            iou_shifted=shifted_iou,
            offset_m=offset,
            dx_m=dx,
            dy_m=dy,
            rotation_deg=angle,
        ),
    ]
    table = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    findings = gpd.GeoDataFrame(table, geometry="geometry", crs=MERCATOR)

    pairs = pd.DataFrame(
        {
            "pred": np.concatenate([ip[acc], ip[mis]]),
            "feature_id": np.concatenate([fid[io[acc]], fid[io[mis]]]),
            "iou": np.concatenate([iou[acc], iou[mis]]),
            "kind": ["matched"] * acc.size + ["misaligned"] * mis.size,
        }
    )
    summary = MatchSummary(
        n_predicted=int(p_ok.sum()),
        n_opendata=int(o_ok.sum()),
        n_matched=int(acc.size + mis.size),
        n_misaligned=int(mis.size),
        n_missing=int(parts.size),
        n_unsupported=int(unsupported.size),
        n_not_covered=int(not_covered.sum()),
    )
    log.debug("match: %s", summary)
    return MatchResult(findings=findings, pairs=pairs, summary=summary)
