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
    f = findings(pred(box(0, 0, 10, 10)), opendata(a=box(0, 0, 10, 10), gone=box(50, 50, 6, 6)))
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
    # different shape: shifting does not help, so not misaligned; the 14.5 m x 5 m
    # that the prediction adds beyond the mapped outline (and its 0.5 m margin) is
    # building-sized: it is reported on its own
    res = match(pred(box(5, 0, 20, 5)), opendata(a=box(0, 0, 10, 10)))
    assert res.summary.n_misaligned == 0
    assert res.findings["kind"].tolist() == ["missing_in_opendata"]
    assert (
        res.findings.geometry.iloc[0].symmetric_difference(shapely.box(10.5, 0, 25, 5)).area < 1e-6
    )
    # a strip under 4 m wide (2 x opening_m) is an outline drawn a little small, or
    # a wall, a fence, a shadow: no finding
    res = match(pred(box(5, 0, 20, 3.5)), opendata(a=box(0, 0, 10, 10)))
    assert len(res.findings) == 0


def test_a_building_merged_with_a_mapped_neighbour_is_missing_on_its_own():
    # one predicted blob over a mapped house and an unmapped one next to it (touching)
    blob = shapely.union(box(0, 0, 10, 8), box(10, 0, 8, 8))
    res = match(pred(blob), opendata(a=box(0, 0, 10, 8)))
    assert res.summary.n_matched == 1  # IoU 80/144 with the mapped house
    (part,) = res.findings.geometry
    assert res.findings["kind"].tolist() == ["missing_in_opendata"]
    # the unmapped house, less the margin
    assert part.symmetric_difference(shapely.box(10.5, 0, 18, 8)).area < 1e-6
    assert res.findings["evidence"].iloc[0] > 0


def test_a_rim_around_a_mapped_building_is_no_finding():
    # the prediction overshoots the mapped outline by 1 m all round: thinner than the opening
    res = match(pred(box(-1, -1, 12, 12)), opendata(a=box(0, 0, 10, 10)))
    assert len(res.findings) == 0 and res.summary.n_matched == 1


def test_open_data_without_imagery_under_it_is_not_covered_and_no_finding():
    od = opendata(a=box(0, 0, 10, 10), dark=box(50, 50, 10, 10))
    od["imagery_share"] = [1.0, 0.2]
    od["pred_share"] = [1.0, 0.0]
    od["mean_prob"] = [0.9, 0.0]
    res = match(pred(box(0, 0, 10, 10)), od)
    assert len(res.findings) == 0
    assert res.summary.n_not_covered == 1 and res.summary.n_opendata == 1


def test_unsupported_evidence_comes_from_the_rasters_when_given():
    od = opendata(a=box(0, 0, 10, 10), gone=box(50, 50, 10, 10), dim=box(80, 80, 10, 10))
    od["imagery_share"] = [1.0, 1.0, 1.0]
    od["pred_share"] = [1.0, 0.0, 0.1]
    od["mean_prob"] = [0.9, 0.02, 0.3]
    res = match(pred(box(0, 0, 10, 10)), od)
    ranked = res.findings.sort_values("evidence", ascending=False)
    assert ranked["feature_id"].tolist() == ["gone", "dim"]
    assert ranked["confidence"].tolist() == pytest.approx([0.98, 0.7])


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


# --- rule 5: residual parts -----------------------------------------------------------------


def test_a_misaligned_pair_leaves_no_missing_part_where_the_imagery_puts_it():
    # shifted 6 m east: the prediction sticks out 6 m past the mapped outline
    res = match(pred(box(6, 0, 10, 10), confidence=0.8), opendata(a=box(0, 0, 10, 10)))
    assert res.findings["kind"].tolist() == ["misaligned"]
    assert res.summary.n_missing == 0 and res.summary.n_misaligned == 1
    # the same shapes, but a shift that is too large to be a misalignment: the part of
    # the prediction beyond the mapped outline (and its margin) is a missing part
    res = match(
        pred(box(6, 0, 10, 10), confidence=0.8),
        opendata(a=box(0, 0, 10, 10)),
        config=MatchConfig(max_offset_m=5.0),
    )
    assert res.findings["kind"].tolist() == ["missing_in_opendata"]
    (part,) = res.findings.geometry
    assert part.symmetric_difference(shapely.box(10.5, 0, 16, 10)).area < 1e-6


