"""Vector open data: the real OSM / SpaceNet footprints, format conversions, bad files."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pydantic import TypeAdapter, ValidationError

from pipeline.aoi.config import ValidationSettings
from pipeline.errors import VectorDataError
from pipeline.sources import OpenDataSpec, VectorSpec, open_vector
from pipeline.validate import suite_parameters
from pipeline.validate.gx import run_suite
from pipeline.validate.profiles import opendata_snapshot_profile

DATA = Path(__file__).resolve().parents[1] / "data"
OSM = DATA / "oam-lalitpur" / "buildings_osm.geojson"
SPACENET = DATA / "spacenet4-atlanta" / "buildings.geojson"


def _read(path: Path | str, bbox=None, **spec) -> gpd.GeoDataFrame:  # noqa: ANN001
    with open_vector(VectorSpec(path=str(path), **spec)) as src:
        return src.read(bbox)


def _fc(features: list[dict], **extra: object) -> str:
    return json.dumps({"type": "FeatureCollection", "features": features, **extra})


def _feature(geometry: dict, **props: object) -> dict:
    return {"type": "Feature", "geometry": geometry, "properties": props}


SQUARE = {
    "type": "Polygon",
    "coordinates": [[[0, 0], [0, 0.001], [0.001, 0.001], [0.001, 0], [0, 0]]],
}
POINT = {"type": "Point", "coordinates": [0.5, 0.5]}
LINE = {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}
FAR = {"type": "Polygon", "coordinates": [[[1, 1], [1, 1.001], [1.001, 1.001], [1.001, 1], [1, 1]]]}


def test_osm_geojson() -> None:
    gdf = _read(OSM)
    assert len(gdf) == 80 and gdf.crs.to_epsg() == 4326
    assert list(gdf.columns) == ["feature_id", "osm_id", "geometry"]
    assert gdf.feature_id.is_unique and all(isinstance(v, str) for v in gdf.feature_id)
    assert set(gdf.geom_type) <= {"Polygon", "MultiPolygon"}
    with_osm = gdf[gdf.osm_id.notna()]
    assert (with_osm.feature_id == with_osm.osm_id.astype("int64").astype(str)).all()
    # the 23 features without osm_id get stable geometry ids
    generated = gdf.feature_id[gdf.osm_id.isna()]
    assert len(generated) == 23 and generated.str.match(r"^g[0-9a-f]{16}$").all()
    assert _read(OSM).feature_id.tolist() == gdf.feature_id.tolist()


def test_projected_geojson_is_reprojected() -> None:
    gdf = _read(SPACENET)
    assert len(gdf) == 43 and gdf.crs.to_epsg() == 4326
    w, s, e, n = gdf.total_bounds
    assert -84.482 < w < e < -84.476 and 33.636 < s < n < 33.641  # over the SpaceNet scene


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("b.gpkg", lambda g, p: g.to_file(p, layer="buildings", driver="GPKG")),
        ("b.shp", lambda g, p: g.to_file(p, driver="ESRI Shapefile")),
        ("b.parquet", lambda g, p: g.to_parquet(p)),
        ("b.fgb", lambda g, p: g.to_file(p, driver="FlatGeobuf")),
    ],
)
def test_format_conversions_read_the_same_features(tmp_path: Path, name: str, write) -> None:  # noqa: ANN001
    original = gpd.read_file(OSM)
    write(original, tmp_path / name)
    reference = _read(OSM).set_index("feature_id")
    got = _read(tmp_path / name).set_index("feature_id")
    assert got.crs.to_epsg() == 4326
    assert sorted(got.index) == sorted(reference.index)
    aligned = shapely.normalize(got.geometry.loc[reference.index].values)  # Shapefile rewinds rings
    assert shapely.equals_exact(aligned, shapely.normalize(reference.geometry.values), 1e-9).all()


def test_bbox_and_where_filters(tmp_path: Path) -> None:
    everything = _read(OSM)
    bbox = (85.535, 27.62, 85.54, 27.63)
    subset = _read(OSM, bbox=bbox)
    assert 0 < len(subset) < len(everything)
    assert subset.intersects(shapely.box(*bbox)).all()
    expected = everything[everything.intersects(shapely.box(*bbox))]
    assert set(subset.feature_id) == set(expected.feature_id)

    big = _read(OSM, where="osm_id > 1000000000")
    assert 0 < len(big) < 57 and (big.osm_id > 1e9).all()
    gpd.read_file(OSM).to_parquet(tmp_path / "b.parquet")
    assert set(_read(tmp_path / "b.parquet", where="osm_id > 1000000000").feature_id) == set(
        big.feature_id
    )
    gpd.read_file(SPACENET).to_file(tmp_path / "utm.gpkg")  # bbox given in lon/lat, data in UTM
    assert len(_read(tmp_path / "utm.gpkg", bbox=(-84.480, 33.636, -84.478, 33.641))) < 43
    with pytest.raises(VectorDataError, match="filter where='no_such_field = 1' is not valid"):
        _read(OSM, where="no_such_field = 1")


def test_bbox_without_features_is_empty_not_an_error() -> None:
    gdf = _read(OSM, bbox=(10.0, 10.0, 10.1, 10.1))
    assert len(gdf) == 0 and "feature_id" in gdf.columns


def test_non_polygons_are_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "mixed.geojson"
    collection = {"type": "GeometryCollection", "geometries": [POINT, SQUARE]}
    path.write_text(
        _fc(
            [
                _feature(SQUARE, id="a"),
                _feature(POINT, id="b"),
                _feature(LINE, id="c"),
                _feature(collection, id="d"),
            ]
        )
    )
    with caplog.at_level(logging.INFO, logger="pipeline.sources.vector"):
        gdf = _read(path)
    assert gdf.feature_id.tolist() == ["a", "d"] and (gdf.geom_type == "Polygon").all()
    assert "dropped 2 non-polygon features (1 LineString, 1 Point)" in caplog.text


@pytest.mark.parametrize("bbox", [None, (-0.01, -0.01, 0.01, 0.01)], ids=["all", "bbox"])
@pytest.mark.parametrize("driver", ["GeoJSON", "GPKG", "ESRI Shapefile"])
def test_null_and_empty_geometries_are_counted_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, driver: str, bbox
) -> None:  # noqa: ANN001
    source = tmp_path / "nulls.geojson"
    empty = {"type": "Polygon", "coordinates": []}
    source.write_text(
        _fc(
            [
                _feature(SQUARE, id="a"),
                _feature(None, id="null-1"),
                _feature(None, id="null-2"),
                _feature(empty, id="empty"),
                _feature(FAR, id="far"),
            ]
        )
    )
    path = source
    if driver != "GeoJSON":  # the same features in another format
        frame = gpd.read_file(source)
        path = tmp_path / ("nulls.gpkg" if driver == "GPKG" else "nulls.shp")
        frame.to_file(path, driver=driver)
    with open_vector(VectorSpec(path=str(path))) as src, caplog.at_level(logging.WARNING):
        gdf = src.read(bbox)
        info = src.read_info()
    assert gdf.feature_id.tolist() == (["a"] if bbox else ["a", "far"])
    # a bbox filter never returns features without geometry: they are counted apart
    assert info["no_geometry"] == 3
    assert info["n_read"] == (4 if bbox else 5)  # "far" lies outside the bbox
    assert "3 features have no geometry (null or empty) and were left out" in caplog.text
    profile = opendata_snapshot_profile(info, {}, len(gdf), None)
    assert int(profile.at[0, "n_no_geometry"]) == 3
    failed = run_suite("opendata.snapshot", profile, suite_parameters(ValidationSettings())).failed
    assert ("n_no_geometry", "warning") in {(f.column, f.severity) for f in failed}


def test_generated_ids_are_stable_and_unique(tmp_path: Path) -> None:
    path = tmp_path / "noid.geojson"
    other = {"type": "Polygon", "coordinates": [[[1, 1], [1, 2], [2, 2], [1, 1]]]}
    path.write_text(_fc([_feature(SQUARE, name="x"), _feature(other), _feature(SQUARE)]))
    ids = _read(path).feature_id.tolist()
    assert ids[0].startswith("g") and ids[2] == f"{ids[0]}-2" and len(set(ids)) == 3
    assert _read(path).feature_id.tolist() == ids


def test_id_field_option(tmp_path: Path) -> None:
    path = tmp_path / "ids.geojson"
    path.write_text(_fc([_feature(SQUARE, ref=7, id=1), _feature(LINE, ref=7, id=2)]))
    assert _read(path, id_field="ref").feature_id.tolist() == ["7"]
    with pytest.raises(VectorDataError, match="id_field 'nope' not found; columns: ref, id"):
        _read(path, id_field="nope")


def test_fingerprint_is_sha256_of_the_bytes(tmp_path: Path) -> None:
    with open_vector(VectorSpec(path=str(OSM))) as src:
        assert src.fingerprint() == hashlib.sha256(OSM.read_bytes()).hexdigest()
    gpd.read_file(OSM).to_file(tmp_path / "b.shp")
    with open_vector(
        VectorSpec(path="{step}/b.shp"), step=tmp_path.name, base_dir=tmp_path.parent
    ) as src:
        first = src.fingerprint()
    (tmp_path / "b.dbf").write_bytes((tmp_path / "b.dbf").read_bytes() + b"\0")
    with open_vector(VectorSpec(path=str(tmp_path / "b.shp"))) as src:
        assert src.fingerprint() != first  # any part of a Shapefile counts


def test_url_is_downloaded_once_and_hashed(http_root) -> None:  # noqa: ANN001
    root, url = http_root
    (root / "b.geojson").write_bytes(OSM.read_bytes())
    with open_vector(VectorSpec(path=f"{url}/b.geojson")) as src:
        assert src.fingerprint() == hashlib.sha256(OSM.read_bytes()).hexdigest()
        assert src.read().feature_id.tolist() == _read(OSM).feature_id.tolist()
    with pytest.raises(VectorDataError, match=r"missing\.geojson: cannot download"):
        open_vector(VectorSpec(path=f"{url}/missing.geojson")).read()


# --- broken inputs -------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VectorDataError, match=r"nope\.geojson: file not found"):
        open_vector(VectorSpec(path="nope.geojson"), base_dir=tmp_path)


def test_empty_geojson(tmp_path: Path) -> None:
    path = tmp_path / "empty.geojson"
    path.write_text(_fc([]))
    with pytest.raises(VectorDataError, match=r"empty\.geojson: no features"):
        _read(path)


def test_invalid_geojson_text(tmp_path: Path) -> None:
    path = tmp_path / "broken.geojson"
    path.write_text(_fc([_feature(SQUARE, id=1)])[:-20])
    with pytest.raises(
        VectorDataError, match=r"broken\.geojson: cannot read vector data \(invalid JSON"
    ):
        _read(path)


def test_duplicate_ids(tmp_path: Path) -> None:
    path = tmp_path / "dups.geojson"
    path.write_text(
        _fc([_feature(SQUARE, osm_id=7), _feature(SQUARE, osm_id=7), _feature(SQUARE, osm_id=8)])
    )
    with pytest.raises(
        VectorDataError,
        match=r"dups\.geojson: field 'osm_id' has duplicate ids \(1 values, e\.g\. 7\)",
    ):
        _read(path)


def test_only_points_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "lines.geojson"
    path.write_text(_fc([_feature(POINT, id=1), _feature(LINE, id=2)]))
    with pytest.raises(VectorDataError, match=r"lines\.geojson: no polygon features"):
        _read(path)


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_no_crs_and_projected_coordinates(tmp_path: Path) -> None:
    utm = gpd.read_file(SPACENET)
    utm.set_crs(None, allow_override=True).to_file(tmp_path / "nocrs.shp")
    assert not (tmp_path / "nocrs.prj").exists()
    for bbox in (None, (-84.5, 33.6, -84.3, 33.8)):  # the whole file, or a lon/lat AOI
        with pytest.raises(
            VectorDataError,
            match=r"nocrs\.shp: data has no CRS and coordinates are not lon/lat .*needs its \.prj",
        ):
            _read(tmp_path / "nocrs.shp", bbox=bbox)
    lonlat = gpd.read_file(OSM)
    lonlat.set_crs(None, allow_override=True).to_file(tmp_path / "ll.shp")
    assert _read(tmp_path / "ll.shp").crs.to_epsg() == 4326  # plausible lon/lat is accepted


def test_not_a_vector_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gpkg"
    path.write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.raises(VectorDataError, match=r"x\.gpkg: cannot read vector data"):
        _read(path)


def test_unknown_layer_lists_the_layers(tmp_path: Path) -> None:
    gpd.read_file(OSM).to_file(tmp_path / "b.gpkg", layer="buildings")
    with pytest.raises(
        VectorDataError, match=r"b\.gpkg: cannot read layer 'roads' .*; layers: buildings"
    ):
        _read(tmp_path / "b.gpkg", layer="roads")


# --- layers, GeoParquet, URLs ----------------------------------------------------------


def test_a_file_with_several_layers_needs_layer(tmp_path: Path) -> None:
    gdf = gpd.read_file(OSM)
    gdf.to_file(tmp_path / "two.gpkg", layer="buildings")
    gdf.head(3).to_file(tmp_path / "two.gpkg", layer="footprints_2019")
    with pytest.raises(
        VectorDataError,
        match=r"two\.gpkg: has 2 layers \(buildings, footprints_2019\); set 'layer'",
    ):
        _read(tmp_path / "two.gpkg")
    assert len(_read(tmp_path / "two.gpkg", layer="footprints_2019")) == 3
    assert len(_read(tmp_path / "two.gpkg", layer="buildings")) == 80
    gdf.head(1).to_file(tmp_path / "one.gpkg", layer="only")
    with sqlite3.connect(tmp_path / "one.gpkg") as conn:  # a non-spatial table does not count
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier) "
            "VALUES ('notes', 'attributes', 'notes')"
        )
    assert len(_read(tmp_path / "one.gpkg")) == 1


def test_geoparquet_projected_with_bbox_pushdown(tmp_path: Path) -> None:
    utm = gpd.read_file(SPACENET)
    utm.to_parquet(tmp_path / "plain.parquet")
    utm.to_parquet(tmp_path / "covered.parquet", write_covering_bbox=True)
    bbox = (-84.480, 33.636, -84.478, 33.641)
    reference = _read(SPACENET, bbox=bbox)
    for name in ("plain.parquet", "covered.parquet"):
        with open_vector(VectorSpec(path=str(tmp_path / name))) as src:
            everything = src.read()
            assert len(everything) == 43 and everything.crs.to_epsg() == 4326
            subset = src.read(bbox)
            assert src.read_info()["crs"] == "EPSG:32616"
        assert sorted(subset.feature_id) == sorted(reference.feature_id) and len(subset) < 43
    with open_vector(VectorSpec(path=str(tmp_path / "covered.parquet"))) as src:
        assert src.read(bbox) is not None and src.read_info()["n_read"] < 43  # pushed down


def test_plain_parquet_and_layer_are_errors(tmp_path: Path) -> None:
    pd.DataFrame({"id": [1], "wkb": [b"\x00"]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(VectorDataError, match=r"p\.parquet: Parquet file has no 'geo' metadata"):
        _read(tmp_path / "p.parquet")
    gpd.read_file(OSM).to_parquet(tmp_path / "b.parquet")
    with pytest.raises(VectorDataError, match="'layer' is not used by GeoParquet"):
        _read(tmp_path / "b.parquet", layer="buildings")


def test_urls_are_streamed_to_a_temporary_file(
    http_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    root, url = http_root
    (root / "b.geojson").write_bytes(OSM.read_bytes())
    gpd.read_file(OSM).to_parquet(root / "b.parquet")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with open_vector(VectorSpec(path=f"{url}/b.geojson?token=abc")) as src:
        got = src.read()
        files = [p for p in scratch.rglob("*") if p.is_file()]
        assert [p.name for p in files] == ["b.geojson"]  # on disk, named like the URL
        assert files[0].read_bytes() == OSM.read_bytes()
        assert src.fingerprint() == hashlib.sha256(OSM.read_bytes()).hexdigest()
        assert src.path == f"{url}/b.geojson?***"
    assert not any(scratch.iterdir())  # removed on close
    assert got.feature_id.tolist() == _read(OSM).feature_id.tolist()
    parquet = _read(f"{url}/b.parquet")
    assert sorted(parquet.feature_id) == sorted(got.feature_id)


def test_url_errors_mask_the_query_string(http_root) -> None:  # noqa: ANN001
    _, url = http_root
    with pytest.raises(VectorDataError) as e:
        _read(f"{url}/missing.geojson?token=SECRET")
    assert str(e.value).startswith(f"{url}/missing.geojson?***: cannot download (HTTP Error 404")
    assert "SECRET" not in str(e.value)


def test_opendata_spec_is_discriminated_by_kind() -> None:
    adapter = TypeAdapter(OpenDataSpec)
    assert isinstance(adapter.validate_python({"path": "b.gpkg"}), VectorSpec)  # as before
    kinds = {
        "vector": {"path": "b.gpkg"},
        "overpass": {},
        "osm_pbf": {"path": "x.osh.pbf"},
        "wfs": {"url": "https://h/wfs", "type_name": "b"},
        "arcgis": {"url": "https://h/arcgis/rest/services/B/FeatureServer/0?token=t"},
        "postgis": {"url": "postgresql://u:pw@db/gis", "table": "osm.buildings"},
    }
    for kind, fields in kinds.items():
        spec = adapter.validate_python({"kind": kind, **fields})
        assert spec.kind == kind and "://" in spec.path or kind in ("vector", "osm_pbf")
        assert "pw" not in spec.path and "token=t" not in spec.path
    with pytest.raises(ValidationError, match="Extra inputs"):
        adapter.validate_python({"kind": "wfs", "url": "u", "type_name": "b", "layer": "x"})
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        adapter.validate_python({"kind": "shapefile", "path": "x"})
    with pytest.raises(ValidationError, match="exactly one of 'table' or 'query'"):
        adapter.validate_python({"kind": "postgis", "url": "postgresql://db/gis"})
