"""Significant Getis-Ord Gi* hotspots over cells (PySAL, FDR-corrected)."""

from __future__ import annotations

import math

import geopandas as gpd
import mercantile
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.errors import ConfigError, InvalidTileError, VectorDataError
from pipeline.score.hotspots import hotspots, local_gi_star, queen_weights
from pipeline.tiles import Shard, Tile, shard_tiles, xy_bounds

CELL_Z = 14
WORK_Z = 16  # 4 x 4 work tiles per cell


def aoi_tiles(x0, y0, nx, ny):
    """Work tiles of an nx x ny block of cells with top-left cell (x0, y0)."""
    return [
        t
        for cy in range(y0, y0 + ny)
        for cx in range(x0, x0 + nx)
        for t in shard_tiles(Shard(Tile(cx, cy, CELL_Z), WORK_Z))
    ]


def findings_at(cells_counts, kind="missing_in_opendata"):
    """``count`` small findings inside each cell ``(x, y)``."""
    rows = []
    for (cx, cy), count in cells_counts.items():
        left, bottom, right, top = xy_bounds(Tile(cx, cy, CELL_Z))
        step = (right - left) / (count + 1)
        for k in range(count):
            x = left + step * (k + 1)
            y = (bottom + top) / 2
            geom = shapely.box(x, y, x + 5, y + 5)
            rows.append({"kind": kind, "area_m2": 50.0, "geometry": geom})
    if not rows:
        return gpd.GeoDataFrame({"kind": [], "area_m2": []}, geometry=[], crs="EPSG:3857")
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:3857")


def test_pysal_gi_star_is_the_by_hand_statistic_on_a_row_of_four():
    # values 4, 0, 0, 0 in a row; queen weights with self: W = 2, 3, 3, 2
    # mean 1, S = sqrt(16 / 4 - 1) = sqrt(3)
    # cell 0: (4 - 1*2) / (sqrt3 * sqrt((4*2 - 4) / 3)) = 2 / 2 = 1
    # cell 1: (4 - 3) / (sqrt3 * sqrt((12 - 9) / 3)) = 1 / sqrt3
    # cell 2: (0 - 3) / sqrt3 = -sqrt3;  cell 3: (0 - 2) / 2 = -1
    x = np.array([0, 1, 2, 3])
    w = queen_weights(x, np.zeros(4, np.int64))
    np.testing.assert_array_equal(w.toarray().sum(axis=1), [2, 3, 3, 2])
    z, p = local_gi_star(np.array([4.0, 0, 0, 0]), w, permutations=999, seed=0)
    np.testing.assert_allclose(z, [1.0, 1 / math.sqrt(3), -math.sqrt(3), -1.0])
    assert ((p > 0) & (p <= 1)).all()


def test_gi_star_undefined_cases_and_seeded_p_values():
    w = queen_weights(np.array([0, 1, 2]), np.zeros(3, np.int64))
    z, p = local_gi_star(np.full(3, 0.1), w, permutations=99, seed=0)
    assert z.tolist() == [0.0, 0.0, 0.0] and p.tolist() == [1.0, 1.0, 1.0]
    z, p = local_gi_star(
        np.array([5.0]), queen_weights(np.array([0]), np.array([0])), permutations=99, seed=0
    )
    assert z.tolist() == [0.0] and p.tolist() == [1.0]
    xs, ys = np.meshgrid(np.arange(8), np.arange(8))
    values = np.random.default_rng(3).poisson(2.0, 64).astype(float)
    w = queen_weights(xs.ravel(), ys.ravel())
    first = local_gi_star(values, w, permutations=199, seed=7)
    again = local_gi_star(values, w, permutations=199, seed=7)
    np.testing.assert_array_equal(first[1], again[1])  # the same p-values on any machine


def test_queen_weights_on_a_grid_with_a_hole():
    xs, ys = np.meshgrid(np.arange(3), np.arange(3))
    keep = ~((xs == 1) & (ys == 1)).ravel()  # the centre cell does not exist
    w = queen_weights(xs.ravel()[keep], ys.ravel()[keep]).toarray()
    # corner (0,0): itself, (1,0), (0,1); edge (1,0): itself, (0,0), (2,0), (0,1), (2,1)
    assert w.sum(axis=1).tolist() == [3, 5, 3, 5, 5, 3, 5, 3]
    np.testing.assert_array_equal(w, w.T)


