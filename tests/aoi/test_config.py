"""AOI configuration files: valid ones load, malformed or hostile ones are refused clearly."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipeline.aoi import check_step, load_aoi, parse_aoi
from pipeline.errors import ConfigError

VALID = {
    "name": "old-town",
    "bbox": [8.54, 47.36, 8.55, 47.37],
    "work_zoom": 18,
    "shard_zoom": 16,
    "imagery": {"kind": "geotiff", "path": "imagery/{step}.tif"},
    "opendata": {"kind": "vector", "path": "buildings.geojson"},
}


def write(tmp_path: Path, data: object, name: str = "aoi.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_valid_file_loads_with_defaults(tmp_path: Path) -> None:
    config = load_aoi(write(tmp_path, VALID))
    assert config.name == "old-town"
    assert config.base_dir == tmp_path.resolve()
    assert config.thresholds.qod_flag == 80.0
    assert 0.5 < config.area_km2() < 1.0
    tiles = config.tiles()
    shards = config.shards()
    assert sum(len(v) for v in shards.values()) == len(tiles) > 20
    absolute = config.with_absolute_paths()
    assert absolute.imagery.path == str(tmp_path.resolve() / "imagery/{step}.tif")


def _sample_town_config(root: Path):
    """The sample town's AOI settings (no files needed: only its model settings are read)."""
    from pipeline.sample import SampleInfo
    from pipeline.sample.demo import sample_aoi_config

    info = SampleInfo(
        root=root,
        steps=("2025-06-01",),
        imagery={},
        opendata={},
        truth=root / "truth.json",
        bbox=(8.54, 47.36, 8.55, 47.37),
        crs="EPSG:32632",
    )
    return sample_aoi_config(info)


def test_training_rotates_and_flips_chips_unless_the_aoi_says_no(tmp_path: Path) -> None:
    """On by default (measured on real imagery); the synthetic sample town turns it off."""
    assert load_aoi(write(tmp_path, VALID)).model.train.geometric_augment is True
    off = {**VALID, "model": {"train": {"geometric_augment": False}}}
    assert load_aoi(write(tmp_path, off)).model.train.geometric_augment is False
    assert _sample_town_config(tmp_path).model.train.geometric_augment is False


def test_an_aoi_trains_the_pretrained_network_unless_it_names_one(tmp_path):
    """EfficientNet-Lite0 from packaged ImageNet weights by default (measured on real
    imagery); the synthetic sample town names the fast MobileNetV3 its figures were
    measured with."""
    assert load_aoi(write(tmp_path, VALID)).model.encoder == "tu-tf_efficientnet_lite0"
    named = {**VALID, "model": {"encoder": "resnet18"}}
    assert load_aoi(write(tmp_path, named)).model.encoder == "resnet18"
    assert _sample_town_config(tmp_path).model.encoder == "tu-mobilenetv3_small_100"


@pytest.mark.parametrize(
    ("bbox", "thresholds", "zoom"),
    [
        ([8.54, 47.36, 8.55, 47.37], {}, 20),  # z20 tiles are 26 m across here
        ([8.54, -0.005, 8.55, 0.005], {}, 20),  # 38 m at the equator
        ([8.54, 63.00, 8.55, 63.01], {}, 19),  # z19: 35 m at 63 degrees (z20: 17 m)
        ([8.54, 47.36, 8.55, 47.37], {"hotspot_cell_zoom": 16}, 16),
    ],
)
def test_hotspot_cells_are_about_30_m_unless_configured(
    tmp_path: Path, bbox: list[float], thresholds: dict, zoom: int
) -> None:
    config = load_aoi(write(tmp_path, {**VALID, "bbox": bbox, "thresholds": thresholds}))
    assert config.hotspot_cell_zoom() == zoom


