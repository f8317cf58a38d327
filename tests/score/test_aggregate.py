"""AOI aggregates from a hand-made tile table and findings."""

from __future__ import annotations

import math

import geopandas as gpd
import mercantile
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import ConfigError, VectorDataError
from pipeline.score.aggregate import aoi_aggregates, finding_tiles, findings_per_tile, flag_tiles
from pipeline.tiles import Tile, xy_bounds

Z = 18
TILES = [Tile(1000, 2000, Z), Tile(1001, 2000, Z), Tile(1000, 2001, Z), Tile(1001, 2001, Z)]


def tile_table():
    return pd.DataFrame(
        {
            "x": [t.x for t in TILES],
            "y": [t.y for t in TILES],
            "z": Z,
            "valid": [65536, 65536, 65536, 0],
            "iou": [0.9, 0.6, 1.0, np.nan],
            "qod": [95.0, 70.0, 100.0, np.nan],
            "tp": [900, 600, 0, 0],
            "fp": [50, 200, 0, 0],
            "fn": [50, 200, 0, 0],
        }
    )


def finding_in(tile, kind, feature_id=None):
    left, bottom, right, top = xy_bounds(tile)
    cx, cy = (left + right) / 2, (bottom + top) / 2
    return {"kind": kind, "feature_id": feature_id, "geometry": shapely.box(cx, cy, cx + 5, cy + 5)}


def findings(*rows):
    return (
        gpd.GeoDataFrame(list(rows), geometry="geometry", crs="EPSG:3857")
        if rows
        else gpd.GeoDataFrame({"kind": []}, geometry=gpd.GeoSeries([]), crs="EPSG:3857")
    )


def test_aggregates_by_hand():
    f = findings(
        finding_in(TILES[0], "missing_in_opendata"),
        finding_in(TILES[0], "missing_in_opendata"),
        finding_in(TILES[2], "unsupported_by_imagery", "w1"),
        finding_in(TILES[1], "misaligned", "w2"),
    )
    agg = aoi_aggregates(tile_table(), f, n_predicted=10, n_opendata=8, n_matched=6)
    assert agg["n_tiles"] == 4 and agg["n_tiles_valid"] == 3
    assert agg["mean_iou"] == pytest.approx((0.9 + 0.6 + 1.0) / 3)
    assert agg["mean_qod"] == pytest.approx((95 + 70 + 100) / 3)
    assert agg["pixel_iou"] == pytest.approx(1500 / 2000)
    # tile 1 by QoD 70 < 80, tiles 0 and 2 by findings -> 3 of 3 valid tiles
    assert agg["n_flagged_tiles"] == 3 and agg["flagged_tile_share"] == 1.0
    assert agg["completeness"] == pytest.approx(6 / (6 + 2))
    assert agg["correctness"] == pytest.approx(1 - 1 / 8)
    assert agg["object_f1"] == pytest.approx(12 / 18)
    assert agg["n_findings"] == 4
    assert agg["findings_by_kind"] == {
        "missing_in_opendata": 2,
        "unsupported_by_imagery": 1,
        "misaligned": 1,
    }


def test_flags_by_qod_only_and_threshold():
    agg = aoi_aggregates(tile_table(), findings(), n_predicted=3, n_opendata=3, n_matched=3)
    assert agg["n_flagged_tiles"] == 1 and agg["flagged_tile_share"] == pytest.approx(1 / 3)
    assert agg["findings_by_kind"] == dict.fromkeys(
        ("missing_in_opendata", "unsupported_by_imagery", "misaligned"), 0
    )
    assert agg["completeness"] == 1.0 and agg["correctness"] == 1.0 and agg["object_f1"] == 1.0
    agg = aoi_aggregates(
        tile_table(), findings(), n_predicted=3, n_opendata=3, n_matched=3, qod_threshold=96.0
    )
    assert agg["n_flagged_tiles"] == 2


