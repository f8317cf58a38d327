"""Property-based: the AOI parser fed random and hostile input answers with a
:class:`~pipeline.errors.ConfigError` naming the input, or a valid configuration; no
other exception (a traceback) escapes."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.aoi import load_aoi, parse_aoi
from pipeline.aoi.config import AoiConfig
from pipeline.errors import ConfigError

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["../../etc/passwd", "${HOME}", "{step}", "2025-06-01", "latest", "xyz"])
)
json_like = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=30,
)
coordinate = st.floats(min_value=-400, max_value=400) | st.sampled_from(
    [math.nan, math.inf, -math.inf]
)
ring = st.lists(st.tuples(coordinate, coordinate).map(list), min_size=0, max_size=8)
polygons = st.one_of(
    st.builds(lambda r: {"type": "Polygon", "coordinates": [r]}, ring),
    st.builds(
        lambda rs: {"type": "MultiPolygon", "coordinates": [[r] for r in rs]},
        st.lists(ring, max_size=3),
    ),
    st.builds(lambda t, c: {"type": t, "coordinates": c}, st.text(max_size=12), json_like),
)
BASE = {
    "name": "town",
    "work_zoom": 18,
    "shard_zoom": 16,
    "imagery": {"kind": "geotiff", "path": "a.tif"},
    "opendata": {"kind": "vector", "path": "b.geojson"},
}
# well-formed files with one field replaced by something random
mutated = st.builds(
    lambda key, value: {**BASE, "bbox": [8.54, 47.36, 8.55, 47.37], key: value},
    st.sampled_from(
        [*BASE, "bbox", "steps", "dates", "thresholds", "validation", "model", "polygon"]
    ),
    json_like,
)
with_polygon = st.builds(lambda p: {**BASE, "polygon": p}, polygons)
bboxes = st.builds(
    lambda b: {**BASE, "bbox": b}, st.lists(coordinate | scalars, min_size=0, max_size=6)
)


def _only_config_errors(data: object) -> None:
    try:
        config = parse_aoi(data, source="hostile.yaml")
    except ConfigError as exc:
        assert "hostile.yaml" in str(exc)
        return
    # what is accepted is usable: finite bounds inside the web-mercator world, tiles
    assert isinstance(config, AoiConfig)
    assert all(math.isfinite(v) for v in config.bounds)
    w, s, e, n = config.bounds
    assert -180 <= w <= e <= 180 and -85.06 <= s <= n <= 85.06


@SETTINGS
@given(json_like | mutated | with_polygon | bboxes)
def test_random_mappings_give_a_config_error_or_a_valid_aoi(data: object) -> None:
    _only_config_errors(data)


@SETTINGS
@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
@example("?")  # {None: None}: a key that is not text (found by this test)
@example("name: x\nbase_dir: /etc\n")  # an internal field set from the file
@example("bbox: [1e400, 0, 1, 1]\n")
def test_random_yaml_text_gives_a_config_error(tmp_path_factory, text: str) -> None:  # noqa: ANN001
    path = Path(tmp_path_factory.mktemp("hostile")) / "aoi.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_aoi(path)
    except ConfigError as exc:
        assert str(path) in str(exc)


@SETTINGS
@given(mutated | with_polygon)
def test_hostile_yaml_documents_give_a_config_error_or_a_valid_aoi(tmp_path_factory, data) -> None:  # noqa: ANN001
    path = Path(tmp_path_factory.mktemp("hostile")) / "aoi.yaml"
    try:
        text = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        load_aoi(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
