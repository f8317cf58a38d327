"""The hotspot statistic against the demo town's truth: the omission hotspots the town
generator plants are what Gi* with the default cells and the FDR test reports."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import shape

from pipeline.aoi import parse_aoi
from pipeline.sample import SampleInfo, create_sample
from pipeline.score import hotspots
from tests.sample.conftest import build_perfect_inputs


@pytest.fixture(scope="module")
def demo_town(tmp_path_factory: pytest.TempPathFactory) -> SampleInfo:
    """The demo's town (seed 7, 1 km): three omission hotspots 110-137 m across."""
    return create_sample(tmp_path_factory.mktemp("demo-town") / "town")


def _random_findings(bbox: tuple[float, ...], n: int, kind: str, seed: int) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    x = rng.uniform(bbox[0], bbox[2], n)
    y = rng.uniform(bbox[1], bbox[3], n)
    squares = shapely.box(x, y, x + 1e-4, y + 1e-4)
    return gpd.GeoDataFrame({"kind": [kind] * n}, geometry=squares, crs="EPSG:4326")


@pytest.mark.parametrize("false_findings", [0, 150])
def test_the_injected_hotspots_are_the_significant_cells(
    demo_town: SampleInfo, false_findings: int
) -> None:
    truth = json.loads(Path(demo_town.truth).read_text())
    config = parse_aoi(
        {
            "name": "demo-town",
            "bbox": list(demo_town.bbox),
            "imagery": {"kind": "geotiff", "path": "i.tif"},
            "opendata": {"kind": "vector", "path": "o.geojson"},
        }
    )
    findings, _, _ = build_perfect_inputs(Path(demo_town.truth))
    findings = findings[findings["step"] == truth["steps"][0]]
    noise = [
        _random_findings(demo_town.bbox, false_findings * 4 // 5, "unsupported_by_imagery", 1),
        _random_findings(demo_town.bbox, false_findings // 5, "missing_in_opendata", 2),
    ]
    findings = pd.concat([findings, *noise], ignore_index=True)
    found = hotspots(
        gpd.GeoDataFrame(findings, crs="EPSG:4326"),
        config.tiles(),
        cell_zoom=config.hotspot_cell_zoom(),
        area=config.geometry,
    )
    injected = [shape(h["geometry"]) for h in truth["hotspots"]]
    assert len(injected) == 3
    assert all(found.intersects(disc).any() for disc in injected)
    near = shapely.union_all([d.buffer(5e-4) for d in injected])  # ~40-55 m around
    assert found.intersects(near).mean() >= 0.9  # few significant cells elsewhere
    assert (found["q_value"] <= 0.05).all()