def test_findings_on_tiles_without_valid_pixels_or_outside_do_not_flag():
    table = tile_table()
    table["qod"] = [100.0, 100.0, 100.0, np.nan]
    f = findings(
        finding_in(TILES[3], "missing_in_opendata"),
        finding_in(Tile(5, 5, Z), "missing_in_opendata"),
    )
    agg = aoi_aggregates(table, f, n_predicted=2, n_opendata=0, n_matched=0)
    assert agg["n_flagged_tiles"] == 0
    assert agg["completeness"] == 0.0
    assert agg["correctness"] == 1.0  # no open-data building: nothing to be wrong about


def test_no_valid_tile():
    table = tile_table()
    table["valid"] = 0
    agg = aoi_aggregates(table, findings(), n_predicted=0, n_opendata=0, n_matched=0)
    assert math.isnan(agg["mean_iou"]) and math.isnan(agg["mean_qod"])
    assert agg["flagged_tile_share"] == 0.0


def test_db_style_tile_table_with_valid_px():
    # the tile_score table keeps valid tiles only, with the count in ``valid_px``
    table = tile_table().rename(columns={"valid": "valid_px"}).iloc[:3]
    f = findings(finding_in(TILES[0], "missing_in_opendata"))
    agg = aoi_aggregates(table, f, n_predicted=4, n_opendata=3, n_matched=3)
    assert agg["n_tiles_valid"] == 3 and agg["n_flagged_tiles"] == 2
    agg = aoi_aggregates(
        table.drop(columns="valid_px"), f, n_predicted=4, n_opendata=3, n_matched=3
    )
    assert agg["n_tiles_valid"] == 3 and agg["mean_qod"] == pytest.approx(265 / 3)


def test_finding_tiles_agree_with_mercantile():
    lnglat = [(7.4, 43.7), (-122.42, 37.77), (151.2, -33.87)]
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(*zip(*lnglat, strict=True)), crs=4326)
    x, y = finding_tiles(pts, 17)
    for (lng, lat), tx, ty in zip(lnglat, x, y, strict=True):
        t = mercantile.tile(lng, lat, 17)
        assert (tx, ty) == (t.x, t.y)


def test_bad_inputs_raise():
    with pytest.raises(ConfigError, match="n_matched"):
        aoi_aggregates(tile_table(), findings(), n_predicted=2, n_opendata=5, n_matched=3)
    with pytest.raises(ConfigError, match="lacks column"):
        aoi_aggregates(
            tile_table().drop(columns="qod"), findings(), n_predicted=0, n_opendata=0, n_matched=0
        )
    with pytest.raises(VectorDataError, match="kind"):
        aoi_aggregates(
            tile_table(), gpd.GeoDataFrame(geometry=[]), n_predicted=0, n_opendata=0, n_matched=0
        )
    with pytest.raises(ConfigError, match="exceed n_opendata"):
        aoi_aggregates(
            tile_table(),
            findings(finding_in(TILES[0], "unsupported_by_imagery", "w")),
            n_predicted=0,
            n_opendata=0,
            n_matched=0,
        )
    mixed = tile_table()
    mixed.loc[0, "z"] = 17
    with pytest.raises(ConfigError, match="mixes zooms"):
        aoi_aggregates(mixed, findings(), n_predicted=0, n_opendata=0, n_matched=0)


# --- the flagged-tile rule and findings per tile -----------------------------------------


def test_flag_tiles_by_hand():
    qod = np.array([90.0, 70.0, 90.0, np.nan, np.nan, 80.0, 10.0])
    n_findings = np.array([0, 0, 2, 5, 0, 0, 3])
    valid = np.array([True, True, True, True, True, True, False])
    flagged = flag_tiles(qod, n_findings, valid, 80.0)
    # low QoD, a finding, a finding on a tile without a QoD; never a tile without pixels;
    # a QoD equal to the threshold is not below it
    assert flagged.tolist() == [False, True, True, True, False, False, False]
    assert flagged.dtype == np.bool_
    assert flag_tiles([90.0], [1], [True], 80.0).tolist() == [True]  # lists are fine
    series = flag_tiles(pd.Series([70.0]), pd.Series([0]), pd.Series([1]) > 0, 80.0)
    assert series.tolist() == [True]


