"""Errors planted into the real Lalitpur OpenStreetMap buildings over the OpenAerialMap
tiles' outline: what is deleted, added and moved, and that it repeats for a seed."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.errors import ConfigError, VectorDataError
from pipeline.sample.plant import PlantConfig, Planted, plant_errors
from pipeline.sources import VectorSpec, open_imagery, open_vector
from pipeline.sources.specs import XyzSpec

DATA = Path(__file__).resolve().parents[1] / "data" / "oam-lalitpur"
UTM = "EPSG:32645"  # Lalitpur


@pytest.fixture(scope="module")
def footprints() -> gpd.GeoDataFrame:
    # ids from osm_id; the buildings without one get geometry ids, as in an audit
    spec = VectorSpec(path=str(DATA / "buildings_osm.geojson"), id_field="osm_id")
    with open_vector(spec) as source:
        frame = source.read()
    assert frame["feature_id"].is_unique
    return frame


@pytest.fixture(scope="module")
def outline():
    with open_imagery(XyzSpec(path=str(DATA / "tiles"), zoom=19)) as source:
        return source.footprint()


@pytest.fixture(scope="module")
def planted(footprints, outline) -> Planted:
    return plant_errors(footprints, outline, PlantConfig(seed=0))


def _metric(frame: gpd.GeoDataFrame) -> np.ndarray:
    return frame.to_crs(UTM).geometry.to_numpy()


def _on_imagery_ids(footprints, outline, share=0.9) -> set[str]:
    geoms = _metric(footprints)
    shape = gpd.GeoSeries([outline], crs=4326).to_crs(UTM).iloc[0]
    inside = shapely.area(shapely.intersection(geoms, shape)) / shapely.area(geoms)
    return set(footprints["feature_id"][inside >= share])


def test_on_imagery_are_the_footprints_mostly_inside_the_outline(planted, footprints, outline):
    expected = _on_imagery_ids(footprints, outline)
    assert 10 < len(expected) < len(footprints)  # some buildings lie beyond the tiles
    assert set(planted.on_imagery["feature_id"]) == expected
    assert planted.on_imagery.crs.to_epsg() == 4326


@pytest.mark.parametrize(
    "shares",
    [(0.15, 0.10, 0.10), (0.5, 0.0, 0.25), (0.0, 0.2, 0.0), (0.001, 0.001, 0.001)],
)
def test_counts_follow_the_shares(footprints, outline, shares):
    delete, phantom, shift = shares
    config = PlantConfig(delete_share=delete, phantom_share=phantom, shift_share=shift, seed=3)
    p = plant_errors(footprints, outline, config)
    n = len(p.on_imagery)

    def count(share: float) -> int:  # a positive share plants at least one
        return max(1, round(n * share)) if share > 0 else 0

    assert len(p.deleted) == count(delete)
    assert len(p.phantoms) == count(phantom)
    assert len(p.shifted) == count(shift)
    assert len(p.opendata) == len(footprints) - len(p.deleted) + len(p.phantoms)


def test_deleted_buildings_are_gone_and_the_rest_is_kept(planted, footprints):
    ids = set(planted.opendata["feature_id"])
    deleted = set(planted.deleted["feature_id"])
    phantoms = set(planted.phantoms["feature_id"])
    assert deleted and deleted <= set(planted.on_imagery["feature_id"])
    assert not deleted & ids
    assert ids == (set(footprints["feature_id"]) - deleted) | phantoms
    assert planted.opendata["feature_id"].is_unique
    # a deleted building's truth is its real footprint
    real = footprints.set_index("feature_id").to_crs(UTM).geometry
    for fid, geom in zip(planted.deleted["feature_id"], _metric(planted.deleted), strict=True):
        assert geom.symmetric_difference(real[fid]).area < 1e-3
    # buildings neither deleted nor shifted are unchanged
    untouched = ids - phantoms - set(planted.shifted["feature_id"])
    corrupted = planted.opendata.set_index("feature_id").to_crs(UTM).geometry
    assert max(corrupted[f].hausdorff_distance(real[f]) for f in untouched) < 1e-3


def test_phantoms_are_building_shaped_inside_the_outline_and_clear_of_buildings(
    planted, footprints, outline
):
    phantoms = _metric(planted.phantoms)
    real = _metric(footprints)
    shape = gpd.GeoSeries([outline], crs=4326).to_crs(UTM).iloc[0]
    assert len(phantoms) > 0
    assert shapely.within(phantoms, shape.buffer(1e-6)).all()
    clearance = [shapely.distance(p, real).min() for p in phantoms]
    assert min(clearance) >= PlantConfig().clearance_m - 1e-6  # room enough at 3 m here
    for i, p in enumerate(phantoms):
        others = np.delete(phantoms, i)
        assert shapely.distance(p, others).min() >= 0.5
        # the shape of a real building, turned
        assert np.isclose(shapely.area(real), p.area, rtol=1e-6).any()
    assert all(f.startswith("phantom-") for f in planted.phantoms["feature_id"])
    in_data = planted.opendata.set_index("feature_id").to_crs(UTM).geometry
    for fid, geom in zip(planted.phantoms["feature_id"], phantoms, strict=True):
        assert in_data[fid].symmetric_difference(geom).area < 1e-3


def test_shifted_buildings_move_2_to_4_m_unchanged_in_shape(planted, footprints):
    shifted = planted.shifted
    assert len(shifted) > 0
    assert not set(shifted["feature_id"]) & set(planted.deleted["feature_id"])
    assert set(shifted["feature_id"]) <= set(planted.on_imagery["feature_id"])
    moved = _metric(shifted)
    true = gpd.GeoSeries(shifted["true_geometry"].to_numpy(), crs=4326).to_crs(UTM).to_numpy()
    dist = shapely.distance(shapely.centroid(moved), shapely.centroid(true))
    assert ((dist >= 2.0 - 1e-6) & (dist <= 4.0 + 1e-6)).all()
    assert np.allclose(shapely.area(moved), shapely.area(true), rtol=1e-6)
    real = footprints.set_index("feature_id").to_crs(UTM).geometry
    in_data = planted.opendata.set_index("feature_id").to_crs(UTM).geometry
    for fid, m, t in zip(shifted["feature_id"], moved, true, strict=True):
        assert t.symmetric_difference(real[fid]).area < 1e-3  # truth: where it is
        assert in_data[fid].symmetric_difference(m).area < 1e-3  # data: where it was put


def test_shift_range_is_honoured(footprints, outline):
    p = plant_errors(footprints, outline, PlantConfig(shift_share=0.5, shift_m=(5.0, 5.0), seed=1))
    moved = _metric(p.shifted)
    true = gpd.GeoSeries(p.shifted["true_geometry"].to_numpy(), crs=4326).to_crs(UTM).to_numpy()
    dist = shapely.distance(shapely.centroid(moved), shapely.centroid(true))
    assert np.allclose(dist, 5.0, atol=1e-4)


def _same(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> bool:
    return a["feature_id"].tolist() == b["feature_id"].tolist() and bool(
        a.geometry.geom_equals_exact(b.geometry, tolerance=0).all()
    )


def test_same_seed_same_errors_other_seed_other_errors(planted, footprints, outline):
    again = plant_errors(footprints, outline, PlantConfig(seed=0))
    for name in ("opendata", "deleted", "phantoms", "shifted", "on_imagery"):
        assert _same(getattr(planted, name), getattr(again, name)), name
    other = plant_errors(footprints, outline, PlantConfig(seed=1))
    assert set(other.deleted["feature_id"]) != set(planted.deleted["feature_id"])
    assert not _same(other.phantoms, planted.phantoms)


def test_footprints_in_another_crs_give_the_same_errors(planted, footprints, outline):
    p = plant_errors(footprints.to_crs(3857), outline, PlantConfig(seed=0))
    assert p.opendata.crs.to_epsg() == 4326
    assert set(p.deleted["feature_id"]) == set(planted.deleted["feature_id"])
    assert set(p.shifted["feature_id"]) == set(planted.shifted["feature_id"])


def test_no_footprint_on_the_imagery(footprints, outline):
    far = shapely.affinity.translate(outline, 1.0, 0.0)  # a degree east
    with pytest.raises(VectorDataError, match="no footprint lies on the imagery"):
        plant_errors(footprints, far)


def test_phantoms_that_do_not_fit_are_an_error(footprints):
    # the outline of one building, barely larger: no room for a phantom beside it
    one = footprints.to_crs(UTM).geometry.iloc[0].buffer(0.2)
    outline = gpd.GeoSeries([one], crs=UTM).to_crs(4326).iloc[0]
    with pytest.raises(VectorDataError, match=r"only 0 of 1 phantom footprints fit"):
        plant_errors(footprints, outline, PlantConfig(delete_share=0, shift_share=0))


def test_bad_inputs(footprints, outline):
    with pytest.raises(VectorDataError, match="feature_id"):
        plant_errors(footprints.drop(columns="feature_id"), outline)
    with pytest.raises(VectorDataError, match="no CRS"):
        plant_errors(footprints.set_crs(None, allow_override=True), outline)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"delete_share": 1.5}, "delete_share"),
        ({"phantom_share": -0.1}, "phantom_share"),
        ({"shift_share": 2}, "shift_share"),
        ({"on_imagery_share": 1.01}, "on_imagery_share"),
        ({"shift_m": (4.0, 2.0)}, "shift_m"),
        ({"shift_m": (-1.0, 2.0)}, "shift_m"),
    ],
)
def test_bad_configs(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        PlantConfig(**kwargs)