def test_the_opening_removes_slivers_along_a_mapped_outline():
    house = box(0, 0, 20, 20)
    # a 3.5 m strip along the house, 30 m long: thinner than 2 * opening_m
    sliver = shapely.union(house, box(20, -5, 3.5, 30))
    res = match(pred(sliver), opendata(a=house))
    assert len(res.findings) == 0 and res.summary.n_matched == 1
    # without the opening the strip is a building-sized part
    res = match(pred(sliver), opendata(a=house), config=MatchConfig(opening_m=0.0))
    assert res.findings["kind"].tolist() == ["missing_in_opendata"]
    assert res.findings["area_m2"].iloc[0] == pytest.approx(3.5 * 30 - 0.5 * 20, rel=0.02)
    # a 5 m strip (4.5 m beyond the margin) is thicker than the opening: it stays
    wide = shapely.union(house, box(20, -5, 5, 30))
    res = match(pred(wide), opendata(a=house))
    assert res.findings["kind"].tolist() == ["missing_in_opendata"]
    assert res.findings["area_m2"].iloc[0] > 100


def test_parts_smaller_than_min_area_are_dropped():
    house = box(0, 0, 10, 10)
    annex = shapely.union(house, box(10, 0, 4.5, 3))  # 4 x 3 m beyond the 0.5 m margin
    thin = MatchConfig(opening_m=1.0)  # the 3 m annex survives a 1 m opening
    assert len(match(pred(annex), opendata(a=house), config=thin).findings) == 0  # 12 < 15
    res = match(pred(annex), opendata(a=house), config=MatchConfig(opening_m=1.0, min_area_m2=10.0))
    assert res.findings["kind"].tolist() == ["missing_in_opendata"]
    assert res.findings["area_m2"].iloc[0] == pytest.approx(12.0, rel=1e-6)
    assert res.summary.n_matched == 1 and res.summary.n_missing == 1


def test_one_blob_over_three_houses_with_the_middle_one_mapped_gives_two_parts():
    blob = box(0, 0, 30, 8)
    res = match(pred(blob, confidence=0.6), opendata(b=box(10, 0, 10, 8)))
    assert res.findings["kind"].tolist() == ["missing_in_opendata"] * 2
    assert res.summary.n_missing == 2 and res.summary.n_predicted == 1
    assert res.summary.n_unsupported == 0  # the mapped house is under the blob
    left, right = sorted(res.findings.geometry, key=lambda g: g.bounds[0])
    assert left.symmetric_difference(shapely.box(0, 0, 9.5, 8)).area < 1e-6
    assert right.symmetric_difference(shapely.box(20.5, 0, 30, 8)).area < 1e-6
    assert res.findings["confidence"].tolist() == pytest.approx([0.6, 0.6])


def test_predictions_below_min_confidence_leave_no_part():
    res = match(
        pred(box(100, 0, 10, 10), confidence=0.3),
        opendata(),
        config=MatchConfig(min_confidence=0.5),
    )
    assert len(res.findings) == 0 and res.summary.n_predicted == 0


# --- rule 6: raster evidence ----------------------------------------------------------------


def test_raster_pred_share_outranks_vector_coverage():
    # a third of the house is covered by a predicted polygon (rule 4: not unsupported),
    # but the rasters say 5 % of its pixels are predicted
    od = opendata(a=box(0, 0, 10, 10))
    od["imagery_share"] = [1.0]
    od["pred_share"] = [0.05]
    od["mean_prob"] = [0.1]
    res = match(pred(box(0, 0, 3, 10)), od)
    assert res.findings["kind"].tolist() == ["unsupported_by_imagery"]
    row = res.findings.iloc[0]
    assert row["coverage"] == pytest.approx(0.05)
    assert row["confidence"] == pytest.approx(0.9)
    # no predicted polygon at all, but 20 % predicted pixels: supported
    od["pred_share"] = [0.2]
    res = match(pred(), od)
    assert len(res.findings) == 0 and res.summary.n_unsupported == 0


def test_missing_raster_values_fall_back_to_vector_coverage():
    od = opendata(a=box(0, 0, 10, 10), b=box(50, 0, 10, 10))
    od["imagery_share"] = [np.nan, 1.0]
    od["pred_share"] = [np.nan, 0.9]
    od["mean_prob"] = [np.nan, 0.8]
    res = match(pred(), od)
    # a: no raster values, no prediction: unsupported with confidence 1 - coverage
    assert res.findings["feature_id"].tolist() == ["a"]
    assert res.findings["confidence"].iloc[0] == 1.0
    assert res.summary.n_not_covered == 0


def test_imagery_share_threshold_decides_not_covered():
    od = opendata(edge=box(0, 0, 10, 10), dark=box(50, 0, 10, 10))
    od["imagery_share"] = [0.5, 0.49]
    od["pred_share"] = [0.0, 0.0]
    od["mean_prob"] = [0.0, 0.0]
    res = match(pred(), od)
    assert res.findings["feature_id"].tolist() == ["edge"]  # 0.5 is enough imagery
    assert res.summary.n_not_covered == 1 and res.summary.n_opendata == 1
    res = match(pred(), od, config=MatchConfig(min_imagery_share=0.0))
    assert sorted(res.findings["feature_id"]) == ["dark", "edge"]
    assert res.summary.n_not_covered == 0