@given(
    st.lists(
        st.tuples(
            st.one_of(st.floats(0, 100), st.just(float("nan"))),
            st.integers(0, 3),
            st.booleans(),
        ),
        max_size=30,
    ),
    st.floats(0, 100),
)
def test_flag_tiles_is_the_documented_rule(tiles, threshold):
    qod = np.array([t[0] for t in tiles], dtype=float)
    n = np.array([t[1] for t in tiles], dtype=int)
    valid = np.array([t[2] for t in tiles], dtype=bool)
    flagged = flag_tiles(qod, n, valid, threshold)
    assert flagged.shape == (len(tiles),)
    for (q, k, v), f in zip(tiles, flagged, strict=True):
        assert bool(f) == (v and ((not math.isnan(q) and q < threshold) or k > 0))


def _table(tiles):
    return pd.DataFrame({"x": [t.x for t in tiles], "y": [t.y for t in tiles], "z": Z})


def test_findings_per_tile_by_hand():
    f = findings(
        finding_in(TILES[0], "missing_in_opendata"),
        finding_in(TILES[0], "missing_in_opendata"),
        finding_in(TILES[2], "unsupported_by_imagery", "w1"),
        finding_in(Tile(5, 5, Z), "missing_in_opendata"),  # on no tile of the table
    )
    counts = findings_per_tile(_table(TILES), f)
    assert counts.tolist() == [2, 0, 1, 0] and counts.dtype == np.int64
    # the table's order is the result's order
    assert findings_per_tile(_table(TILES[::-1]), f).tolist() == [0, 1, 0, 2]
    # findings in another CRS are reprojected first
    assert findings_per_tile(_table(TILES), f.to_crs(4326)).tolist() == [2, 0, 1, 0]
    assert findings_per_tile(_table(TILES), findings()).tolist() == [0, 0, 0, 0]
    assert findings_per_tile(_table([]), f).tolist() == []


def test_a_finding_across_a_tile_edge_counts_once_where_its_point_on_surface_is():
    left, bottom, right, top = xy_bounds(TILES[0])
    # mostly in tile 1 (east of tile 0), a sliver in tile 0
    wide = shapely.box(right - 2, (bottom + top) / 2, right + 50, (bottom + top) / 2 + 5)
    f = gpd.GeoDataFrame({"kind": ["misaligned"]}, geometry=[wide], crs="EPSG:3857")
    assert findings_per_tile(_table(TILES), f).tolist() == [0, 1, 0, 0]


@st.composite
def tile_blocks(draw):
    zoom = draw(st.integers(1, 24))
    n = 2**zoom
    side = min(n, 4)
    x0 = draw(st.integers(0, n - side))
    y0 = draw(st.integers(0, n - side))
    block = [Tile(x0 + c, y0 + r, zoom) for r in range(side) for c in range(side)]
    table = draw(st.lists(st.sampled_from(block), unique=True, max_size=len(block)))
    spots = draw(
        st.lists(
            st.tuples(st.sampled_from(block), st.floats(0.05, 0.95), st.floats(0.05, 0.95)),
            max_size=20,
        )
    )
    return zoom, table, spots


