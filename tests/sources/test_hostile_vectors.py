"""Property-based: the vector reader fed random and hostile files answers with a
:class:`~pipeline.errors.VectorDataError` naming the file, or polygons in the engine's
form; no other exception (a traceback) escapes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.errors import VectorDataError
from pipeline.sources import VectorSpec, open_vector

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

number = st.floats(min_value=-1e3, max_value=1e3) | st.sampled_from([math.nan, math.inf, 1e308])
position = st.lists(number, min_size=0, max_size=4)
ring = st.lists(position, max_size=7)
value = st.none() | st.booleans() | st.integers() | number | st.text(max_size=20)
geometry = st.one_of(
    st.none(),
    st.builds(lambda r: {"type": "Polygon", "coordinates": [r]}, ring),
    st.builds(
        lambda rs: {"type": "MultiPolygon", "coordinates": [[r] for r in rs]},
        st.lists(ring, max_size=3),
    ),
    st.builds(lambda p: {"type": "Point", "coordinates": p}, position),
    st.builds(
        lambda t, c: {"type": t, "coordinates": c},
        st.text(max_size=10),
        st.lists(value, max_size=3),
    ),
    st.builds(
        lambda gs: {"type": "GeometryCollection", "geometries": gs},
        st.lists(st.builds(lambda r: {"type": "Polygon", "coordinates": [r]}, ring), max_size=2),
    ),
)
feature = st.builds(
    lambda g, props: {"type": "Feature", "geometry": g, "properties": props},
    geometry,
    st.dictionaries(
        st.sampled_from(["id", "osm_id", "name", "feature_id", "", "ü"]), value, max_size=4
    ),
)
collection = st.builds(
    lambda fs, crs: {"type": "FeatureCollection", "features": fs, **crs},
    st.lists(feature, max_size=6),
    st.sampled_from(
        [
            {},
            {"crs": {"type": "name", "properties": {"name": "EPSG:32616"}}},
            {"crs": {"type": "name", "properties": {"name": "nonsense"}}},
        ]
    ),
)
SMALL_BBOX = (-0.5, -0.5, 0.5, 0.5)


def _read(path: Path, bbox: tuple[float, ...] | None) -> None:
    try:
        with open_vector(VectorSpec(path=str(path))) as src:
            gdf = src.read(bbox)
    except VectorDataError as exc:
        assert path.name in str(exc)
        return
    assert gdf.crs.to_epsg() == 4326
    assert gdf.geom_type.isin(["Polygon", "MultiPolygon"]).all()
    assert gdf["feature_id"].is_unique and not gdf.geometry.is_empty.any()


@SETTINGS
@given(collection, st.sampled_from([None, SMALL_BBOX]))
@example(
    {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "geometry": None, "properties": {}}],
    },
    None,
)
def test_random_geojson_gives_a_vector_error_or_polygons(tmp_path_factory, data, bbox) -> None:  # noqa: ANN001
    path = Path(tmp_path_factory.mktemp("hostile")) / "hostile.geojson"
    path.write_text(json.dumps(data))
    _read(path, bbox)


@SETTINGS
@given(
    st.binary(max_size=2000),
    st.sampled_from(
        ["hostile.geojson", "hostile.gpkg", "hostile.fgb", "hostile.parquet", "hostile.shp"]
    ),
)
def test_random_bytes_give_a_vector_error(tmp_path_factory, data: bytes, name: str) -> None:  # noqa: ANN001
    path = Path(tmp_path_factory.mktemp("hostile")) / name
    path.write_bytes(data)
    _read(path, None)
