"""Fixtures for the sample-town tests: a small generated sample and a full-size layout.

* ``small_sample`` (session) — ``create_sample`` of a 300 m town, seed 7.
* ``town_1km`` (session) — layout + defect plan of the default 1 km² town
  (no rendering, ~2 s), for the rate checks.
* ``perfect_inputs(truth_path)`` — findings, changes and hotspot cells built
  straight from ``truth.json`` (what a perfect audit would report).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import shape

from pipeline.sample import SampleInfo, create_sample
from pipeline.sample.town import DefectPlan, Town, build_town, plan_defects

Inputs = tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame]


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory: pytest.TempPathFactory) -> SampleInfo:
    return create_sample(tmp_path_factory.mktemp("sample") / "town", seed=7, size_m=300.0)


@pytest.fixture(scope="session")
def town_1km() -> tuple[Town, DefectPlan]:
    town = build_town(7, 1000.0, 0.4)
    return town, plan_defects(town)


def _gdf(rows: list[dict], columns: tuple[str, ...]) -> gpd.GeoDataFrame:
    if not rows:
        return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs="EPSG:4326")
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")


def build_perfect_inputs(truth_path: Path) -> Inputs:
    truth = json.loads(Path(truth_path).read_text())
    kinds = {
        "omitted": "missing_in_opendata",
        "phantom": "unsupported_by_imagery",
        "misaligned": "misaligned",
    }
    subkinds = {
        "new_missing": "missing_in_opendata",
        "demolished_still_mapped": "unsupported_by_imagery",
    }
    findings = []
    for d in truth["defects"]:
        kind = kinds.get(d["kind"]) or subkinds[d["detail"]["subkind"]]
        findings.append({"step": d["step"], "kind": kind, "geometry": shape(d["geometry"])})
    changes = []
    for c in truth["changes"]:
        changes.append({"step": c["step"], "kind": c["kind"], "geometry": shape(c["geometry"])})
        if not c["reflected_in_opendata"]:
            changes.append(
                {"step": c["step"], "kind": "stale_opendata", "geometry": shape(c["geometry"])}
            )
    cells = [
        {"step": truth["steps"][0], "rank": k + 1, "geometry": shape(h["geometry"])}
        for k, h in enumerate(truth["hotspots"])
    ]
    return (
        _gdf(findings, ("step", "kind")),
        _gdf(changes, ("step", "kind")),
        _gdf(cells, ("step", "rank")),
    )


@pytest.fixture
def perfect_inputs() -> Callable[[Path], Inputs]:
    return build_perfect_inputs
