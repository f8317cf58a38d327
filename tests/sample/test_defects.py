"""Injected open-data defects: rates, clustering, placement, and consistency between layers."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from pipeline.sample import STEPS, SampleInfo
from pipeline.sample.town import DefectPlan, Town


def test_building_count_and_change_rates(town_1km: tuple[Town, DefectPlan]) -> None:
    town, _ = town_1km
    n0 = len(town.buildings_at(0))
    assert 400 <= n0 <= 700
    assert 400 <= len(town.buildings_at(1)) <= 700
    assert 0.04 <= len(town.appeared) / n0 <= 0.06
    assert 0.03 <= len(town.demolished) / n0 <= 0.05
    assert not town.appeared & town.demolished


def test_buildings_do_not_overlap_and_have_plausible_sizes(
    town_1km: tuple[Town, DefectPlan],
) -> None:
    town, _ = town_1km
    fps = np.asarray([b.footprint for b in town.buildings])
    assert shapely.is_valid(fps).all()
    a, b = shapely.STRtree(fps).query(fps, predicate="intersects")
    assert (a == b).all()  # each footprint touches only itself
    sides = [max(p[2] - p[0], p[3] - p[1]) for bld in town.buildings for p in bld.parts[:1]]
    assert min(sides) >= 6.0 and max(sides) <= 40.0
    assert {b.category for b in town.buildings} >= {"house", "apartment", "warehouse"}
    assert len({round(b.angle_deg) % 90 for b in town.buildings}) > 10  # various orientations


def test_trees_stand_beside_buildings_and_some_overhang(town_1km: tuple[Town, DefectPlan]) -> None:
    town, _ = town_1km
    fps = shapely.STRtree(np.asarray([b.footprint for b in town.buildings]))
    trunks = np.asarray([shapely.Point(t.x, t.y) for t in town.trees])
    crowns = np.asarray([t.crown for t in town.trees])
    assert len(trunks) > 1000
    assert not fps.query(trunks, predicate="intersects").size
    overhanging = np.unique(fps.query(crowns, predicate="intersects")[0])
    assert 20 <= len(overhanging) <= 0.3 * len(crowns)
    new_sites = [b.footprint for b in town.buildings if b.truth_id in town.appeared]
    assert not shapely.STRtree(crowns).query(np.asarray(new_sites), predicate="intersects").size


def test_defect_rates(town_1km: tuple[Town, DefectPlan]) -> None:
    town, plan = town_1km
    n0 = len(town.buildings_at(0))
    scattered = [t for t, k in plan.omitted.items() if k is None]
    assert len(scattered) / n0 <= 0.01
    assert 0.025 <= len(plan.phantoms) / n0 <= 0.035
    mapped = n0 - len(plan.omitted)
    assert 0.035 <= len(plan.misaligned) / mapped <= 0.045
    for m in plan.misaligned.values():
        if m.mode == "shift":
            assert 3.0 <= math.hypot(m.dx_m, m.dy_m) <= 5.0
        else:
            assert 10.0 <= abs(m.angle_deg) <= 15.0
    changes = town.appeared | town.demolished
    assert 0.3 <= len(plan.stale) / len(changes) <= 0.5
    assert plan.stale & town.appeared and plan.stale & town.demolished
    # Demolished buildings tell one story: never omitted or misaligned too.
    assert not town.demolished & (set(plan.omitted) | set(plan.misaligned))


def test_omissions_are_clustered_in_three_hotspots(town_1km: tuple[Town, DefectPlan]) -> None:
    town, plan = town_1km
    assert len(town.hotspots) == 3
    for i, h in enumerate(town.hotspots):
        assert 100 <= 2 * math.sqrt(h.area / math.pi) <= 151
        for other in town.hotspots[i + 1 :]:
            assert not h.intersects(other)
        members = [b for b in town.buildings_at(0) if h.contains(b.footprint.centroid)]
        omitted = [b for b in members if plan.omitted.get(b.truth_id) == i]
        assert len(members) >= 8
        assert 0.6 <= len(omitted) / len(members) <= 0.8
    in_hot = sum(1 for k in plan.omitted.values() if k is not None)
    assert in_hot / len(plan.omitted) >= 0.85
    # Omission density inside the hotspots is an order of magnitude above outside.
    hot_area = sum(h.area for h in town.hotspots)
    inside = in_hot / hot_area
    outside = (len(plan.omitted) - in_hot) / (town.size_m**2 - hot_area)
    assert inside > 20 * outside


def test_phantoms_are_on_open_ground(town_1km: tuple[Town, DefectPlan]) -> None:
    town, plan = town_1km
    phantoms = np.asarray(plan.phantoms)
    fps = np.asarray([b.footprint for b in town.buildings])  # both steps
    assert not shapely.STRtree(fps).query(phantoms, predicate="dwithin", distance=2.9).size
    roads = shapely.union_all([r.sidewalk for r in town.roads])
    assert not shapely.intersects(phantoms, roads).any()
    paved = shapely.union_all(list(town.paved) + [g for g, _ in town.parking])
    assert not shapely.intersects(phantoms, paved).any()
    areas = shapely.area(phantoms)
    assert areas.min() >= 50 and areas.max() <= 200


def test_phantoms_in_files_do_not_touch_true_buildings(small_sample: SampleInfo) -> None:
    truth = json.loads(small_sample.truth.read_text())
    phantoms = gpd.GeoSeries(
        [shape(d["geometry"]) for d in truth["defects"] if d["kind"] == "phantom"], crs=4326
    ).to_crs(truth["crs"])
    assert len(phantoms)
    for step in STEPS:
        tb = gpd.read_file(small_sample.root / "truth" / f"buildings_{step}.geojson")
        tb = tb.to_crs(truth["crs"])
        assert tb.sindex.query(phantoms, predicate="dwithin", distance=2.9).size == 0


def test_truth_layers_and_open_data_agree(small_sample: SampleInfo) -> None:
    truth = json.loads(small_sample.truth.read_text())
    s1, s2 = STEPS
    tb = {s: gpd.read_file(small_sample.root / "truth" / f"buildings_{s}.geojson") for s in STEPS}
    od = {s: gpd.read_file(small_sample.opendata[s]).set_index("id") for s in STEPS}
    ids = {s: set(tb[s]["truth_id"]) for s in STEPS}
    appeared = {c["truth_id"] for c in truth["changes"] if c["kind"] == "appeared"}
    disappeared = {c["truth_id"] for c in truth["changes"] if c["kind"] == "disappeared"}
    assert appeared and disappeared
    assert ids[s2] - ids[s1] == appeared
    assert ids[s1] - ids[s2] == disappeared
    for c in truth["changes"]:
        assert c["step"] == s2 and c["from_step"] == s1
        oid = c["opendata_id"]
        if c["kind"] == "appeared":
            assert oid not in od[s1].index
            assert (oid is not None) == c["reflected_in_opendata"]
            if oid is not None:
                assert od[s2].loc[oid].geometry.equals(shape(c["geometry"]))
        else:
            assert oid in od[s1].index
            assert (oid in od[s2].index) == (not c["reflected_in_opendata"])
    stale = [d for d in truth["defects"] if d["kind"] == "stale"]
    unreflected = {c["truth_id"] for c in truth["changes"] if not c["reflected_in_opendata"]}
    assert {d["truth_id"] for d in stale} == unreflected
    assert all(d["step"] == s2 for d in stale)
    for d in stale:
        expected = "new_missing" if d["truth_id"] in appeared else "demolished_still_mapped"
        assert d["detail"]["subkind"] == expected
    # Features kept across steps keep their id and geometry.
    common = od[s1].index.intersection(od[s2].index)
    assert len(common) >= len(od[s1]) - len(disappeared)
    assert od[s1].loc[common].geometry.geom_equals(od[s2].loc[common].geometry).all()
    # Counts: open data = truth - omitted (+ stale demolished - stale new) + phantoms.
    for s in STEPS:
        per = {
            k: sum(1 for d in truth["defects"] if d["step"] == s and d["kind"] == k)
            for k in ("omitted", "phantom")
        }
        sub = [d["detail"]["subkind"] for d in stale if d["step"] == s]
        expected = (
            len(ids[s])
            - per["omitted"]
            + per["phantom"]
            + sub.count("demolished_still_mapped")
            - sub.count("new_missing")
        )
        assert len(od[s]) == expected


def test_defect_records_point_at_open_data(small_sample: SampleInfo) -> None:
    truth = json.loads(small_sample.truth.read_text())
    crs = truth["crs"]
    for s in STEPS:
        od = gpd.read_file(small_sample.opendata[s]).set_index("id").to_crs(crs)
        for d in (d for d in truth["defects"] if d["step"] == s):
            geom = gpd.GeoSeries([shape(d["geometry"])], crs=4326).to_crs(crs).iloc[0]
            if d["kind"] in ("omitted",) or d["detail"].get("subkind") == "new_missing":
                assert d["opendata_id"] is None
                assert not od.sindex.query(geom, predicate="intersects").size or all(
                    od.geometry.iloc[i].intersection(geom).area < 0.5 * geom.area
                    for i in od.sindex.query(geom, predicate="intersects")
                )
            elif d["kind"] == "misaligned":
                moved = od.loc[d["opendata_id"]].geometry
                assert moved.intersection(geom).area < 0.95 * geom.area
                assert moved.area == pytest.approx(geom.area, rel=1e-3)
            else:  # phantom, demolished still mapped: the open-data polygon itself
                assert od.loc[d["opendata_id"]].geometry.equals_exact(geom, 1e-3)
