"""The versioned suites run by Great Expectations on profiles of real footprints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import LineString, Polygon

from pipeline.aoi.config import ValidationSettings
from pipeline.sources import VectorFileSource, VectorSpec
from pipeline.tiles import Tile, lnglat_bounds
from pipeline.validate import suite_parameters
from pipeline.validate.gx import SUITES_DIR, run_suite, suite_definition, suite_names
from pipeline.validate.profiles import (
    opendata_feature_profile,
    opendata_snapshot_profile,
    output_run_profile,
    output_tile_profile,
)

DATA = Path(__file__).parents[1] / "data"
OSM = DATA / "oam-lalitpur" / "buildings_osm.geojson"
PARAMS = suite_parameters(ValidationSettings())


def osm_buildings() -> gpd.GeoDataFrame:
    """The shipped OSM buildings as the vector source reads them (ids, EPSG:4326)."""
    with VectorFileSource(VectorSpec(path=str(OSM))) as source:
        return source.read()


def circle(lon: float, lat: float, n: int) -> Polygon:
    """A valid ~20 m round polygon of ``n`` vertices."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return Polygon(np.c_[lon + 1e-4 * np.cos(t), lat + 1e-4 * np.sin(t)])


def test_every_suite_is_versioned_with_severities_and_problems() -> None:
    assert suite_names() == [
        "imagery.shards",
        "imagery.snapshot",
        "opendata.features",
        "opendata.snapshot",
        "outputs.run",
        "outputs.tiles",
    ]
    image_params = {**PARAMS, "band_counts": [3], "dtypes": ["uint8"]}
    for name in suite_names():
        spec = suite_definition(name)
        assert spec["name"] == f"geoaudit.{name}"
        assert isinstance(spec["meta"]["version"], int)
        for item in spec["expectations"]:
            assert item["severity"] in ("critical", "warning", "info"), item
            assert item["meta"]["problem"], item
        # every $PARAMETER a suite names is one the settings provide
        text = (SUITES_DIR / f"{name}.json").read_text()
        for param in re.findall(r'"\$PARAMETER": "(\w+)"', text):
            assert param in image_params, (name, param)


def test_real_osm_footprints_pass_the_feature_suite() -> None:
    profile = opendata_feature_profile(osm_buildings(), [])
    assert len(profile) == 80
    assert profile["area_m2"].between(5, 5000).all()  # real houses, ground m²
    outcome = run_suite("opendata.features", profile, PARAMS)
    assert outcome.success, [f.describe() for f in outcome.failed]
    assert outcome.severity == "none"
    assert outcome.statistics["evaluated_expectations"] == 9
    assert outcome.statistics["rows"] == 80
    # a real Data Docs page of this validation
    page = outcome.page()
    assert "<html" in page.lower() and "geoaudit.opendata.features" in page


def test_critical_feature_problems_name_the_features() -> None:
    frame = osm_buildings().iloc[:10].copy()
    frame.loc[1, "feature_id"] = frame.loc[0, "feature_id"]  # duplicate id
    frame.loc[2, "geometry"] = Polygon([(85.3, 27.6), (np.nan, 27.6), (85.3, np.nan)])
    frame.loc[3, "geometry"] = circle(85.32, 27.67, 150_000)
    frame.loc[4, "geometry"] = LineString([(85.3, 27.6), (85.31, 27.61)])
    profile = opendata_feature_profile(frame, [])
    assert profile.loc[3, "n_vertices"] > 100_000
    outcome = run_suite("opendata.features", profile, PARAMS)
    by_column = {f.column: f for f in outcome.critical}
    assert set(by_column) == {"feature_id", "has_nan", "n_vertices", "geom_type"}
    ids = frame["feature_id"].tolist()
    assert by_column["has_nan"].examples == [f"{ids[2]}: True"]
    assert by_column["n_vertices"].examples[0].startswith(f"{ids[3]}: ")
    assert by_column["geom_type"].examples == [f"{ids[4]}: LineString"]
    assert by_column["feature_id"].unexpected_count == 2
    assert "not unique" in by_column["feature_id"].describe()


def test_missing_required_attributes_are_critical() -> None:
    frame = osm_buildings()
    profile = opendata_feature_profile(frame, ["building", "addr:street"])
    outcome = run_suite("opendata.features", profile, PARAMS)
    (failure,) = outcome.critical
    assert failure.column == "n_missing_required"
    assert failure.unexpected_count == int((profile["n_missing_required"] > 0).sum()) > 0


def test_bow_ties_are_a_warning_above_the_repaired_share() -> None:
    frame = osm_buildings().iloc[:20].copy()
    bow_tie = Polygon([(85.3, 27.6), (85.3001, 27.6001), (85.3001, 27.6), (85.3, 27.6001)])
    for i in range(3):
        frame.loc[i, "geometry"] = bow_tie
    profile = opendata_feature_profile(frame, [])
    assert (~profile["is_valid"]).sum() == 3
    outcome = run_suite("opendata.features", profile, PARAMS)
    assert not outcome.critical
    # a bow-tie's signed parts cancel: its area (0 m²) is implausible too
    assert {f.column for f in outcome.failed} == {"is_valid", "area_m2"}
    assert outcome.severity == "warning"
    lenient = suite_parameters(ValidationSettings(max_repaired_share=0.2, area_mostly=0.8))
    assert run_suite("opendata.features", profile, lenient).success


