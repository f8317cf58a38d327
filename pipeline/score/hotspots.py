"""Hotspots: where findings cluster, by Getis-Ord Gi* over coarse cells."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import geopandas as gpd
import mercantile
import numpy as np
import shapely
from scipy import sparse

from pipeline.errors import ConfigError, VectorDataError
from pipeline.score.aggregate import finding_tiles
from pipeline.score.match import FINDING_KINDS
from pipeline.tiles import Tile, parent

log = logging.getLogger(__name__)

_SHIFT = 32  # cell key = x << 32 | y


def gi_star(values: np.ndarray, weights: sparse.sparray) -> np.ndarray:
    """Getis-Ord Gi* z-scores of ``values`` under ``weights`` (``w_ii`` included).

    ``Gi*_i = (Σ_j w_ij x_j - X̄ Σ_j w_ij) / (S sqrt((n Σ_j w_ij² - (Σ_j w_ij)²) / (n - 1)))``
    with ``X̄ = Σ x / n`` and ``S = sqrt(Σ x² / n - X̄²)``. Gi* is a standard
    normal z-score under no spatial association; it is 0 where it is undefined
    (all values equal, ``n < 2``, or a neighbourhood spanning every cell).
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 2 or np.ptp(x) == 0:
        return np.zeros(n)
    w = sparse.csr_array(weights, dtype=np.float64)
    mean = x.mean()
    s = x.std()  # population standard deviation
    w_sum = np.asarray(w.sum(axis=1)).ravel()
    w_sq = np.asarray(w.multiply(w).sum(axis=1)).ravel()
    num = w @ x - mean * w_sum
    den = s * np.sqrt(np.maximum(n * w_sq - w_sum**2, 0.0) / (n - 1))
    out = np.zeros(n)
    np.divide(num, den, out=out, where=den > 0)
    return out


def queen_weights(x: np.ndarray, y: np.ndarray) -> sparse.csr_array:
    """Binary weights of cells ``(x, y)``: 1 for the cell itself and its (up to) 8 neighbours.

    Only listed cells are neighbours; a cell outside the list does not exist.
    """
    n = x.size
    key = (x.astype(np.int64) << _SHIFT) | y.astype(np.int64)
    order = np.argsort(key)
    sorted_key = key[order]
    rows, cols = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            nkey = ((x + dx).astype(np.int64) << _SHIFT) | (y + dy).astype(np.int64)
            pos = np.clip(np.searchsorted(sorted_key, nkey), 0, n - 1)
            hit = (sorted_key[pos] == nkey) & (x + dx >= 0) & (y + dy >= 0)
            rows.append(np.flatnonzero(hit))
            cols.append(order[pos[hit]])
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sparse.csr_array((np.ones(r.size), (r, c)), shape=(n, n))


def hotspots(
    findings: gpd.GeoDataFrame,
    tiles: Sequence[Tile],
    *,
    cell_zoom: int,
    top_k: int | None = 10,
    kinds: Sequence[str] = FINDING_KINDS,
    weight: Literal["count", "area"] = "count",
) -> gpd.GeoDataFrame:
    """Cells where findings cluster, ranked by Getis-Ord Gi* (see :func:`gi_star`).

    Cells are the parents at ``cell_zoom`` of the AOI's work ``tiles`` (every
    cell, with or without findings, so the statistic sees the quiet ones). A
    finding of one of ``kinds`` belongs to the cell holding its representative
    point; findings outside every cell are ignored. The value per cell is the
    number of findings (``weight="count"``) or their summed ``area_m2``
    (``weight="area"``). Weights: queen adjacency (8 neighbours) plus the cell
    itself. Cells are ranked by ``gi_star`` descending, ties by ``n_findings``
    descending, then by ``y``, ``x``.

    Returns the ``top_k`` best cells (all when ``None``) in EPSG:4326 with
    ``rank`` (1 = strongest), ``z``, ``x``, ``y``, ``gi_star`` (z-score; the
    one-sided p-value is ``scipy.stats.norm.sf(gi_star)``), ``n_findings``,
    ``geometry`` (the cell's lng/lat box).
    """
    if weight not in ("count", "area"):
        raise ConfigError(f"weight must be 'count' or 'area', got {weight!r}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1 or None, got {top_k}")
    unknown = set(kinds) - set(FINDING_KINDS)
    if unknown:
        raise ConfigError(f"unknown finding kind(s) {sorted(unknown)}; use {FINDING_KINDS}")
    if "kind" not in findings.columns:
        raise VectorDataError("findings: column 'kind' is missing")
    if weight == "area" and "area_m2" not in findings.columns:
        raise VectorDataError("findings: column 'area_m2' is missing (needed for weight='area')")

    cells = sorted({parent(t, cell_zoom) for t in tiles}, key=lambda c: (c.y, c.x))
    cx = np.array([c.x for c in cells], dtype=np.int64)
    cy = np.array([c.y for c in cells], dtype=np.int64)
    n = cx.size

    sel = findings[findings["kind"].isin(list(kinds))]
    fx, fy = finding_tiles(sel, cell_zoom)
    key = (cx << _SHIFT) | cy
    fkey = (fx << _SHIFT) | fy
    order = np.argsort(key)
    pos = np.clip(np.searchsorted(key[order], fkey), 0, max(n - 1, 0))
    inside = (key[order][pos] == fkey) if n else np.zeros(fkey.size, bool)
    cell_of = order[pos[inside]]
    if (~inside).any():
        log.debug("hotspots: %d finding(s) outside the AOI cells ignored", int((~inside).sum()))
    counts = np.bincount(cell_of, minlength=n).astype(np.int64)
    areas = np.zeros(n)
    if "area_m2" in sel.columns:
        areas = np.bincount(
            cell_of,
            weights=np.nan_to_num(sel["area_m2"].to_numpy(np.float64)[inside]),
            minlength=n,
        )
    values = counts.astype(np.float64) if weight == "count" else areas
    gi = gi_star(values, queen_weights(cx, cy)) if n else np.zeros(0)

    # rank on gi rounded to 1e-9 so float noise does not break ties by count
    rank_order = np.lexsort((cx, cy, -counts, -np.round(gi, 9)))
    if top_k is not None:
        rank_order = rank_order[:top_k]
    boxes = [mercantile.bounds(int(cx[i]), int(cy[i]), cell_zoom) for i in rank_order]
    geoms = (
        shapely.box(
            [b.west for b in boxes],
            [b.south for b in boxes],
            [b.east for b in boxes],
            [b.north for b in boxes],
        )
        if boxes
        else np.empty(0, dtype=object)
    )
    return gpd.GeoDataFrame(
        {
            "rank": np.arange(1, rank_order.size + 1, dtype=np.int64),
            "z": np.full(rank_order.size, cell_zoom, dtype=np.int64),
            "x": cx[rank_order],
            "y": cy[rank_order],
            "gi_star": gi[rank_order],
            "n_findings": counts[rank_order],
        },
        geometry=gpd.GeoSeries(geoms, crs="EPSG:4326"),
        crs="EPSG:4326",
    )
