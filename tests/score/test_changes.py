"""Changes between two time steps from hand-drawn buildings and open data."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely

from pipeline.errors import ConfigError, VectorDataError
from pipeline.score.changes import CHANGE_KINDS, ChangeConfig, detect_changes


def box(x, y, w, h):
    return shapely.box(x, y, x + w, y + h)


def buildings(*items):
    """``(geometry, confidence)`` pairs -> predicted buildings (EPSG:3857, near the equator)."""
    return gpd.GeoDataFrame(
        {"confidence": [c for _, c in items]}, geometry=[g for g, _ in items], crs="EPSG:3857"
    )


def opendata(**geoms):
    return gpd.GeoDataFrame(
        {"feature_id": list(geoms)}, geometry=list(geoms.values()), crs="EPSG:3857"
    )


PREV_B = buildings(
    (box(0, 0, 10, 10), 0.9),  # A: stays, jittered
    (box(50, 0, 10, 10), 0.8),  # B: demolished, still mapped
    (box(100, 0, 20, 10), 0.9),  # E: predicted in two parts next time
    (box(150, 0, 3, 3), 0.9),  # tiny: ignored
    (box(650, 0, 10, 10), 0.7),  # G: demolished and removed from the open data
)
CUR_B = buildings(
    (box(0.5, -0.3, 10.2, 10.1), 0.85),  # A with jitter
    (box(200, 0, 10, 10), 0.85),  # C: new, not mapped
    (box(250, 0, 10, 10), 0.75),  # D: new, mapped now
    (box(100, 0, 9.5, 10), 0.9),  # E, first half
    (box(110.5, 0, 9.5, 10), 0.9),  # E, second half
    (box(300, 0, 4, 4), 0.9),  # tiny: ignored
)
PREV_O = opendata(
    a=box(0, 0, 10, 10),
    b=box(50, 0, 10, 10),
    m=box(400, 0, 10, 10),
    v=box(450, 0, 10, 10),
    r=box(500, 0, 10, 10),
    old=box(550, 0, 10, 10),
    g=box(650, 0, 10, 10),
)
CUR_O = opendata(
    a=box(0, 0, 10, 10),
    b=box(50, 0, 10, 10),
    m=box(400, 0, 10, 20),  # reshaped: IoU 0.5
    v=box(450, 0, 10, 10.1),  # vertex nudge: IoU 0.99, not a change
    new=box(550.2, 0, 10, 10),  # same building as "old", new id
    d=box(250, 0, 10, 10),  # maps D
    x=box(600, 0, 10, 10),  # added, no building seen
)


def run(**kwargs):
    return detect_changes(PREV_B, CUR_B, PREV_O, CUR_O, **kwargs)


def rows(changes, kind, detail=None):
    sel = changes[changes["kind"] == kind]
    return sel if detail is None else sel[sel["detail"] == detail]


def test_every_kind_once_as_expected():
    ch = run()
    assert ch.crs == "EPSG:3857"
    counts = ch.groupby(["kind", "detail"]).size().to_dict()
    assert counts == {
        ("appeared", "new_building"): 2,
        ("disappeared", "building_gone"): 2,
        ("added", "new_feature"): 2,
        ("removed", "feature_deleted"): 2,
        ("modified", "geometry_changed"): 1,
        ("modified", "id_changed"): 1,
        ("stale_opendata", "new_building_missing"): 1,
        ("stale_opendata", "demolished_still_mapped"): 1,
    }
    assert set(ch["kind"]) == set(CHANGE_KINDS)


def test_imagery_changes():
    ch = run()
    app = rows(ch, "appeared").sort_values("confidence")
    assert [g.bounds[0] for g in app.geometry] == [250, 200]
    assert app["confidence"].tolist() == pytest.approx([0.75, 0.85])
    assert app["area_m2"].tolist() == pytest.approx([100, 100], rel=1e-6)
    assert app["iou"].tolist() == [0.0, 0.0]
    assert app["feature_id"].isna().all()
    gone = rows(ch, "disappeared")
    assert sorted(g.bounds[0] for g in gone.geometry) == [50, 650]


def test_opendata_changes():
    ch = run()
    assert sorted(rows(ch, "added")["feature_id"]) == ["d", "x"]
    assert sorted(rows(ch, "removed")["feature_id"]) == ["g", "r"]
    mod = rows(ch, "modified", "geometry_changed").iloc[0]
    assert (mod["feature_id"], mod["prev_feature_id"]) == ("m", "m")
    assert mod["iou"] == pytest.approx(0.5)
    assert mod.geometry.equals(box(400, 0, 10, 20))
    ren = rows(ch, "modified", "id_changed").iloc[0]
    assert (ren["feature_id"], ren["prev_feature_id"]) == ("new", "old")
    assert ren["iou"] == pytest.approx(98 / 102)
    assert rows(ch, "added")["confidence"].tolist() == [1.0, 1.0]


def test_stale_opendata_cross():
    ch = run()
    new = rows(ch, "stale_opendata", "new_building_missing").iloc[0]
    assert new.geometry.equals(box(200, 0, 10, 10))
    assert new["feature_id"] is None
    assert new["confidence"] == pytest.approx(0.85)
    dem = rows(ch, "stale_opendata", "demolished_still_mapped").iloc[0]
    assert dem["feature_id"] == "b"
    assert dem.geometry.equals(box(50, 0, 10, 10))
    assert dem["confidence"] == pytest.approx(0.8)
    assert dem["area_m2"] == pytest.approx(100, rel=1e-6)


def test_prediction_jitter_alone_is_no_change():
    prev = buildings((box(0, 0, 10, 10), 0.9), (box(30, 0, 20, 10), 0.8))
    cur = buildings(
        (box(0.6, 0.4, 9.5, 10.2), 0.85),  # outline jitter
        (box(30, 0, 9.8, 10), 0.8),
        (box(40.2, 0, 9.8, 10), 0.8),  # split in two
    )
    od = opendata(a=box(0, 0, 10, 10))
    assert len(detect_changes(prev, cur, od, od)) == 0
    assert len(detect_changes(cur, prev, od, od)) == 0  # and merged back


def test_partial_overlap_below_threshold_is_appeared():
    # the new building overlaps the old one by 10 % of its area: a different building
    prev = buildings((box(0, 0, 10, 10), 0.9))
    cur = buildings((box(9, 0, 10, 10), 0.9))
    ch = detect_changes(prev, cur, opendata(), opendata())
    assert sorted(ch["kind"]) == ["appeared", "disappeared", "stale_opendata"]
    assert rows(ch, "appeared")["iou"].iloc[0] == pytest.approx(10 / 190)
    # a stricter jitter tolerance keeps them as one building
    ch = detect_changes(
        prev, cur, opendata(), opendata(), config=ChangeConfig(gone_max_coverage=0.05)
    )
    assert len(ch) == 0


def test_a_site_the_model_is_much_less_sure_of_has_disappeared():
    # rubble where a house stood: still predicted, with a collapsed confidence
    town = [(box(100 * i, 100, 10, 10), 0.75) for i in range(5)]
    prev = buildings((box(0, 0, 10, 10), 0.75), *town)
    cur = buildings((box(0, 0, 10, 10), 0.6), *town)
    od = opendata(a=box(0, 0, 10, 10))
    ch = detect_changes(prev, cur, od, od)
    assert [g.bounds[0] for g in rows(ch, "disappeared").geometry] == [0]
    assert rows(ch, "stale_opendata")["feature_id"].tolist() == ["a"]
    # the same drop is no change with a lenient ratio
    lenient = ChangeConfig(persist_confidence_ratio=0.7)
    assert len(detect_changes(prev, cur, od, od, config=lenient)) == 0


def test_a_global_confidence_shift_is_no_change():
    # darker imagery: every building is predicted 20 % less sure; nothing changed
    prev = buildings(*[(box(100 * i, 0, 10, 10), 0.75 + 0.01 * i) for i in range(6)])
    cur = buildings(*[(box(100 * i, 0, 10, 10), 0.8 * (0.75 + 0.01 * i)) for i in range(6)])
    od = opendata(a=box(0, 0, 10, 10))
    assert len(detect_changes(prev, cur, od, od)) == 0
    assert len(detect_changes(cur, prev, od, od)) == 0


def test_min_confidence_and_footprint():
    cur = buildings((box(0, 0, 10, 10), 0.55), (box(100, 0, 10, 10), 0.9))
    ch = detect_changes(
        buildings(), cur, opendata(), opendata(), config=ChangeConfig(min_confidence=0.6)
    )
    assert [g.bounds[0] for g in rows(ch, "appeared").geometry] == [100]
    ch = detect_changes(buildings(), cur, opendata(), opendata(), footprint=box(-5, -5, 50, 50))
    assert [g.bounds[0] for g in rows(ch, "appeared").geometry] == [0]


def test_empty_inputs_and_wgs84():
    ch = detect_changes(buildings(), buildings(), opendata(), opendata())
    assert len(ch) == 0 and "kind" in ch.columns and ch.crs == "EPSG:3857"
    ch = detect_changes(buildings(), CUR_B.to_crs(4326), opendata(), opendata())
    assert len(rows(ch, "appeared")) == 5  # A, C, D and both halves of E


def test_bad_inputs_raise():
    with pytest.raises(VectorDataError, match="confidence"):
        detect_changes(opendata(), buildings(), opendata(), opendata())
    with pytest.raises(VectorDataError, match="feature_id"):
        detect_changes(buildings(), buildings(), buildings(), opendata())
    dup = gpd.GeoDataFrame({"feature_id": ["a", "a"]}, geometry=[box(0, 0, 1, 1)] * 2)
    with pytest.raises(VectorDataError, match="unique"):
        detect_changes(buildings(), buildings(), opendata(), dup)
    with pytest.raises(ConfigError, match="modified_iou"):
        ChangeConfig(modified_iou=1.5)
