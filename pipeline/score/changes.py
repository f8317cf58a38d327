"""Changes between two time steps of an AOI: in the imagery, in the open data, and across.

Rules (areas in true m², see :func:`pipeline.score.geometry.area_m2`):

* **Imagery** (predicted buildings, eligible when ``area_m2 >= min_area_m2``,
  ``confidence >= min_confidence`` and, given a ``footprint``, at least half
  inside it): a current building covered by the previous step's predictions
  less than ``gone_max_coverage`` **appeared**; a previous building covered by
  the current predictions less than that **disappeared**. Coverage sums the
  overlap with the predictions of the other step that are about as sure: a
  prediction counts only if its relative confidence (confidence / the median
  confidence of its step, so a global shift between steps cancels out) is at
  least ``persist_confidence_ratio`` times the building's. So a building
  predicted in both steps with a jittered outline, or split in two, or merged
  with a neighbour, is not a change, while a demolition site that the model
  still half-sees as a roof (rubble) is.
* **Open data** by ``feature_id``: a new id is **added**, a vanished id
  **removed**, an id kept with ``IoU(prev, cur) < modified_iou`` **modified**
  (``detail="geometry_changed"``). A removed and an added feature whose
  geometries overlap with ``IoU >= iou_same`` (one-to-one, greedy by IoU) are
  one feature that changed id: **modified**, ``detail="id_changed"``.
* **stale_opendata** (the actionable cross):
  ``"new_building_missing"``: an appeared building covered by the *current*
  open data less than ``opendata_max_coverage`` (geometry = the building);
  ``"demolished_still_mapped"``: a current open-data polygon covered at least
  ``still_mapped_min_coverage`` by disappeared buildings and less than
  ``gone_max_coverage`` by current predictions (geometry = the open-data polygon).

Appeared/disappeared rows stay in the output next to the stale rows they lead to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

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
    overlap_pairs,
    pair_iou,
    to_mercator,
)

log = logging.getLogger(__name__)

CHANGE_KINDS = ("appeared", "disappeared", "added", "removed", "modified", "stale_opendata")
CHANGE_COLUMNS = ("kind", "detail", "feature_id", "prev_feature_id", "area_m2", "confidence", "iou")


@dataclass(frozen=True)
class ChangeConfig:
    """Thresholds of :func:`detect_changes`; see the module docstring for the rules."""

    iou_same: float = 0.3
    min_area_m2: float = 20.0
    min_confidence: float = 0.0
    gone_max_coverage: float = 0.2
    modified_iou: float = 0.9
    opendata_max_coverage: float = 0.2
    still_mapped_min_coverage: float = 0.5
    persist_confidence_ratio: float = 0.9

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or value < 0:
                raise ConfigError(
                    f"ChangeConfig.{f.name} must be a finite number >= 0, got {value}"
                )
            if f.name != "min_area_m2" and value > 1:
                raise ConfigError(f"ChangeConfig.{f.name} must be within 0..1, got {value}")
        if self.iou_same == 0:
            raise ConfigError("ChangeConfig.iou_same must be > 0")


def _rows(kind: str, detail: str, geoms: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
    n = len(geoms)
    data: dict[str, object] = {
        "kind": np.full(n, kind, dtype=object),
        "detail": np.full(n, detail, dtype=object),
        "feature_id": np.full(n, None, dtype=object),
        "prev_feature_id": np.full(n, None, dtype=object),
        "area_m2": area_m2(geoms) if n else np.empty(0),
        "confidence": np.ones(n),
        "iou": np.full(n, np.nan),
    }
    for name, values in columns.items():
        data[name] = np.asarray(values, dtype=object if name.endswith("feature_id") else np.float64)
    data["geometry"] = geoms
    return pd.DataFrame(data)


class _Buildings:
    """Predicted buildings of one step: geometries, areas, confidence, eligibility."""

    def __init__(
        self,
        frame: gpd.GeoDataFrame,
        what: str,
        config: ChangeConfig,
        footprint: BaseGeometry | None,
    ) -> None:
        if "confidence" not in frame.columns:
            raise VectorDataError(f"{what}: column 'confidence' is missing")
        frame = to_mercator(frame, what)
        self.geoms = geometries(frame, what)
        self.area = shapely.area(self.geoms)
        self.confidence = frame["confidence"].to_numpy(np.float64)
        self.eligible = (
            (area_m2(self.geoms) >= config.min_area_m2)
            & (self.confidence >= config.min_confidence)
            & (inside_share(self.geoms, footprint) >= 0.5)
        )
        typical = float(np.median(self.confidence[self.eligible])) if self.eligible.any() else 1.0
        self.relative_confidence = self.confidence / (typical if typical > 0 else 1.0)


class _OpenData:
    """Open-data features of one step keyed by ``feature_id``."""

    def __init__(self, frame: gpd.GeoDataFrame, what: str) -> None:
        if "feature_id" not in frame.columns:
            raise VectorDataError(f"{what}: column 'feature_id' is missing")
        if frame["feature_id"].duplicated().any():
            raise VectorDataError(f"{what}: 'feature_id' must be unique")
        frame = to_mercator(frame, what)
        self.geoms = geometries(frame, what)
        self.area = shapely.area(self.geoms)
        self.ids = frame["feature_id"].astype(str).to_numpy(object)


def _opendata_changes(prev: _OpenData, cur: _OpenData, config: ChangeConfig) -> list[pd.DataFrame]:
    prev_pos = pd.Index(prev.ids)
    cur_pos = pd.Index(cur.ids)
    kept_cur = np.flatnonzero(cur_pos.isin(prev_pos))
    kept_prev = prev_pos.get_indexer(cur.ids[kept_cur])
    added = np.flatnonzero(~cur_pos.isin(prev_pos))
    removed = np.flatnonzero(~prev_pos.isin(cur_pos))

    inter = shapely.area(shapely.intersection(prev.geoms[kept_prev], cur.geoms[kept_cur]))
    kept_iou = pair_iou(inter, prev.area[kept_prev], cur.area[kept_cur])
    changed = kept_iou < config.modified_iou

    ir, ia, rinter = overlap_pairs(prev.geoms[removed], cur.geoms[added])
    riou = pair_iou(rinter, prev.area[removed][ir], cur.area[added][ia])
    cand = np.flatnonzero(riou >= config.iou_same)
    pairs = cand[greedy_one_to_one(ir[cand], ia[cand], riou[cand])]
    renamed_prev, renamed_cur = removed[ir[pairs]], added[ia[pairs]]
    added = np.setdiff1d(added, renamed_cur)
    removed = np.setdiff1d(removed, renamed_prev)

    return [
        _rows("added", "new_feature", cur.geoms[added], feature_id=cur.ids[added]),
        _rows("removed", "feature_deleted", prev.geoms[removed], feature_id=prev.ids[removed]),
        _rows(
            "modified",
            "geometry_changed",
            cur.geoms[kept_cur[changed]],
            feature_id=cur.ids[kept_cur[changed]],
            prev_feature_id=prev.ids[kept_prev[changed]],
            iou=kept_iou[changed],
        ),
        _rows(
            "modified",
            "id_changed",
            cur.geoms[renamed_cur],
            feature_id=cur.ids[renamed_cur],
            prev_feature_id=prev.ids[renamed_prev],
            iou=riou[pairs],
        ),
    ]


def detect_changes(
    prev_buildings: gpd.GeoDataFrame,
    cur_buildings: gpd.GeoDataFrame,
    prev_opendata: gpd.GeoDataFrame,
    cur_opendata: gpd.GeoDataFrame,
    *,
    config: ChangeConfig = ChangeConfig(),
    footprint: BaseGeometry | None = None,
) -> gpd.GeoDataFrame:
    """Changes from step t-1 to step t; the rules are in the module docstring.

    Inputs in EPSG:3857 (others are reprojected; no CRS means EPSG:3857):
    predicted buildings of both steps with ``confidence``, open data of both
    steps with a unique ``feature_id``. ``footprint``: optional EPSG:3857 area
    where both steps have imagery.

    Returns one EPSG:3857 row per change: ``kind`` (one of :data:`CHANGE_KINDS`),
    ``detail`` (``new_building``, ``building_gone``, ``new_feature``,
    ``feature_deleted``, ``geometry_changed``, ``id_changed``,
    ``new_building_missing``, ``demolished_still_mapped``), ``feature_id`` (the
    current id, or the removed one; None for imagery-only rows),
    ``prev_feature_id`` (modified rows), ``area_m2`` (true m² of the geometry),
    ``confidence`` (prediction mean probability for imagery-derived rows, 1.0
    for open-data edits, which are facts), ``iou`` (modified: IoU of the two
    geometries; appeared/disappeared: best IoU with the other step; else NaN).
    """
    prev_b = _Buildings(prev_buildings, "previous buildings", config, footprint)
    cur_b = _Buildings(cur_buildings, "current buildings", config, footprint)
    prev_o = _OpenData(prev_opendata, "previous open data")
    cur_o = _OpenData(cur_opendata, "current open data")

    # imagery: appeared / disappeared
    ic, ip, inter = overlap_pairs(cur_b.geoms, prev_b.geoms)
    iou = pair_iou(inter, cur_b.area[ic], prev_b.area[ip])
    # a building persists only where the other step's prediction is about as sure
    ratio = config.persist_confidence_ratio
    prev_rel, cur_rel = prev_b.relative_confidence, cur_b.relative_confidence
    prev_holds = prev_rel[ip] >= ratio * cur_rel[ic]
    cur_holds = cur_rel[ic] >= ratio * prev_rel[ip]
    cur_cov = coverage(cur_b.geoms.size, ic[prev_holds], inter[prev_holds], cur_b.area)
    prev_cov = coverage(prev_b.geoms.size, ip[cur_holds], inter[cur_holds], prev_b.area)
    appeared = np.flatnonzero(cur_b.eligible & (cur_cov < config.gone_max_coverage))
    disappeared = np.flatnonzero(prev_b.eligible & (prev_cov < config.gone_max_coverage))
    cur_best = best_per(cur_b.geoms.size, ic, iou)
    prev_best = best_per(prev_b.geoms.size, ip, iou)

    # cross: appeared but unmapped now
    ia, _, a_inter = overlap_pairs(cur_b.geoms[appeared], cur_o.geoms)
    mapped = coverage(appeared.size, ia, a_inter, cur_b.area[appeared])
    new_missing = appeared[mapped < config.opendata_max_coverage]

    # cross: mapped now, but its building disappeared
    io_d, id_, d_inter = overlap_pairs(cur_o.geoms, prev_b.geoms[disappeared])
    gone_cov = coverage(cur_o.geoms.size, io_d, d_inter, cur_o.area)
    weight = np.bincount(io_d, weights=d_inter, minlength=cur_o.geoms.size)
    conf = np.bincount(
        io_d, weights=d_inter * prev_b.confidence[disappeared][id_], minlength=cur_o.geoms.size
    )
    still_conf = np.full(cur_o.geoms.size, np.nan)
    np.divide(conf, weight, out=still_conf, where=weight > 0)  # intersection-weighted mean
    # current predictions that did not hold against a disappeared building do not count
    weak = np.zeros(cur_b.geoms.size, dtype=bool)
    weak[ic[~cur_holds & np.isin(ip, disappeared)]] = True
    io_c, ib_c, c_inter = overlap_pairs(cur_o.geoms, cur_b.geoms)
    firm = ~weak[ib_c]
    now_cov = coverage(cur_o.geoms.size, io_c[firm], c_inter[firm], cur_o.area)
    still = np.flatnonzero(
        (gone_cov >= config.still_mapped_min_coverage) & (now_cov < config.gone_max_coverage)
    )

    frames = [
        _rows(
            "appeared",
            "new_building",
            cur_b.geoms[appeared],
            confidence=cur_b.confidence[appeared],
            iou=cur_best[appeared],
        ),
        _rows(
            "disappeared",
            "building_gone",
            prev_b.geoms[disappeared],
            confidence=prev_b.confidence[disappeared],
            iou=prev_best[disappeared],
        ),
        *_opendata_changes(prev_o, cur_o, config),
        _rows(
            "stale_opendata",
            "new_building_missing",
            cur_b.geoms[new_missing],
            confidence=cur_b.confidence[new_missing],
        ),
        _rows(
            "stale_opendata",
            "demolished_still_mapped",
            cur_o.geoms[still],
            feature_id=cur_o.ids[still],
            confidence=still_conf[still],
        ),
    ]
    table = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    changes = gpd.GeoDataFrame(table, geometry="geometry", crs=MERCATOR)
    log.debug("changes: %s", changes["kind"].value_counts().to_dict())
    return changes
