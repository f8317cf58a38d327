"""Hotspots: cells where findings cluster more than chance explains.

Getis-Ord Gi* (PySAL's ``esda.G_Local``) over grid cells of the AOI, with
permutation p-values and a Benjamini-Hochberg false-discovery-rate correction:
only significant cells are hotspots, and each is clipped to the AOI.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from typing import Literal

import geopandas as gpd
import mercantile
import numpy as np
import shapely
from scipy import sparse
from scipy.stats import false_discovery_control
from shapely.geometry.base import BaseGeometry

from pipeline.errors import ConfigError, VectorDataError
from pipeline.geometries import as_multipolygon
from pipeline.score.aggregate import finding_tiles
from pipeline.score.match import FINDING_KINDS
from pipeline.tiles import Tile, parent

log = logging.getLogger(__name__)

_SHIFT = 32  # cell key = x << 32 | y


def local_gi_star(
    values: np.ndarray, weights: sparse.sparray, *, permutations: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Getis-Ord Gi* of ``values`` under binary ``weights`` (``w_ii`` included).

    Returns ``(z, p)``. ``z`` is PySAL's analytical z-score (``esda.G_Local``,
    ``star=True``; standard normal under no spatial association; 0 where undefined:
    all values equal, ``n < 3``). ``p`` is the upper-tail p-value of each cell's
    local sum under **total randomization** (Getis and Ord's null, under which that
    z-score's moments are derived): the values of all cells, the cell's own among
    them, shuffled over the map. A cell with ``k`` neighbours (itself included) is
    compared with the sums of ``k`` values drawn without replacement, ``permutations``
    draws per neighbourhood size, seeded (the same inputs give the same p-values on
    any machine); ties count against the cell; the smallest p-value is
    ``1 / (permutations + 1)``.

    esda's own permutation p-value holds the cell's value fixed and shuffles only its
    neighbours (conditional randomization, the null of Local Moran's I); Gi*'s sum
    includes the cell itself, and on the demo's findings the total null found the same
    hotspots with more cells significant.
    """
    from esda.getisord import G_Local
    from libpysal.weights import WSP

    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 3 or np.ptp(x) == 0:
        return np.zeros(n), np.ones(n)
    w = sparse.csr_array(weights, dtype=np.float64)
    w.setdiag(1)
    w.eliminate_zeros()
    local_sum = w @ x
    sizes = np.diff(w.indptr)
    no_self = w.copy()
    no_self.setdiag(0)  # G_Local adds the cell itself (star=True)
    no_self.eliminate_zeros()
    wsp = WSP(sparse.csr_matrix(no_self)).to_W(silence_warnings=True)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # islands (cells without neighbours) are allowed
        g = G_Local(x, wsp, transform="B", star=True, permutations=0)
    z = np.nan_to_num(np.asarray(g.Zs, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    p = np.ones(n)
    rng = np.random.default_rng(seed)
    for k in np.unique(sizes):
        cells = np.flatnonzero(sizes == k)
        if k >= n:  # the neighbourhood is the whole map: nothing to compare with
            continue
        null = _sums_of_draws(x, int(k), permutations, rng)
        observed = local_sum[cells]
        at_least = null.size - np.searchsorted(null, observed - 1e-9 * np.abs(observed))
        p[cells] = (at_least + 1) / (permutations + 1)
    return z, p


def _sums_of_draws(
    x: np.ndarray, k: int, draws: int, rng: np.random.Generator, chunk: int = 250_000
) -> np.ndarray:
    """Sorted sums of ``k`` values of ``x`` drawn without replacement, ``draws`` times."""
    n = x.size
    sums = np.empty(draws)
    done = 0
    while done < draws:
        m = min(chunk, draws - done)
        if n <= 64:
            picks = np.argsort(rng.random((m, n)), axis=1)[:, :k]
        else:  # rows with a repeated cell are drawn again (rare when k << n)
            picks = rng.integers(0, n, size=(m, k))
            while True:
                ordered = np.sort(picks, axis=1)
                repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
                if not repeated.any():
                    break
                picks[repeated] = rng.integers(0, n, size=(int(repeated.sum()), k))
        sums[done : done + m] = x[picks].sum(axis=1)
        done += m
    return np.sort(sums)


def permutations_for(n_cells: int, alpha: float) -> int:
    """Draws per neighbourhood size that let the strongest of ``n_cells`` pass the FDR test.

    Benjamini-Hochberg admits a lone cell at ``p <= alpha / n_cells``; the draws put
    the smallest p-value twenty times below that (at least 9,999, at most 10 million).
    """
    return int(min(max(9_999, math.ceil(20 * n_cells / alpha)), 10_000_000))


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


def cells_of(
    tiles: Sequence[Tile], cell_zoom: int, area: BaseGeometry | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of the cells at ``cell_zoom`` covering ``tiles`` (their parents, or
    their children at a deeper zoom), keeping those that overlap ``area`` when given;
    sorted by ``y``, then ``x``."""
    keys: set[tuple[int, int]] = set()
    for t in tiles:
        if cell_zoom <= t.z:
            c = parent(t, cell_zoom)
            keys.add((c.x, c.y))
        else:
            scale = 1 << (cell_zoom - t.z)
            keys.update(
                (t.x * scale + i, t.y * scale + j) for i in range(scale) for j in range(scale)
            )
    ordered = sorted(keys, key=lambda k: (k[1], k[0]))
    cx = np.array([k[0] for k in ordered], dtype=np.int64)
    cy = np.array([k[1] for k in ordered], dtype=np.int64)
    if area is None or cx.size == 0:
        return cx, cy
    boxes = [mercantile.bounds(int(x), int(y), cell_zoom) for x, y in zip(cx, cy, strict=True)]
    geoms = shapely.box(
        [b.west for b in boxes],
        [b.south for b in boxes],
        [b.east for b in boxes],
        [b.north for b in boxes],
    )
    overlap = shapely.area(shapely.intersection(geoms, area)) > 0
    return cx[overlap], cy[overlap]


def hotspots(
    findings: gpd.GeoDataFrame,
    tiles: Sequence[Tile],
    *,
    cell_zoom: int,
    area: BaseGeometry | None = None,
    alpha: float = 0.05,
    permutations: int | None = None,
    seed: int = 0,
    top_k: int | None = None,
    kinds: Sequence[str] = FINDING_KINDS,
    weight: Literal["count", "area"] = "count",
) -> gpd.GeoDataFrame:
    """Cells where findings cluster significantly: Getis-Ord Gi* hot spots after an FDR test.

    Cells are the tiles at ``cell_zoom`` under or over the AOI's work ``tiles`` that
    overlap ``area`` when given (every cell, with or without findings, so the
    statistic sees the quiet ones). A
    finding of one of ``kinds`` belongs to the cell holding its representative
    point; findings outside every cell are ignored. The value per cell is the
    number of findings (``weight="count"``) or their summed ``area_m2``
    (``weight="area"``). Weights: queen adjacency (8 neighbours) plus the cell
    itself. Each cell's Gi* is tested by ``permutations`` draws under total
    randomization (:func:`local_gi_star`; default :func:`permutations_for` the number
    of cells); the p-values of all cells are adjusted for the false
    discovery rate (Benjamini-Hochberg), and a cell is a hotspot when its Gi* is
    positive and its adjusted p-value (``q_value``) is at most ``alpha``.

    Returns the hotspots (at most ``top_k`` when given) by Gi* descending (ties:
    more findings first, then by ``y``, ``x``), in EPSG:4326: ``rank`` (1 =
    strongest), ``z``, ``x``, ``y`` (the cell), ``gi_star`` (z-score), ``p_value``,
    ``q_value``, ``n_findings``, ``geometry`` (the cell clipped to ``area`` when
    given, a MultiPolygon).
    """
    if weight not in ("count", "area"):
        raise ConfigError(f"weight must be 'count' or 'area', got {weight!r}")
    if top_k is not None and top_k < 1:
        raise ConfigError(f"top_k must be >= 1 or None, got {top_k}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if permutations is not None and permutations < 99:
        raise ConfigError(f"permutations must be >= 99 for a usable p-value, got {permutations}")
    unknown = set(kinds) - set(FINDING_KINDS)
    if unknown:
        raise ConfigError(f"unknown finding kind(s) {sorted(unknown)}; use {FINDING_KINDS}")
    if "kind" not in findings.columns:
        raise VectorDataError("findings: column 'kind' is missing")
    if weight == "area" and "area_m2" not in findings.columns:
        raise VectorDataError("findings: column 'area_m2' is missing (needed for weight='area')")

    cx, cy = cells_of(tiles, cell_zoom, area)
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
    draws = permutations if permutations is not None else permutations_for(n, alpha)
    gi, p = local_gi_star(values, queen_weights(cx, cy), permutations=draws, seed=seed)
    q = false_discovery_control(p, method="bh") if n else np.zeros(0)
    hot = np.flatnonzero((gi > 0) & (q <= alpha))

    # rank on gi rounded to 1e-9 so float noise does not break ties by count
    rank_order = hot[np.lexsort((cx[hot], cy[hot], -counts[hot], -np.round(gi[hot], 9)))]
    if top_k is not None:
        rank_order = rank_order[:top_k]
    boxes = [mercantile.bounds(int(cx[i]), int(cy[i]), cell_zoom) for i in rank_order]
    geoms = np.empty(len(boxes), dtype=object)
    if boxes:
        geoms[:] = list(
            shapely.box(
                [b.west for b in boxes],
                [b.south for b in boxes],
                [b.east for b in boxes],
                [b.north for b in boxes],
            )
        )
        if area is not None:
            geoms = shapely.intersection(geoms, area)
        geoms[:] = [as_multipolygon(g) for g in geoms]
    return gpd.GeoDataFrame(
        {
            "rank": np.arange(1, rank_order.size + 1, dtype=np.int64),
            "z": np.full(rank_order.size, cell_zoom, dtype=np.int64),
            "x": cx[rank_order],
            "y": cy[rank_order],
            "gi_star": gi[rank_order],
            "p_value": p[rank_order],
            "q_value": q[rank_order],
            "n_findings": counts[rank_order],
        },
        geometry=gpd.GeoSeries(geoms, crs="EPSG:4326"),
        crs="EPSG:4326",
    )