def test_a_cluster_is_the_only_significant_hotspot():
    x0, y0 = 8000, 5000
    tiles = aoi_tiles(x0, y0, 8, 8)
    cluster = {(x0 + i, y0 + j): 6 for i in range(3) for j in range(3)}
    scattered = {(x0 + 6, y0 + 2): 1, (x0 + 2, y0 + 7): 1, (x0 + 7, y0 + 6): 1}
    counts = {**cluster, **scattered}
    out = hotspots(findings_at(counts), tiles, cell_zoom=CELL_Z)
    assert len(out) >= 1
    assert set(zip(out["x"], out["y"], strict=True)) <= set(cluster)  # nothing outside it
    assert (x0 + 1, y0 + 1) in set(zip(out["x"], out["y"], strict=True))  # its centre
    assert out["rank"].tolist() == list(range(1, len(out) + 1))
    assert (np.diff(out["gi_star"]) <= 1e-12).all()
    assert (out["gi_star"] > 0).all() and (out["q_value"] <= 0.05).all()
    assert (out["p_value"] <= out["q_value"]).all()  # BH only raises p-values


def test_uniform_or_random_findings_give_no_hotspot():
    x0, y0 = 8000, 5000
    tiles = aoi_tiles(x0, y0, 6, 6)
    counts = {(x0 + i, y0 + j): 2 for i in range(6) for j in range(6)}
    assert hotspots(findings_at(counts), tiles, cell_zoom=CELL_Z).empty
    counts[(x0 + 2, y0 + 2)] = 3  # one extra finding is not a cluster
    assert hotspots(findings_at(counts), tiles, cell_zoom=CELL_Z).empty
    rng = np.random.default_rng(11)  # spatially random counts: the FDR keeps them out
    noise = {(x0 + i, y0 + j): int(rng.poisson(2)) for i in range(6) for j in range(6)}
    assert hotspots(findings_at(noise), tiles, cell_zoom=CELL_Z).empty


def test_output_cells_clipped_to_the_area_kinds_and_weights():
    x0, y0 = 8000, 5000
    tiles = aoi_tiles(x0, y0, 6, 6)
    f = findings_at({(x0 + i, y0 + j): 5 for i in range(2) for j in range(2)})
    f2 = findings_at(
        {(x0 + 4 + i, y0 + 4 + j): 9 for i in range(2) for j in range(2)},
        kind="unsupported_by_imagery",
    )
    both = pd.concat([f, f2], ignore_index=True)
    out = hotspots(both, tiles, cell_zoom=CELL_Z, top_k=1, kinds=("missing_in_opendata",))
    assert out.crs == "EPSG:4326"
    row = out.iloc[0]
    assert row["z"] == CELL_Z and (row["x"], row["y"]) in {
        (x0 + i, y0 + j) for i in range(2) for j in range(2)
    }
    b = mercantile.bounds(int(row["x"]), int(row["y"]), CELL_Z)
    cell = shapely.box(b.west, b.south, b.east, b.north)
    assert row.geometry.geom_type == "MultiPolygon"
    assert row.geometry.equals_exact(shapely.MultiPolygon([cell]), 1e-9)
    assert list(out.columns) == [
        "rank",
        "z",
        "x",
        "y",
        "gi_star",
        "p_value",
        "q_value",
        "n_findings",
        "geometry",
    ]
    by_area = hotspots(both, tiles, cell_zoom=CELL_Z, top_k=1, weight="area")
    assert by_area.iloc[0]["x"] >= x0 + 4  # 9 findings of 50 m2 outweigh 5
    # clipped to an AOI that covers half of the cell
    half = shapely.box(b.west, b.south, (b.west + b.east) / 2, b.north)
    area = shapely.union(half, shapely.box(*mercantile.bounds(x0 + 5, y0 + 5, CELL_Z)))
    clipped = hotspots(both, tiles, cell_zoom=CELL_Z, kinds=("missing_in_opendata",), area=area)
    mine = clipped[(clipped["x"] == row["x"]) & (clipped["y"] == row["y"])].geometry.iloc[0]
    assert mine.area == pytest.approx(cell.area / 2)


def test_no_findings_and_bad_input():
    tiles = aoi_tiles(8000, 5000, 2, 2)
    assert hotspots(findings_at({}), tiles, cell_zoom=CELL_Z).empty
    with pytest.raises(ConfigError, match="unknown finding kind"):
        hotspots(findings_at({}), tiles, cell_zoom=CELL_Z, kinds=("ghost",))
    with pytest.raises(ConfigError, match="top_k"):
        hotspots(findings_at({}), tiles, cell_zoom=CELL_Z, top_k=0)
    with pytest.raises(ConfigError, match="alpha"):
        hotspots(findings_at({}), tiles, cell_zoom=CELL_Z, alpha=1.5)
    with pytest.raises(ConfigError, match="permutations"):
        hotspots(findings_at({}), tiles, cell_zoom=CELL_Z, permutations=10)
    with pytest.raises(InvalidTileError, match="parent zoom"):
        hotspots(findings_at({}), tiles, cell_zoom=WORK_Z + 1)
    with pytest.raises(VectorDataError, match="kind"):
        hotspots(gpd.GeoDataFrame(geometry=[]), tiles, cell_zoom=CELL_Z)
