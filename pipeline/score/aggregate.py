"""AOI-level aggregates: the numbers that make an AOI's trend line."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from pipeline.errors import ConfigError, VectorDataError
from pipeline.score.geometry import to_mercator
from pipeline.score.match import FINDING_KINDS
from pipeline.tiles import tiles_of_points


def finding_tiles(findings: gpd.GeoDataFrame, zoom: int) -> tuple[np.ndarray, np.ndarray]:
    """XYZ tile ``(x, y)`` at ``zoom`` of each finding: the tile holding the finding's
    point on surface in EPSG:3857 (:func:`pipeline.tiles.tiles_of_points`; findings in
    another CRS are reprojected). A finding crossing a tile edge belongs to one tile.
    """
    frame = to_mercator(findings, "findings")
    if len(frame) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pts = shapely.point_on_surface(np.asarray(frame.geometry.values, dtype=object))
    return tiles_of_points(shapely.get_x(pts), shapely.get_y(pts), zoom)


def flag_tiles(
    qod: np.ndarray, n_findings: np.ndarray, valid: np.ndarray, qod_threshold: float
) -> np.ndarray:
    """The flagged-tile rule: a tile with valid pixels is **flagged** when its QoD is
    below ``qod_threshold`` or it holds a finding (by :func:`finding_tiles`)."""
    qod = np.asarray(qod, np.float64)
    return np.asarray(valid, bool) & ((qod < qod_threshold) | (np.asarray(n_findings) > 0))


def findings_per_tile(tile_table: pd.DataFrame, findings: gpd.GeoDataFrame) -> np.ndarray:
    """How many findings each row of ``tile_table`` (``x``, ``y``, ``z``, one zoom) holds."""
    if len(findings) == 0 or len(tile_table) == 0:
        return np.zeros(len(tile_table), np.int64)
    zoom = int(tile_table["z"].iloc[0])
    fx, fy = finding_tiles(findings, zoom)
    keys, counts = np.unique(fx * (1 << 32) + fy, return_counts=True)
    tile_keys = tile_table["x"].to_numpy(np.int64) * (1 << 32) + tile_table["y"].to_numpy(np.int64)
    pos = np.clip(np.searchsorted(keys, tile_keys), 0, max(keys.size - 1, 0))
    return np.where(keys[pos] == tile_keys, counts[pos], 0).astype(np.int64)


def _share(num: float, den: float) -> float:
    """``num / den``, 1.0 when ``den == 0`` (nothing to get wrong)."""
    return 1.0 if den == 0 else num / den


def aoi_aggregates(
    tile_table: pd.DataFrame,
    findings: gpd.GeoDataFrame,
    *,
    n_predicted: int,
    n_opendata: int,
    n_matched: int,
    qod_threshold: float = 80.0,
) -> dict:
    """AOI summary of one audit.

    ``tile_table``: one row per work tile with ``x``, ``y``, ``z``, ``iou``,
    ``qod`` and the valid pixel count ``valid`` (or ``valid_px``; without either,
    every row counts as a tile with valid pixels), e.g. :meth:`TileMetrics.to_frame`
    rows of every shard; optional ``tp``, ``fp``, ``fn`` add the pixel-pooled
    IoU. ``findings``: :attr:`MatchResult.findings` (any CRS);
    ``n_*``: its :class:`MatchSummary`.

    * ``completeness = n_matched / (n_matched + n_missing)``: share of the buildings
      the imagery shows one-to-one or as missing that the open data has (missing
      findings are parts of the prediction, several may come from one blob).
    * ``correctness = 1 - n_unsupported / n_opendata``: share of open-data
      buildings supported by the imagery.
    * ``object_f1 = 2 n_matched / (n_predicted + n_opendata)``: one-to-one
      agreement (matched + misaligned pairs).
      Each share is 1.0 when its denominator is 0.
    * ``mean_iou``, ``mean_qod``: means over tiles with valid pixels (NaN if none);
      ``pixel_iou = Σtp / Σ(tp + fp + fn)`` when those columns exist.
    * Tiles are flagged by :func:`flag_tiles`; ``flagged_tile_share = n_flagged_tiles /
      n_tiles_valid`` (0.0 with no valid tile). Only tiles with valid pixels count.
    * ``n_findings`` and ``findings_by_kind`` = ``{kind: count}`` over
      :data:`FINDING_KINDS` (zeros included).
    """
    missing_cols = {"x", "y", "z", "iou", "qod"} - set(tile_table.columns)
    if missing_cols:
        raise ConfigError(f"tile table lacks column(s) {sorted(missing_cols)}")
    if "kind" not in findings.columns:
        raise VectorDataError("findings: column 'kind' is missing")
    if min(n_predicted, n_opendata, n_matched) < 0 or n_matched > min(n_predicted, n_opendata):
        raise ConfigError(
            f"counts must satisfy 0 <= n_matched <= min(n_predicted, n_opendata), got "
            f"n_predicted={n_predicted}, n_opendata={n_opendata}, n_matched={n_matched}"
        )
    zooms = tile_table["z"].unique()
    if len(zooms) > 1:
        raise ConfigError(f"tile table mixes zooms {sorted(zooms.tolist())}; give one work zoom")

    counts = findings["kind"].value_counts()
    by_kind = {k: int(counts.get(k, 0)) for k in FINDING_KINDS}
    if by_kind["unsupported_by_imagery"] > n_opendata:
        raise ConfigError(
            f"{by_kind['unsupported_by_imagery']} unsupported_by_imagery findings exceed "
            f"n_opendata={n_opendata}"
        )

    valid_col = next((c for c in ("valid", "valid_px") if c in tile_table.columns), None)
    if valid_col is None:
        valid = np.ones(len(tile_table), dtype=bool)
    else:
        valid = tile_table[valid_col].fillna(0).to_numpy() > 0
    n_valid = int(valid.sum())
    flagged = flag_tiles(
        tile_table["qod"].to_numpy(np.float64),
        findings_per_tile(tile_table, findings),
        valid,
        qod_threshold,
    )
    n_flagged = int(flagged.sum())

    iou = tile_table["iou"].to_numpy(np.float64)[valid]
    q = tile_table["qod"].to_numpy(np.float64)[valid]
    mean_iou = float(iou.mean()) if n_valid else math.nan
    mean_qod = float(q.mean()) if n_valid else math.nan
    out = {
        "n_tiles": len(tile_table),
        "n_tiles_valid": n_valid,
        "n_flagged_tiles": n_flagged,
        "flagged_tile_share": n_flagged / n_valid if n_valid else 0.0,
        "mean_iou": mean_iou,
        "mean_qod": mean_qod,
    }
    if {"tp", "fp", "fn"} <= set(tile_table.columns):
        tp = float(tile_table["tp"].sum())
        den = tp + float(tile_table["fp"].sum()) + float(tile_table["fn"].sum())
        out["pixel_iou"] = _share(tp, den)
    out.update(
        n_predicted=int(n_predicted),
        n_opendata=int(n_opendata),
        n_matched=int(n_matched),
        completeness=_share(n_matched, n_matched + by_kind["missing_in_opendata"]),
        correctness=_share(n_opendata - by_kind["unsupported_by_imagery"], n_opendata),
        object_f1=_share(2 * n_matched, n_predicted + n_opendata),
        n_findings=int(len(findings)),
        findings_by_kind=by_kind,
    )
    return out