@given(tile_blocks())
def test_findings_per_tile_counts_what_finding_tiles_assigns(block):
    zoom, table_tiles, spots = block
    geoms = []
    for tile, fx, fy in spots:
        left, bottom, right, top = xy_bounds(tile)
        cx, cy = left + fx * (right - left), top - fy * (top - bottom)
        r = (right - left) * 0.01
        geoms.append(shapely.box(cx - r, cy - r, cx + r, cy + r))
    f = gpd.GeoDataFrame({"kind": ["misaligned"] * len(geoms)}, geometry=geoms, crs="EPSG:3857")
    table = pd.DataFrame(
        {"x": [t.x for t in table_tiles], "y": [t.y for t in table_tiles], "z": zoom}
    )
    counts = findings_per_tile(table, f)
    expected = [sum(1 for s in spots if s[0] == t) for t in table_tiles]
    assert counts.tolist() == expected
    if len(f):
        fx, fy = finding_tiles(f, zoom)
        assert list(zip(fx.tolist(), fy.tolist(), strict=True)) == [(s[0].x, s[0].y) for s in spots]


def test_aggregates_flag_with_the_same_rule():
    table = tile_table()
    f = findings(finding_in(TILES[0], "missing_in_opendata"))
    agg = aoi_aggregates(table, f, n_predicted=1, n_opendata=0, n_matched=0, qod_threshold=75.0)
    rule = flag_tiles(
        table["qod"].to_numpy(), findings_per_tile(table, f), table["valid"].to_numpy() > 0, 75.0
    )
    assert agg["n_flagged_tiles"] == int(rule.sum()) == 2
    assert agg["flagged_tile_share"] == pytest.approx(rule.sum() / 3)


# --- completeness = n_matched / (n_matched + n_missing) -----------------------------------


def test_completeness_counts_missing_parts_not_predicted_polygons():
    # one predicted blob can hold several missing parts: more missing findings than
    # predicted polygons is fine
    f = findings(*(finding_in(TILES[0], "missing_in_opendata") for _ in range(3)))
    agg = aoi_aggregates(tile_table(), f, n_predicted=2, n_opendata=1, n_matched=1)
    assert agg["completeness"] == pytest.approx(1 / 4)
    assert agg["findings_by_kind"]["missing_in_opendata"] == 3


def test_completeness_without_matches_or_missing_parts_is_one():
    agg = aoi_aggregates(tile_table(), findings(), n_predicted=4, n_opendata=0, n_matched=0)
    assert agg["completeness"] == 1.0 and agg["object_f1"] == 0.0


def test_completeness_ignores_unsupported_and_misaligned_findings():
    f = findings(
        finding_in(TILES[0], "missing_in_opendata"),
        finding_in(TILES[1], "unsupported_by_imagery", "u"),
        finding_in(TILES[2], "misaligned", "m"),
    )
    agg = aoi_aggregates(tile_table(), f, n_predicted=5, n_opendata=6, n_matched=4)
    assert agg["completeness"] == pytest.approx(4 / 5)
    assert agg["correctness"] == pytest.approx(5 / 6)


def test_completeness_of_a_real_match():
    from pipeline.score.match import match

    def box(x, y, w, h):
        return shapely.box(x, y, x + w, y + h)

    # a matched house, a shifted one, and a blob over three houses with the middle mapped
    pred = gpd.GeoDataFrame(
        {"confidence": [0.9, 0.9, 0.9]},
        geometry=[box(0, 0, 10, 10), box(104, 3, 10, 10), box(200, 0, 30, 8)],
        crs="EPSG:3857",
    )
    od = gpd.GeoDataFrame(
        {"feature_id": ["a", "moved", "middle"]},
        geometry=[box(0, 0, 10, 10), box(100, 0, 10, 10), box(210, 0, 10, 8)],
        crs="EPSG:3857",
    )
    res = match(pred, od)
    s = res.summary
    assert (s.n_matched, s.n_misaligned, s.n_missing, s.n_predicted) == (2, 1, 2, 3)
    agg = aoi_aggregates(
        tile_table(),
        res.findings,
        n_predicted=s.n_predicted,
        n_opendata=s.n_opendata,
        n_matched=s.n_matched,
    )
    assert agg["completeness"] == pytest.approx(2 / (2 + 2))
    assert agg["object_f1"] == pytest.approx(2 * 2 / (3 + 3))
