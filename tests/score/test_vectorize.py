"""Prediction mosaics to polygons, and merging buildings cut by shard edges."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from affine import Affine

from pipeline.errors import ConfigError, VectorDataError
from pipeline.score.vectorize import merge_across_edges, vectorize_mask
from pipeline.tiles import Shard, Tile, shard_transform

# 0.5 CRS units per pixel, origin (1000, 2000)
T = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)


def _prob():
    prob = np.zeros((40, 40), np.float32)
    prob[2:8, 2:12] = 0.8  # building A: 6 x 10 px
    prob[2:8, 2:7] = 1.0  # half of it surer: mean (30 * 1.0 + 30 * 0.8) / 60 = 0.9
    prob[20:30, 20:25] = 0.6  # building B: 10 x 5 px
    prob[35:37, 35:36] = 0.9  # speck: 2 px
    prob[12:14, 30:40] = 0.45  # below threshold
    return prob


def test_vectorize_polygons_confidence_and_area():
    gdf = vectorize_mask(_prob(), T)
    assert gdf.crs == "EPSG:3857"
    assert len(gdf) == 2  # speck and sub-threshold strip dropped
    gdf = gdf.sort_values("area_px", ascending=False).reset_index(drop=True)
    assert gdf["area_px"].tolist() == [60, 50]
    assert gdf["confidence"].tolist() == pytest.approx([0.9, 0.6])
    # A: pixel rows 2..8, cols 2..12 -> x 1001..1006, y 1996..1999
    assert gdf.geometry[0].equals(shapely.box(1001, 1996, 1006, 1999))
    assert gdf.geometry[0].area == pytest.approx(60 * 0.25)
    assert shapely.is_valid(gdf.geometry.values).all()


def test_min_area_and_crs_kwargs():
    gdf = vectorize_mask(_prob(), T, min_area_px=1, crs=None)
    assert gdf.crs is None
    assert sorted(gdf["area_px"]) == [2, 50, 60]


def test_valid_mask_and_uint8_probabilities():
    prob = (_prob() * 255).round().astype(np.uint8)
    valid = np.ones(prob.shape, bool)
    valid[:, 21:] = False  # cuts building B to 10 x 1 px, under min_area_px
    gdf = vectorize_mask(prob, T, valid=valid)
    assert len(gdf) == 1
    assert gdf["confidence"].iloc[0] == pytest.approx(0.9, abs=1 / 255)


def test_four_connectivity_keeps_corner_touching_squares_apart():
    prob = np.zeros((20, 20), np.float32)
    prob[0:5, 0:5] = 1.0
    prob[5:10, 5:10] = 1.0
    gdf = vectorize_mask(prob, T, min_area_px=1)
    assert len(gdf) == 2
    assert shapely.is_valid(gdf.geometry.values).all()


def test_simplify_removes_staircase_jitter():
    prob = np.zeros((30, 30), np.float32)
    prob[5:25, 5:25] = 1.0
    prob[5, 10] = 0.0  # one-pixel notch on the top edge
    raw = vectorize_mask(prob, T, simplify_tolerance_px=0)
    simple = vectorize_mask(prob, T, simplify_tolerance_px=1.5)
    assert shapely.get_num_coordinates(raw.geometry.iloc[0]) > 5
    assert shapely.get_num_coordinates(simple.geometry.iloc[0]) == 5


def test_empty_prediction_gives_empty_frame():
    gdf = vectorize_mask(np.zeros((16, 16), np.float32), T)
    assert len(gdf) == 0
    assert list(gdf.columns) == ["confidence", "area_px", "geometry"]
    assert gdf.crs == "EPSG:3857"


def test_vectorize_rejects_bad_input():
    with pytest.raises(ConfigError, match="2-D"):
        vectorize_mask(np.zeros((2, 4, 4)), T)
    with pytest.raises(ConfigError, match="valid mask"):
        vectorize_mask(np.zeros((4, 4)), T, valid=np.ones((2, 2), bool))
    with pytest.raises(ConfigError, match="min_area_px"):
        vectorize_mask(np.zeros((4, 4)), T, min_area_px=0)


def test_building_across_shard_edge_is_merged():
    # two neighbouring z17 shards of z18 tiles; their shared edge differs by float noise
    west, east = Shard(Tile(70000, 40000, 17), 18), Shard(Tile(70001, 40000, 17), 18)
    size = west.size
    a = np.zeros((size, size), np.float32)
    b = np.zeros((size, size), np.float32)
    a[100:120, size - 12 :] = 0.9  # 20 x 12 px on the west shard
    b[100:120, :8] = 0.5  # 20 x 8 px on the east shard
    b[300:310, 0:10] = 0.7  # another building, not touching
    parts = pd.concat(
        [vectorize_mask(a, shard_transform(west)), vectorize_mask(b, shard_transform(east))],
        ignore_index=True,
    )
    assert len(parts) == 3
    merged = merge_across_edges(parts)
    assert len(merged) == 2
    big = merged.loc[merged["area_px"].idxmax()]
    assert big.geometry.geom_type == "Polygon"
    assert big["area_px"] == 400
    res = shard_transform(west).a
    assert big.geometry.area == pytest.approx(400 * res * res, rel=1e-6)
    # area-weighted: (240 * 0.9 + 160 * 0.5) / 400
    assert big["confidence"] == pytest.approx(0.74, rel=1e-6)
    assert merged.crs == "EPSG:3857"


def test_merge_keeps_corner_touching_and_separate_polygons():
    parts = gpd.GeoDataFrame(
        {"confidence": [0.9, 0.8, 0.7, 0.6, 0.5]},
        geometry=[
            shapely.box(0, 0, 10, 10),
            shapely.box(10, 10, 20, 20),  # touches the first at one corner only
            shapely.box(30, 0, 40, 10),
            shapely.box(40, 2, 45, 8),  # shares an edge stretch with the third
            shapely.box(10, -4, 14, 0.5),  # shares only 0.5 m with the first
        ],
        crs="EPSG:3857",
    )
    merged = merge_across_edges(parts)
    assert len(merged) == 4
    assert len(merge_across_edges(parts, min_shared=0.4)) == 3
    joined = merged[merged.geometry.area == 130].iloc[0]
    expected = shapely.union_all([shapely.box(30, 0, 40, 10), shapely.box(40, 2, 45, 8)])
    assert joined.geometry.equals(expected)
    assert joined["confidence"] == pytest.approx((100 * 0.7 + 30 * 0.6) / 130)


def test_merge_overlapping_parts_and_bad_input():
    parts = gpd.GeoDataFrame(
        {"confidence": [1.0, 0.5]},
        geometry=[shapely.box(0, 0, 10, 10), shapely.box(5, 0, 15, 10)],
        crs="EPSG:3857",
    )
    merged = merge_across_edges(parts)
    assert len(merged) == 1 and merged.geometry.iloc[0].area == pytest.approx(150)
    with pytest.raises(ConfigError, match="min_shared"):
        merge_across_edges(parts, tolerance=0)
    bad = gpd.GeoDataFrame({"confidence": [1.0, 0.5]}, geometry=[shapely.box(0, 0, 1, 1), None])
    with pytest.raises(VectorDataError, match="empty or missing"):
        merge_across_edges(bad)