def test_polygon_aoi_covers_fewer_tiles_than_its_bbox(tmp_path: Path) -> None:
    triangle = {
        "type": "Polygon",
        "coordinates": [[[8.54, 47.36], [8.56, 47.36], [8.54, 47.38], [8.54, 47.36]]],
    }
    data = {**VALID, "polygon": triangle}
    del data["bbox"]
    config = load_aoi(write(tmp_path, data))
    boxed = parse_aoi({**VALID, "bbox": [8.54, 47.36, 8.56, 47.38]})
    assert 0 < len(config.tiles()) < len(boxed.tiles())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"colour": "red"}, r"colour: Extra inputs are not permitted"),
        ({"name": "../../etc/passwd"}, r"name: .*no paths"),
        ({"name": "Old Town"}, r"name: .*lowercase"),
        ({"bbox": [8.56, 47.36, 8.55, 47.37]}, r"west < east"),
        ({"bbox": [800, 47.36, 801, 47.37]}, r"inside the web-mercator range"),
        ({"work_zoom": 30}, r"work_zoom: Input should be less than or equal to 22"),
        ({"shard_zoom": 19}, r"shard zoom must be within"),
        ({"shard_zoom": 10}, r"more than 5 zooms above"),
        (
            {"imagery": {"kind": "wcs", "path": "x"}},
            r"imagery: Input tag 'wcs' found using 'kind' does not match",
        ),
        ({"imagery": {"kind": "geotiff"}}, r"imagery\.geotiff\.path: Field required"),
        (
            {"opendata": {"kind": "vector", "path": "b.geojson", "nope": 1}},
            r"opendata\.vector\.nope: Extra inputs",
        ),
        ({"steps": ["2025-13-01"]}, r"not a calendar date"),
        ({"validation": {"min_area_m2": 500, "max_area_m2": 50}}, r"must be below max_area_m2"),
        ({"validation": {"max_nodata": 0.5}}, r"validation\.max_nodata: Extra inputs"),
        ({"steps": ["last week"]}, r"ISO date"),
        (
            {"thresholds": {"hotspot_alpha": 1.5}},
            r"thresholds\.hotspot_alpha: Input should be less",
        ),
        (
            {"thresholds": {"hotspot_permutations": 10}},
            r"thresholds\.hotspot_permutations: Input should be greater than or equal to 99",
        ),
        (
            {"polygon": {"type": "Point", "coordinates": [1, 2]}},
            r"exactly one of 'bbox' or 'polygon'",
        ),
    ],
)
def test_malformed_aoi_is_refused_with_the_field_named(
    tmp_path: Path, change: dict, match: str
) -> None:
    path = write(tmp_path, {**VALID, **change})
    with pytest.raises(ConfigError, match=match) as info:
        load_aoi(path)
    assert str(path) in str(info.value)


def test_aoi_larger_than_maximum_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {**VALID, "bbox": [8.0, 47.0, 9.0, 48.0]})
    with pytest.raises(
        ConfigError, match=r"covers .* km², more than the configured maximum of 100 km²"
    ):
        load_aoi(path, max_km2=100)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name: [unclosed", "not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        ("", "must be a YAML mapping"),
    ],
)
def test_unparseable_files(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_aoi(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AOI file not found"):
        load_aoi(tmp_path / "absent.yaml")


def test_yaml_tags_cannot_run_code(tmp_path: Path) -> None:
    path = write(tmp_path, "!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_aoi(path)


def test_check_step_accepts_iso_dates() -> None:
    assert check_step("2026-06-01") == "2026-06-01"


def test_yaml_round_trip_keeps_no_schedule_and_settings(tmp_path: Path) -> None:
    config = parse_aoi({**VALID, "schedule": None, "shard_zoom": 17})
    path = tmp_path / "again.yaml"
    path.write_text(config.to_yaml(), encoding="utf-8")
    again = load_aoi(path)
    assert again.schedule is None and again.shard_zoom == 17
    assert parse_aoi(VALID).schedule == "@weekly"  # the default when the key is absent


FIJI = [[179.99, -16.8], [-179.99, -16.8], [-179.99, -16.79], [179.99, -16.79], [179.99, -16.8]]


def test_a_polygon_across_the_antimeridian_is_refused_with_the_reason(tmp_path: Path) -> None:
    data = {**VALID, "polygon": {"type": "Polygon", "coordinates": [FIJI]}}
    del data["bbox"]
    with pytest.raises(ConfigError, match=r"aoi\.yaml: .*crosses the antimeridian.*MultiPolygon"):
        load_aoi(write(tmp_path, data))
    # a bbox given west > east (the GeoJSON way across ±180°) says the same
    with pytest.raises(ConfigError, match=r"west > east: an AOI across the antimeridian"):
        load_aoi(write(tmp_path, {**VALID, "bbox": [179.99, -16.8, -179.99, -16.79]}))
    # split at ±180° it is two parts, each audited on its own side
    parts = [
        [[[179.99, -16.8], [180, -16.8], [180, -16.79], [179.99, -16.79], [179.99, -16.8]]],
        [[[-180, -16.8], [-179.99, -16.8], [-179.99, -16.79], [-180, -16.79], [-180, -16.8]]],
    ]
    data["polygon"] = {"type": "MultiPolygon", "coordinates": parts}
    config = load_aoi(write(tmp_path, data))
    assert 2.3 < config.area_km2() < 2.5  # 2 x 0.01° x 0.01°, not a band around the globe
    assert {t.x for t in config.tiles()} >= {0, 2**config.work_zoom - 1}  # both edges


def test_a_high_latitude_aoi_is_warned_about_its_tile_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    near_pole = load_aoi(write(tmp_path, {**VALID, "bbox": [10.0, 84.99, 10.05, 85.0]}))
    warning = near_pole.scale_warning()
    assert warning is not None
    assert re.search(r"latitude 85\.0°.*11\.5x smaller.*[\d,]+ tiles at work_zoom 18", warning)
    n = len(near_pole.tiles())
    assert f"{n:,} tiles" in warning and n > 1000
    assert load_aoi(write(tmp_path, VALID)).scale_warning() is None  # Zurich: no warning
