"""Object findings from hand-drawn predicted and open-data buildings."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.errors import ConfigError, VectorDataError
from pipeline.score.geometry import area_m2
from pipeline.score.match import MatchConfig, match


def findings(*args, **kwargs):
    """The findings of :func:`match`."""
    return match(*args, **kwargs).findings

# near the equator 1 EPSG:3857 unit is 1 m; at 60°N it is 0.5 m
LAT60_Y = 6378137.0 * math.log(math.tan(math.radians(45 + 30)))


def box(x, y, w, h):
    return shapely.box(x, y, x + w, y + h)


def pred(*geoms, confidence=0.9):
    conf = confidence if isinstance(confidence, list) else [confidence] * len(geoms)
    return gpd.GeoDataFrame({"confidence": conf}, geometry=list(geoms), crs="EPSG:3857")


def opendata(**geoms):
    return gpd.GeoDataFrame(
        {"feature_id": list(geoms)}, geometry=list(geoms.values()), crs="EPSG:3857"
    )


def test_exact_match_has_no_finding():
    res = match(pred(box(0, 0, 10, 10)), opendata(a=box(0, 0, 10, 10)))
    assert len(res.findings) == 0
    assert res.summary.n_matched == 1 and res.summary.n_misaligned == 0
    assert res.pairs["feature_id"].tolist() == ["a"]
    assert res.pairs["iou"].tolist() == pytest.approx([1.0])


def test_missing_in_opendata():
    f = findings(
        pred(box(0, 0, 10, 10), box(100, 0, 8, 5), confidence=[0.9, 0.7]),
        opendata(a=box(0, 0, 10, 10)),
    )
    assert len(f) == 1
    row = f.iloc[0]
    assert row["kind"] == "missing_in_opendata"
    assert row["feature_id"] is None
    assert row["confidence"] == pytest.approx(0.7)
    assert row["area_m2"] == pytest.approx(40.0, rel=1e-6)
    assert row["iou"] == 0.0 and row["coverage"] == 0.0
    assert row.geometry.equals(box(100, 0, 8, 5))
    assert f.crs == "EPSG:3857"
    res = match(pred(box(100, 0, 8, 5)), opendata())
    assert res.summary.n_missing == 1 and res.summary.n_predicted == 1 and len(res.findings) == 1


def test_unsupported_by_imagery():
    f = findings(
        pred(box(0, 0, 10, 10)), opendata(a=box(0, 0, 10, 10), gone=box(50, 50, 6, 6))
    )
    assert f["kind"].tolist() == ["unsupported_by_imagery"]
    row = f.iloc[0]
    assert row["feature_id"] == "gone"
    assert row["confidence"] == 1.0  # 1 - coverage
    assert row["area_m2"] == pytest.approx(36.0, rel=1e-6)
    assert row.geometry.equals(box(50, 50, 6, 6))


def test_partly_detected_building_is_not_unsupported():
    # a third of the open-data building predicted: IoU 0.3, coverage 0.3
    res = match(pred(box(0, 0, 3, 10)), opendata(a=box(0, 0, 10, 10)))
    assert len(res.findings) == 0
    assert res.summary.n_matched == 0
    # barely touched (5 % covered): unsupported, with confidence 1 - 0.05
    res = match(pred(box(0, 0, 10, 0.5), box(40, 40, 10, 10)), opendata(a=box(0, 0, 10, 10)))
    kinds = sorted(res.findings["kind"])
    assert kinds == ["missing_in_opendata", "unsupported_by_imagery"]
    uns = res.findings[res.findings["kind"] == "unsupported_by_imagery"].iloc[0]
    assert uns["confidence"] == pytest.approx(0.95)
    assert uns["coverage"] == pytest.approx(0.05)


def test_building_split_in_two_predicted_parts():
    # open data 10 x 10; predicted as two 10 x 4.5 halves with a 1 m gap
    res = match(pred(box(0, 0, 10, 4.5), box(0, 5.5, 10, 4.5)), opendata(a=box(0, 0, 10, 10)))
    assert len(res.findings) == 0
    assert res.summary.n_matched == 0
    assert res.summary.n_predicted == 2 and res.summary.n_opendata == 1


def test_two_row_houses_predicted_as_one_blob():
    res = match(pred(box(0, 0, 20, 10)), opendata(a=box(0, 0, 10, 10), b=box(10, 0, 10, 10)))
    assert len(res.findings) == 0


def test_one_to_one_assignment():
    # two predictions both overlapping one building above the match threshold
    res = match(pred(box(0, 0, 10, 10), box(2, 0, 10, 10)), opendata(a=box(0, 0, 10, 10)))
    assert res.summary.n_matched == 1
    assert res.pairs["pred"].tolist() == [0]  # the better IoU wins
    assert len(res.findings) == 0  # the other is 80 % covered: not missing


def test_shifted_polygon_is_misaligned():
    # open data 10 x 10 at the origin, imagery shows it 4 m east and 3 m north
    res = match(pred(box(4, 3, 10, 10), confidence=0.8), opendata(a=box(0, 0, 10, 10)))
    assert res.findings["kind"].tolist() == ["misaligned"]
    row = res.findings.iloc[0]
    assert row["feature_id"] == "a"
    assert row["iou"] == pytest.approx(42 / 158)  # 6 x 7 overlap
    assert row["iou_shifted"] == pytest.approx(1.0)
    assert (row["dx_m"], row["dy_m"], row["offset_m"]) == pytest.approx((4, 3, 5), abs=1e-6)
    assert row["confidence"] == pytest.approx(0.8)
    assert row.geometry.equals(box(0, 0, 10, 10))
    assert res.summary.n_matched == 1 and res.summary.n_misaligned == 1
    assert res.pairs["kind"].tolist() == ["misaligned"]


def test_misalignment_offset_in_true_metres_at_60n():
    # 8 EPSG:3857 units east = 4 m at 60°N; building 40 x 40 units = 20 x 20 m
    res = match(
        pred(box(8, LAT60_Y, 40, 40)),
        opendata(a=box(0, LAT60_Y, 40, 40)),
        config=MatchConfig(iou_match=0.9),
    )
    row = res.findings.iloc[0]
    assert row["kind"] == "misaligned"
    assert row["dx_m"] == pytest.approx(4.0, rel=1e-4)
    assert row["offset_m"] == pytest.approx(4.0, rel=1e-4)
    assert row["area_m2"] == pytest.approx(400.0, rel=1e-3)


def test_small_shift_is_a_match_and_large_shift_is_not_misaligned():
    res = match(pred(box(1, 0, 10, 10)), opendata(a=box(0, 0, 10, 10)))
    assert res.summary.n_matched == 1 and len(res.findings) == 0
    # different shape: shifting does not help -> partial, no finding
    res = match(pred(box(5, 0, 20, 4)), opendata(a=box(0, 0, 10, 10)))
    assert len(res.findings) == 0 and res.summary.n_misaligned == 0


def test_tiny_specks_are_ignored():
    res = match(
        pred(box(0, 0, 10, 10), box(50, 50, 3, 3)),
        opendata(a=box(0, 0, 10, 10), shed=box(80, 80, 2, 2)),
    )
    assert len(res.findings) == 0
    assert res.summary.n_predicted == 1 and res.summary.n_opendata == 1


def test_area_is_corrected_by_cos2_latitude():
    g = np.array([box(0, LAT60_Y, 20, 20)])
    assert area_m2(g)[0] == pytest.approx(100.0, rel=1e-3)
    f = findings(pred(box(0, LAT60_Y, 20, 20)), opendata(a=box(500, LAT60_Y, 6, 6)))
    kinds = dict(zip(f["kind"], f["area_m2"], strict=True))
    assert kinds["missing_in_opendata"] == pytest.approx(100.0, rel=1e-3)
    # the open-data polygon is 36 units² but 9 m²: under the 15 m² minimum
    assert "unsupported_by_imagery" not in kinds


def test_inputs_in_wgs84_are_reprojected():
    p = pred(box(1000, 1000, 10, 10)).to_crs(4326)
    o = opendata(a=box(1000, 1000, 10, 10), b=box(2000, 1000, 10, 10)).to_crs(4326)
    f = findings(p, o)
    assert f["kind"].tolist() == ["unsupported_by_imagery"]
    assert f.crs == "EPSG:3857"
    assert f.geometry.iloc[0].equals_exact(box(2000, 1000, 10, 10), tolerance=1e-6)


def test_footprint_excludes_buildings_without_imagery():
    o = opendata(a=box(0, 0, 10, 10), dark=box(100, 0, 10, 10))
    f = findings(pred(box(0, 0, 10, 10)), o, footprint=box(-5, -5, 50, 50))
    assert len(f) == 0
    assert match(pred(box(0, 0, 10, 10)), o, footprint=box(-5, -5, 50, 50)).summary.n_opendata == 1


def test_empty_inputs():
    res = match(pred(), opendata())
    assert len(res.findings) == 0 and res.summary.n_matched == 0
    assert "kind" in res.findings.columns
    f = findings(pred(), opendata(a=box(0, 0, 10, 10)))
    assert f["kind"].tolist() == ["unsupported_by_imagery"]


def test_bad_inputs_raise():
    with pytest.raises(VectorDataError, match="feature_id"):
        match(pred(box(0, 0, 1, 1)), pred(box(0, 0, 1, 1)))
    with pytest.raises(VectorDataError, match="confidence"):
        match(opendata(a=box(0, 0, 1, 1)), opendata(a=box(0, 0, 1, 1)))
    dup = gpd.GeoDataFrame({"feature_id": ["a", "a"]}, geometry=[box(0, 0, 1, 1)] * 2)
    with pytest.raises(VectorDataError, match="unique"):
        match(pred(box(0, 0, 1, 1)), dup)
    with pytest.raises(ConfigError, match="iou_misaligned_min"):
        MatchConfig(iou_match=0.3, iou_misaligned_min=0.4)
    with pytest.raises(ConfigError, match="min_area_m2"):
        MatchConfig(min_area_m2=-1)
