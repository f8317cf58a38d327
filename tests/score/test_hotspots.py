"""Significant Getis-Ord Gi* hotspots over cells (PySAL, FDR-corrected)."""

from __future__ import annotations

import math

import geopandas as gpd
import mercantile
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.errors import ConfigError, VectorDataError
from pipeline.score.hotspots import cells_of, hotspots, local_gi_star, queen_weights
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
    z, p = local_gi_star(np.array([4.0, 0, 0, 0]), w, permutations=99_999, seed=0)
    np.testing.assert_allclose(z, [1.0, 1 / math.sqrt(3), -math.sqrt(3), -1.0])
    # total randomization: cell 0 sums 2 of {4, 0, 0, 0} drawn without replacement,
    # >= 4 unless both are zeros: 1 - C(3,2)/C(4,2) = 1/2; cell 1 sums 3: 1 - 1/4;
    # cells 2 and 3 (sum 0) tie with every draw: p = 1
    np.testing.assert_allclose(p, [0.5, 0.75, 1.0, 1.0], atol=0.01)


def test_a_lone_dense_cell_is_not_a_cluster():
    # one interior cell holds 8 of 12 findings: a draw of 9 cells sums to >= 8 exactly
    # when it holds that cell, 1 - C(99, 9) / C(100, 9) = 9 / 100 of the time
    xs, ys = np.meshgrid(np.arange(10), np.arange(10))
    values = np.zeros(100)
    values[44] = 8
    values[[3, 27, 61, 90]] = 1
    w = queen_weights(xs.ravel(), ys.ravel())
    z, p = local_gi_star(values, w, permutations=99_999, seed=0)
    assert z[44] == z.max() and p[44] == pytest.approx(0.09, abs=0.005)
    assert p[0] == 1.0  # a quiet corner ties with every draw


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
    # clipped to an AOI that covers half of the cell (and the other cells whole)
    everything = shapely.box(
        *mercantile.bounds(x0, y0 + 5, CELL_Z)[:2], *mercantile.bounds(x0 + 5, y0, CELL_Z)[2:]
    )
    area = everything.difference(shapely.box((b.west + b.east) / 2, b.south, b.east, b.north))
    clipped = hotspots(both, tiles, cell_zoom=CELL_Z, kinds=("missing_in_opendata",), area=area)
    mine = clipped[(clipped["x"] == row["x"]) & (clipped["y"] == row["y"])].geometry.iloc[0]
    assert mine.area == pytest.approx(cell.area / 2)


def test_cells_finer_than_the_work_tiles_and_only_over_the_area():
    x0, y0 = 8000, 5000
    tiles = aoi_tiles(x0, y0, 2, 2)  # 8 x 8 work tiles at WORK_Z
    cx, cy = cells_of(tiles, WORK_Z + 1)
    assert cx.size == 16 * 16 and (cx // 4 // 2 - x0 >= 0).all()
    assert cells_of(tiles, CELL_Z)[0].tolist() == [x0, x0 + 1, x0, x0 + 1]
    west, south, east, north = mercantile.bounds(x0, y0, CELL_Z)
    corner = shapely.box(west, south, east, north)  # one of the four cells
    cx, cy = cells_of(tiles, CELL_Z, corner.buffer(-1e-9))
    assert list(zip(cx, cy, strict=True)) == [(x0, y0)]
    # a cluster of findings in cells half the side of the work tiles
    f = findings_at({(x0, y0): 12})
    out = hotspots(f, tiles, cell_zoom=WORK_Z + 1)
    assert len(out) >= 1 and (out["z"] == WORK_Z + 1).all()
    for x, y in zip(out["x"], out["y"], strict=True):
        assert mercantile.parent(mercantile.Tile(int(x), int(y), WORK_Z + 1), zoom=CELL_Z) == (
            mercantile.Tile(x0, y0, CELL_Z)
        )


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
    with pytest.raises(VectorDataError, match="kind"):
        hotspots(gpd.GeoDataFrame(geometry=[]), tiles, cell_zoom=CELL_Z)