def test_a_not_covered_building_is_still_mapped_for_missing_parts():
    od = opendata(dark=box(0, 0, 10, 10))
    od["imagery_share"] = [0.2]
    res = match(pred(box(0, 0, 10, 10)), od)
    assert len(res.findings) == 0
    assert res.summary.n_not_covered == 1 and res.summary.n_matched == 0
    assert res.summary.n_missing == 0


# --- rule 7: evidence -----------------------------------------------------------------------


def _size(area: float, min_area: float = 15.0) -> float:
    return 1 - math.exp(-area / (2 * max(min_area, 1.0)))


def test_evidence_values_of_each_kind():
    od = opendata(
        a=box(0, 0, 10, 10),  # matched
        gone=box(50, 50, 6, 6),  # unsupported, rule 4 coverage 0
        dim=box(80, 80, 8, 8),  # unsupported, raster evidence
        moved=box(200, 0, 10, 10),  # misaligned
    )
    od["imagery_share"] = [1.0, np.nan, 0.6, 1.0]
    od["pred_share"] = [1.0, np.nan, 0.1, np.nan]
    od["mean_prob"] = [0.9, np.nan, 0.25, np.nan]
    p = pred(
        box(0, 0, 10, 10),
        box(100, 0, 8, 5),  # missing, 40 m²
        box(204, 3, 10, 10),  # the moved house, 4 m east and 3 m north
        confidence=[0.9, 0.7, 0.8],
    )
    f = match(p, od).findings.set_index("kind", drop=False)
    missing = f.loc["missing_in_opendata"]
    assert missing["evidence"] == pytest.approx(0.7 * _size(40.0), rel=1e-6)
    uns = f[f["kind"] == "unsupported_by_imagery"].set_index("feature_id")
    assert uns.loc["gone", "evidence"] == pytest.approx(1.0 * 1.0 * _size(36.0), rel=1e-6)
    assert uns.loc["dim", "evidence"] == pytest.approx(0.75 * 0.6 * _size(64.0), rel=1e-6)
    mis = f.loc["misaligned"]
    assert mis["evidence"] == pytest.approx(0.8 * (1.0 - 42 / 158), rel=1e-6)


def test_evidence_grows_with_size_and_confidence():
    p = pred(
        box(0, 0, 5, 5),  # 25 m²
        box(50, 0, 10, 10),  # 100 m²
        box(100, 0, 10, 10),  # 100 m², less confident
        confidence=[0.9, 0.9, 0.5],
    )
    f = match(p, opendata()).findings
    small, big, unsure = f["evidence"].tolist()
    assert small < big and unsure < big
    assert unsure == pytest.approx(big * 0.5 / 0.9)
    # with no minimum area the size saturates for anything of a few square metres
    res = match(
        pred(box(0, 0, 3, 3), confidence=1.0),
        opendata(),
        config=MatchConfig(min_area_m2=0, opening_m=0),
    )
    assert res.findings["evidence"].iloc[0] == pytest.approx(1 - math.exp(-4.5), rel=1e-6)


def test_a_large_building_shifted_3_m_is_misaligned_although_it_overlaps_enough_to_match():
    # 20 x 20 m, shifted 3 m: IoU 0.74 as mapped, above iou_match
    res = match(pred(box(3, 0, 20, 20)), opendata(a=box(0, 0, 20, 20)))
    assert res.findings["kind"].tolist() == ["misaligned"]
    assert res.findings["offset_m"].iloc[0] == pytest.approx(3.0, abs=1e-6)
    assert res.summary.n_matched == 1 and res.summary.n_misaligned == 1


def test_a_turned_building_is_misaligned_with_its_angle():
    outline = box(0, 0, 30, 10)
    turned = shapely.affinity.rotate(outline, 12.5, origin="centroid")
    res = match(pred(outline), opendata(a=turned))
    assert res.findings["kind"].tolist() == ["misaligned"]
    row = res.findings.iloc[0]
    assert row["rotation_deg"] == pytest.approx(-12.5)
    assert row["iou_shifted"] == pytest.approx(1.0, abs=1e-6)
    assert row["offset_m"] > 1.5


def test_a_prediction_a_metre_off_is_a_match_not_a_misalignment():
    res = match(pred(box(1, 0, 10, 10)), opendata(a=box(0, 0, 10, 10)))
    assert len(res.findings) == 0 and res.summary.n_misaligned == 0