@pytest.mark.parametrize(
    ("count", "previous", "ok"),
    [(100, None, True), (100, 110, True), (60, 100, False), (140, 100, False)],
)
def test_feature_count_against_the_previous_step(count: int, previous, ok: bool) -> None:  # noqa: ANN001
    read_info = {"crs": "EPSG:4326", "n_read": count, "dropped": {}}
    profile = opendata_snapshot_profile(read_info, {}, count, previous)
    outcome = run_suite("opendata.snapshot", profile, PARAMS)
    assert outcome.success is ok
    if not ok:
        (failure,) = outcome.failed
        assert failure.column == "count_ratio" and failure.severity == "warning"
        assert outcome.statistics["observed"]["count_ratio"] == pytest.approx(count / previous)


def test_crs_against_the_configured_one() -> None:
    read_info = {"crs": "EPSG:32616", "n_read": 5, "dropped": {"Point": 2}}
    profile = opendata_snapshot_profile(read_info, {}, 5, None, expected_crs="EPSG:4326")
    outcome = run_suite("opendata.snapshot", profile, PARAMS)
    assert {(f.column, f.severity) for f in outcome.failed} == {
        ("crs_matches", "critical"),
        ("n_non_polygon", "warning"),
    }
    same = opendata_snapshot_profile(read_info, {}, 5, None, expected_crs="epsg:32616")
    assert bool(same.at[0, "crs_matches"]) is True
    undeclared = opendata_snapshot_profile({"crs": None}, {}, 5, None)
    failed = run_suite("opendata.snapshot", undeclared, PARAMS).failed
    assert [(f.column, f.severity) for f in failed] == [("crs_declared", "warning")]


def test_output_rows_out_of_range_duplicated_or_orphaned_are_critical() -> None:
    tiles = pd.DataFrame(
        {
            "z": [18, 18, 18, 18],
            "x": [1, 2, 2, 9],
            "y": [1, 1, 1, 1],
            "iou": [0.5, 1.2, 0.3, 0.1],
            "precision": [0.5, 0.5, 0.5, 0.5],
            "recall": [0.5, 0.5, 0.5, 0.5],
            "f1": [0.5, 0.5, 0.5, 0.5],
            "qod": [50.0, 50.0, 50.0, 101.0],
        }
    )
    expected = {(18, 1, 1), (18, 2, 1)}
    outcome = run_suite("outputs.tiles", output_tile_profile(tiles, expected), {})
    failed = {f.column: f for f in outcome.critical}
    assert set(failed) == {"iou", "qod", "expected", "occurrences"}
    assert failed["expected"].examples == ["18/9/1: False"]
    assert failed["occurrences"].examples == ["18/2/1: 2", "18/2/1: 2"]
    # a finding must touch a scored tile; one reaching past the edge (an edge building)
    # is fine, one far away is an orphan
    w, s, e, n = lnglat_bounds(Tile(1, 1, 18))
    findings = pd.DataFrame(
        {
            "geometry": [
                shapely.box(w + 1e-5, s + 1e-5, w + 2e-5, s + 2e-5),  # inside tile 18/1/1
                shapely.box(w - 1e-4, s + 1e-5, w + 1e-5, s + 2e-5),  # over its west edge
                shapely.box(w + 1.0, s, w + 1.001, s + 0.001),  # far away
            ]
        }
    )
    run = run_suite("outputs.run", output_run_profile(tiles, findings, expected), {})
    assert [f.column for f in run.critical] == ["n_orphan_findings"]
    assert run.statistics["observed"]["n_orphan_findings"] == 1
    clean = output_run_profile(tiles.iloc[:1], findings.iloc[:2], expected)
    assert run_suite("outputs.run", clean, {}).success


def test_stored_statistics_are_plain_json() -> None:
    profile = opendata_feature_profile(osm_buildings(), [])
    outcome = run_suite("opendata.features", profile, {**PARAMS, "max_vertices": 4})
    json.dumps(outcome.statistics)
    json.dumps([f.as_dict() for f in outcome.failed])


def test_outcomes_travel_between_processes_without_the_gx_result() -> None:
    import pickle

    profile = opendata_feature_profile(osm_buildings(), [])
    outcome = run_suite("opendata.features", profile, PARAMS)
    copy = pickle.loads(pickle.dumps(outcome))
    assert (copy.suite, copy.success, copy.statistics) == (
        outcome.suite,
        outcome.success,
        outcome.statistics,
    )
    with pytest.raises(ValueError, match="not kept"):
        copy.page()
