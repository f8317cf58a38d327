"""Rasterizing footprints into shard label mosaics."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import Transformer

from pipeline.errors import VectorDataError
from pipeline.rasterize import prepare_footprints, rasterize_ids, rasterize_shard, repair
from pipeline.sources import VectorSpec, open_vector
from pipeline.tiles import Shard, Tile, shard_transform, xy_bounds

SHARD = Shard(Tile(96674, 55065, 17), 19)  # 1024 px, Lalitpur
OSM = Path(__file__).resolve().parent / "data" / "oam-lalitpur" / "buildings_osm.geojson"
_TO_4326 = Transformer.from_crs(3857, 4326, always_xy=True)


def _px_polygon(coords: list[tuple[float, float]], shard: Shard = SHARD) -> shapely.Polygon:
    """A WGS84 polygon from (col, row) pixel coordinates of the shard mosaic."""
    t = shard_transform(shard)
    return shapely.Polygon([_TO_4326.transform(*(t @ (c, r))) for c, r in coords])


def _frame(geoms: list, ids: list[str] | None = None) -> gpd.GeoDataFrame:
    ids = ids or [str(i) for i in range(len(geoms))]
    return gpd.GeoDataFrame({"feature_id": ids}, geometry=geoms, crs=4326)


def _rect(c0: float, r0: float, c1: float, r1: float) -> shapely.Polygon:
    return _px_polygon([(c0, r0), (c1, r0), (c1, r1), (c0, r1)])


def test_known_rectangle_burns_exact_pixels() -> None:
    # edges a quarter pixel past pixel boundaries: centres of cols 10..109, rows 200..249
    result = rasterize_shard(_frame([_rect(10.25, 200.25, 110.25, 250.25)]), SHARD)
    assert result.labels.shape == (1024, 1024) and result.labels.dtype == np.uint8
    assert result.labels.sum() == 100 * 50 and set(np.unique(result.labels)) == {0, 1}
    assert result.labels[200:250, 10:110].all()
    assert (result.n_features, result.n_repaired) == (1, 0)


def test_pixel_centre_rule_and_features_outside() -> None:
    tiny = _rect(5.1, 5.1, 5.4, 5.4)  # inside one pixel, misses its centre
    outside = _rect(2000, 2000, 2100, 2100)  # another shard
    result = rasterize_shard(_frame([tiny, outside]), SHARD)
    assert result.labels.sum() == 0 and result.n_features == 1


def test_bow_tie_is_repaired_and_counted() -> None:
    bow_tie = _px_polygon([(400.25, 400.25), (600.25, 600.25), (600.25, 400.25), (400.25, 600.25)])
    assert not bow_tie.is_valid
    square = _rect(10.25, 10.25, 20.25, 20.25)
    result = rasterize_shard(_frame([bow_tie, square]), SHARD)
    assert (result.n_features, result.n_repaired) == (2, 1)
    burnt = result.labels[300:700, 300:700].sum()
    assert burnt == pytest.approx(2 * 200 * 100 / 2, rel=0.03)  # two triangles
    assert result.labels[500, 420] == 1 and result.labels[500, 580] == 1  # left / right
    assert result.labels[420, 500] == 0 and result.labels[580, 500] == 0  # between them

    prepared, stats = prepare_footprints(_frame([bow_tie, square, None]))
    assert (stats.n_input, stats.n_repaired, stats.n_dropped) == (3, 1, 1)
    assert prepared.crs.to_epsg() == 3857 and prepared.geometry.is_valid.all()
    again = rasterize_shard(prepared, SHARD)
    assert again.n_repaired == 0 and again.n_features == 2
    np.testing.assert_array_equal(again.labels, result.labels)


def test_repair_keeps_only_polygonal_parts() -> None:
    spike = shapely.Polygon([(0, 0), (2, 0), (2, 2), (0, 2), (0, 0), (-1, -1), (0, 0)])
    line_like = shapely.Polygon([(0, 0), (1, 1), (2, 2), (0, 0)])
    fixed, flags = repair(np.array([spike, line_like, shapely.box(0, 0, 1, 1), None], dtype=object))
    assert flags.tolist() == [True, True, False, False]
    assert fixed[0].geom_type == "Polygon" and fixed[0].area == pytest.approx(4)
    assert fixed[1].is_empty and fixed[3] is None


def test_real_osm_footprints() -> None:
    with open_vector(VectorSpec(path=str(OSM))) as src:
        gdf = src.read()
    result = rasterize_shard(gdf, SHARD)
    box = shapely.box(*xy_bounds(SHARD.tile))
    expected = gdf.to_crs(3857).intersects(box).sum()
    assert result.n_features == expected > 10
    # every burnt pixel centre is inside some footprint
    rows, cols = np.nonzero(result.labels)
    xs, ys = shard_transform(SHARD) @ (cols + 0.5, rows + 0.5)
    inside = shapely.union_all(gdf.to_crs(3857).geometry.values)
    assert shapely.contains_xy(inside, xs, ys).all()
    # burnt area ~ footprint area within the shard
    area_px = inside.intersection(box).area / shard_transform(SHARD).a ** 2
    assert result.labels.sum() == pytest.approx(area_px, rel=0.05)
    prepared, _ = prepare_footprints(gdf)
    np.testing.assert_array_equal(rasterize_shard(prepared, SHARD).labels, result.labels)


def test_empty_and_crs_less_inputs() -> None:
    empty = rasterize_shard(_frame([]), SHARD)
    assert empty.labels.shape == (1024, 1024) and empty.labels.sum() == 0 and empty.n_features == 0
    no_crs = gpd.GeoDataFrame({"feature_id": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)])
    with pytest.raises(VectorDataError, match="footprints have no CRS"):
        rasterize_shard(no_crs, SHARD)


# --- which footprint covers each pixel ----------------------------------------------------


def test_rasterize_ids_burns_positions_plus_one() -> None:
    a = _rect(10.25, 200.25, 110.25, 250.25)  # centres of cols 10..109, rows 200..249
    outside = _rect(2000, 2000, 2100, 2100)  # another shard
    b = _rect(500.25, 500.25, 520.25, 510.25)  # cols 500..519, rows 500..509
    frame = _frame([a, outside, b], ["a", "out", "b"]).set_index(pd.Index([7, 8, 9]))
    idx, raster = rasterize_ids(frame, SHARD)
    assert idx.tolist() == [0, 2]  # positions in the frame, not its index labels
    assert raster.shape == (1024, 1024) and raster.dtype == np.int32
    assert set(np.unique(raster)) == {0, 1, 2}
    assert (raster == 1).sum() == 100 * 50 and raster[200:250, 10:110].min() == 1
    assert (raster == 2).sum() == 20 * 10 and raster[500:510, 500:520].min() == 2
    assert frame["feature_id"].to_numpy()[idx].tolist() == ["a", "b"]


def test_rasterize_ids_later_footprint_wins_where_two_overlap() -> None:
    first = _rect(100.25, 100.25, 200.25, 200.25)
    second = _rect(150.25, 150.25, 250.25, 250.25)
    _, raster = rasterize_ids(_frame([first, second]), SHARD)
    assert raster[120, 120] == 1 and raster[175, 175] == 2 and raster[240, 240] == 2
    assert (raster == 1).sum() == 100 * 100 - 50 * 50
    assert (raster == 2).sum() == 100 * 100


def test_rasterize_ids_agrees_with_the_label_mosaic_on_real_footprints() -> None:
    with open_vector(VectorSpec(path=str(OSM))) as src:
        gdf = src.read()
    prepared, _ = prepare_footprints(gdf)
    idx, raster = rasterize_ids(prepared, SHARD)
    labels = rasterize_shard(prepared, SHARD).labels
    np.testing.assert_array_equal(raster > 0, labels == 1)
    box = shapely.box(*xy_bounds(SHARD.tile))
    assert idx.tolist() == np.flatnonzero(prepared.intersects(box).to_numpy()).tolist()
    # WGS84 input gives the same answer as the prepared frame
    idx2, raster2 = rasterize_ids(gdf, SHARD)
    np.testing.assert_array_equal(idx2, idx)
    np.testing.assert_array_equal(raster2, raster)
    # a footprint wholly inside the shard covers about its area in pixels
    px_area = shard_transform(SHARD).a ** 2
    geoms = prepared.geometry.to_numpy()[idx]
    inside = np.flatnonzero(shapely.contains(box, geoms))
    assert inside.size >= 3
    counts = np.bincount(raster.ravel(), minlength=idx.size + 1)[1:]
    for k in inside[:10]:
        assert counts[k] == pytest.approx(geoms[k].area / px_area, rel=0.1, abs=30)


def test_rasterize_ids_of_nothing_over_the_shard() -> None:
    idx, raster = rasterize_ids(_frame([_rect(2000, 2000, 2100, 2100)]), SHARD)
    assert idx.size == 0 and raster.shape == (1024, 1024) and not raster.any()
    idx, raster = rasterize_ids(_frame([]), SHARD)
    assert idx.size == 0 and raster.dtype == np.int32 and not raster.any()
    no_crs = gpd.GeoDataFrame({"feature_id": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)])
    with pytest.raises(VectorDataError, match="footprints have no CRS"):
        rasterize_ids(no_crs, SHARD)
