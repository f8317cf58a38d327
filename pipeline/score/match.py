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
5. **missing_in_opendata**: an eligible prediction neither matched nor
   misaligned, covered by open data less than ``missing_max_coverage``.
   **unsupported_by_imagery**: an eligible open-data polygon neither matched
   nor misaligned, covered by prediction less than ``unsupported_max_coverage``.
   Polygons between the two states (a building predicted in two parts, two row
   houses predicted as one blob, a partial detection) are not findings.
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
    best_per,
    coverage,
    geometries,
    greedy_one_to_one,
    inside_share,
    mercator_scale,
    overlap_pairs,
    pair_iou,
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
    "iou",
    "coverage",
    "iou_shifted",
    "offset_m",
    "dx_m",
    "dy_m",
)


@dataclass(frozen=True)
class MatchConfig:
    """Thresholds of :func:`match`; see the module docstring for the rules."""

    iou_match: float = 0.5
    iou_misaligned_min: float = 0.1
    shift_gain: float = 0.2
    min_offset_m: float = 1.5
    max_offset_m: float = 15.0
    min_area_m2: float = 15.0
    min_confidence: float = 0.0
    missing_max_coverage: float = 0.15
    unsupported_max_coverage: float = 0.15

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or value < 0:
                raise ConfigError(f"MatchConfig.{f.name} must be a finite number >= 0, got {value}")
        for name in (
            "iou_match",
            "iou_misaligned_min",
            "min_confidence",
            "missing_max_coverage",
            "unsupported_max_coverage",
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


def match(
    predicted: gpd.GeoDataFrame,
    opendata: gpd.GeoDataFrame,
    *,
    config: MatchConfig = MatchConfig(),
    footprint: BaseGeometry | None = None,
) -> MatchResult:
    """Match predicted buildings with open-data buildings; the rules are in the module docstring.

    ``predicted``: polygons with ``confidence``; ``opendata``: polygons with a
    unique ``feature_id``; both EPSG:3857 (other CRSs are reprojected, no CRS
    means EPSG:3857). ``footprint``: optional EPSG:3857 area the imagery covers.
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

    ip, io, inter = overlap_pairs(pg, og)
    iou = pair_iou(inter, pa[ip], oa[io])
    cov_p = coverage(n_p, ip, inter, pa)
    cov_o = coverage(n_o, io, inter, oa)
    best_p, best_o = best_per(n_p, ip, iou), best_per(n_o, io, iou)

    # rule 2: matched pairs
    cand = np.flatnonzero(p_ok[ip] & o_ok[io] & (iou >= config.iou_match))
    acc = cand[greedy_one_to_one(ip[cand], io[cand], iou[cand])]
    used_p, used_o = np.zeros(n_p, bool), np.zeros(n_o, bool)
    used_p[ip[acc]] = True
    used_o[io[acc]] = True

    # rule 3: misaligned pairs
    cand = np.flatnonzero(
        p_ok[ip] & o_ok[io] & ~used_p[ip] & ~used_o[io] & (iou >= config.iou_misaligned_min)
    )
    shifted_iou = np.zeros(0)
    dx = dy = offset = np.zeros(0)
    mis = cand[:0]
    if cand.size:
        a, b = ip[cand], io[cand]
        pc, oc = shapely.centroid(pg[a]), shapely.centroid(og[b])
        dx3 = shapely.get_x(pc) - shapely.get_x(oc)
        dy3 = shapely.get_y(pc) - shapely.get_y(oc)
        moved = translate(og[b], dx3, dy3)
        s_inter = shapely.area(shapely.intersection(pg[a], moved))
        s_iou = pair_iou(s_inter, pa[a], oa[b])
        scale = os_[b]
        off = np.hypot(dx3, dy3) * scale
        ok = (
            (s_iou >= config.iou_match)
            & (s_iou - iou[cand] >= config.shift_gain)
            & (off >= config.min_offset_m)
            & (off <= config.max_offset_m)
        )
        keep = np.flatnonzero(ok)
        chosen = keep[greedy_one_to_one(a[keep], b[keep], s_iou[keep])]
        mis = cand[chosen]
        shifted_iou, offset = s_iou[chosen], off[chosen]
        dx, dy = dx3[chosen] * scale[chosen], dy3[chosen] * scale[chosen]
        used_p[ip[mis]] = True
        used_o[io[mis]] = True

    # rule 5: missing / unsupported
    missing = np.flatnonzero(p_ok & ~used_p & (cov_p < config.missing_max_coverage))
    unsupported = np.flatnonzero(o_ok & ~used_o & (cov_o < config.unsupported_max_coverage))

    frames = [
        _finding_rows(
            "missing_in_opendata",
            pg[missing],
            area_m2=pa[missing] * ps[missing] ** 2,
            confidence=conf[missing],
            iou=best_p[missing],
            coverage=cov_p[missing],
        ),
        _finding_rows(
            "unsupported_by_imagery",
            og[unsupported],
            feature_id=fid[unsupported],
            area_m2=oa[unsupported] * os_[unsupported] ** 2,
            confidence=1.0 - cov_o[unsupported],
            iou=best_o[unsupported],
            coverage=cov_o[unsupported],
        ),
        _finding_rows(
            "misaligned",
            og[io[mis]],
            feature_id=fid[io[mis]],
            area_m2=oa[io[mis]] * os_[io[mis]] ** 2,
            confidence=conf[ip[mis]],
            iou=iou[mis],
            coverage=cov_o[io[mis]],
            iou_shifted=shifted_iou,
            offset_m=offset,
            dx_m=dx,
            dy_m=dy,
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
        n_missing=int(missing.size),
        n_unsupported=int(unsupported.size),
    )
    log.debug("match: %s", summary)
    return MatchResult(findings=findings, pairs=pairs, summary=summary)
