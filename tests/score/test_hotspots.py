"""Getis-Ord Gi* hotspots over coarse cells."""

from __future__ import annotations

import math

import geopandas as gpd
import mercantile
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.errors import ConfigError, InvalidTileError, VectorDataError
from pipeline.score.hotspots import gi_star, hotspots, queen_weights
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


def test_gi_star_by_hand_on_a_row_of_four():
    # values 4, 0, 0, 0 in a row; queen weights with self: W = 2, 3, 3, 2
    # mean 1, S = sqrt(16 / 4 - 1) = sqrt(3)
    # cell 0: (4 - 1*2) / (sqrt3 * sqrt((4*2 - 4) / 3)) = 2 / 2 = 1
    # cell 1: (4 - 3) / (sqrt3 * sqrt((12 - 9) / 3)) = 1 / sqrt3
    # cell 2: (0 - 3) / sqrt3 = -sqrt3;  cell 3: (0 - 2) / 2 = -1
    x = np.array([0, 1, 2, 3])
    w = queen_weights(x, np.zeros(4, np.int64))
    np.testing.assert_array_equal(w.toarray().sum(axis=1), [2, 3, 3, 2])
    gi = gi_star(np.array([4.0, 0, 0, 0]), w)
    np.testing.assert_allclose(gi, [1.0, 1 / math.sqrt(3), -math.sqrt(3), -1.0])


def test_gi_star_undefined_cases_are_zero():
    w = queen_weights(np.array([0, 1, 2]), np.zeros(3, np.int64))
    # middle cell's neighbourhood spans all cells: n W - W^2 = 0
    # values 3, 0, 0: mean 1, S = sqrt(2); cell 0: (3 - 2) / (sqrt2 * 1) ; cell 2: -2 / sqrt2
    np.testing.assert_allclose(
        gi_star(np.array([3.0, 0, 0]), w), [1 / math.sqrt(2), 0.0, -math.sqrt(2)]
    )
    np.testing.assert_array_equal(gi_star(np.full(3, 0.1), w), 0.0)
    assert gi_star(np.array([5.0]), queen_weights(np.array([0]), np.array([0]))).tolist() == [0.0]


def test_queen_weights_on_a_grid_with_a_hole():
    xs, ys = np.meshgrid(np.arange(3), np.arange(3))
    keep = ~((xs == 1) & (ys == 1)).ravel()  # the centre cell does not exist
    w = queen_weights(xs.ravel()[keep], ys.ravel()[keep]).toarray()
    # corner (0,0): itself, (1,0), (0,1); edge (1,0): itself, (0,0), (2,0), (0,1), (2,1)
    assert w.sum(axis=1).tolist() == [3, 5, 3, 5, 5, 3, 5, 3]
    np.testing.assert_array_equal(w, w.T)


def test_cluster_in_one_corner_ranks_first():
    x0, y0 = 8000, 5000
    tiles = aoi_tiles(x0, y0, 6, 6)
    counts = {
        (x0, y0): 6,
        (x0 + 1, y0): 5,
        (x0, y0 + 1): 5,
        (x0 + 1, y0 + 1): 4,
        (x0 + 4, y0 + 3): 1,
        (x0 + 2, y0 + 5): 1,
    }
    out = hotspots(findings_at(counts), tiles, cell_zoom=CELL_Z, top_k=None)
    assert len(out) == 36  # every cell, with or without findings
    assert out["n_findings"].sum() == sum(counts.values())
    top = out.iloc[0]
    assert top["rank"] == 1
    assert (top["x"], top["y"]) in {(x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)}
    assert top["gi_star"] > 3.0  # p < 0.002
    assert out["rank"].tolist() == list(range(1, 37))
    assert (np.diff(out["gi_star"]) <= 1e-12).all()
    far = out[(out["x"] == x0 + 5) & (out["y"] == y0 + 5)].iloc[0]
    assert far["gi_star"] < 0


def test_uniform_findings_give_no_hotspot():
    x0, y0 = 8000, 5000
    tiles = aoi_tiles(x0, y0, 5, 5)
    counts = {(x0 + i, y0 + j): 2 for i in range(5) for j in range(5)}
    out = hotspots(findings_at(counts), tiles, cell_zoom=CELL_Z, top_k=3)
    assert len(out) == 3
    assert np.all(np.abs(out["gi_star"]) < 1e-9)
    # nearly uniform (one extra finding) still gives nothing significant
    counts[(x0 + 2, y0 + 2)] = 3
    out = hotspots(findings_at(counts), tiles, cell_zoom=CELL_Z, top_k=None)
    assert out["gi_star"].max() < 1.96


def test_output_cells_kinds_and_weights():
    x0, y0 = 8000, 5000
    tiles = aoi_tiles(x0, y0, 3, 3)
    f = findings_at({(x0, y0): 2})
    f2 = findings_at({(x0 + 2, y0 + 2): 3}, kind="unsupported_by_imagery")
    both = pd.concat([f, f2], ignore_index=True)
    out = hotspots(both, tiles, cell_zoom=CELL_Z, top_k=1, kinds=("missing_in_opendata",))
    assert out.crs == "EPSG:4326"
    row = out.iloc[0]
    assert (row["x"], row["y"], row["z"], row["n_findings"]) == (x0, y0, CELL_Z, 2)
    b = mercantile.bounds(x0, y0, CELL_Z)
    assert row.geometry.equals_exact(shapely.box(b.west, b.south, b.east, b.north), 1e-9)
    assert list(out.columns) == ["rank", "z", "x", "y", "gi_star", "n_findings", "geometry"]
    by_area = hotspots(both, tiles, cell_zoom=CELL_Z, top_k=1, weight="area")
    assert (by_area.iloc[0]["x"], by_area.iloc[0]["y"]) == (x0 + 2, y0 + 2)


def test_no_findings_and_bad_input():
    tiles = aoi_tiles(8000, 5000, 2, 2)
    out = hotspots(findings_at({}), tiles, cell_zoom=CELL_Z)
    assert len(out) == 4 and (out["gi_star"] == 0).all() and (out["n_findings"] == 0).all()
    with pytest.raises(ConfigError, match="unknown finding kind"):
        hotspots(findings_at({}), tiles, cell_zoom=CELL_Z, kinds=("ghost",))
    with pytest.raises(ConfigError, match="top_k"):
        hotspots(findings_at({}), tiles, cell_zoom=CELL_Z, top_k=0)
    with pytest.raises(InvalidTileError, match="parent zoom"):
        hotspots(findings_at({}), tiles, cell_zoom=WORK_Z + 1)
    with pytest.raises(VectorDataError, match="kind"):
        hotspots(gpd.GeoDataFrame(geometry=[]), tiles, cell_zoom=CELL_Z)
