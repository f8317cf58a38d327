"""Bad input gets a clear error naming the input, and nothing already stored is lost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audited_town import make_context
from pipeline.aoi import parse_aoi
from pipeline.aoi.registry import add_aoi_file, get_aoi_config, register_aoi
from pipeline.db.models import Aoi, Run, Snapshot
from pipeline.errors import ConfigError, CoverageError, ImageryError, NotFoundError, VectorDataError
from pipeline.run.fetch import fetch_imagery, fetch_opendata
from pipeline.run.local import run_audit
from pipeline.run.snapshots import imagery_snapshot

# A 300 m square in Zurich, UTM 32N.
ORIGIN = (465600.0, 5246420.0)
STEP = "2025-06-01"


def write_geotiff(
    path: Path, *, crs: str | None = "EPSG:32632", bands: int = 3, origin=ORIGIN
) -> None:  # noqa: ANN001
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, size=(bands, 600, 600), dtype=np.uint8)
    profile = {
        "driver": "GTiff",
        "width": 600,
        "height": 600,
        "count": bands,
        "dtype": "uint8",
        "transform": from_origin(*origin, 0.5, 0.5),
    }
    if crs:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def write_buildings(path: Path) -> None:
    # Two squares inside the raster (lon/lat near 8.546, 47.37).
    features = [
        {
            "type": "Feature",
            "properties": {"id": f"b{i}"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [
                        [lon, lat],
                        [lon + 2e-4, lat],
                        [lon + 2e-4, lat + 1.5e-4],
                        [lon, lat + 1.5e-4],
                        [lon, lat],
                    ]
                ],
            },
        }
        for i, (lon, lat) in enumerate([(8.5453, 47.3693), (8.5463, 47.3688)])
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))


BBOX = [8.5450, 47.3680, 8.5475, 47.3700]


@pytest.fixture
def ctx(tmp_path: Path, db_url: str):  # noqa: ANN201
    context = make_context(tmp_path / "home", db_url)
    yield context


@pytest.fixture
def good_aoi(ctx, tmp_path: Path):  # noqa: ANN001, ANN201
    data = tmp_path / "data"
    data.mkdir()
    write_geotiff(data / f"{STEP}.tif")
    write_buildings(data / f"{STEP}.geojson")
    config = parse_aoi(
        {
            "name": "tiny",
            "bbox": BBOX,
            "work_zoom": 18,
            "shard_zoom": 17,
            "imagery": {"kind": "geotiff", "path": str(data / "{step}.tif")},
            "opendata": {"kind": "vector", "path": str(data / "{step}.geojson")},
        }
    )
    register_aoi(ctx, config)
    fetch_imagery(ctx, config, STEP)
    fetch_opendata(ctx, config, STEP)
    return data


def counts(ctx) -> tuple[int, int, int]:  # noqa: ANN001
    with Session(ctx.engine) as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Aoi, Snapshot, Run))  # type: ignore[return-value]


def test_fetch_reuses_an_unchanged_source(ctx, good_aoi: Path) -> None:  # noqa: ANN001
    config = get_aoi_config(ctx, "tiny")
    assert fetch_imagery(ctx, config, STEP).reused
    assert fetch_opendata(ctx, config, STEP).reused


def test_a_new_shard_layout_fetches_the_imagery_again(ctx, good_aoi: Path) -> None:  # noqa: ANN001
    config = register_aoi(ctx, get_aoi_config(ctx, "tiny").model_copy(update={"shard_zoom": 16}))
    ref = fetch_imagery(ctx, config, STEP)
    assert not ref.reused
    with Session(ctx.engine) as s:
        shards = set(imagery_snapshot(s, ref.snapshot_id).shards)
    assert shards == {shard.id for shard in config.shards()}
    assert all(sid.startswith("16-") for sid in shards)
    assert fetch_opendata(ctx, config, STEP).reused  # the open data does not depend on it


@pytest.mark.parametrize(
    ("spoil", "error", "match"),
    [
        (
            lambda d: (d / f"{STEP}.tif").unlink(),
            NotFoundError,
            r"imagery '.*\{step\}\.tif' of AOI 'tiny' has no snapshot dated on or before "
            r"2025-06-01",
        ),
        (
            lambda d: (d / f"{STEP}.tif").write_bytes(b"II*\x00 truncated garbage"),
            ImageryError,
            r"2025-06-01\.tif",
        ),
        (lambda d: write_geotiff(d / f"{STEP}.tif", crs=None), ImageryError, r"no CRS"),
        (lambda d: write_geotiff(d / f"{STEP}.tif", bands=1), ImageryError, r"band"),
        (
            lambda d: write_geotiff(d / f"{STEP}.tif", origin=(500000.0, 5300000.0)),
            CoverageError,
            r"tiny|cover",
        ),
    ],
    ids=["missing", "corrupt", "no-crs", "band-count", "outside-aoi"],
)
def test_bad_imagery_is_refused_and_keeps_what_was_stored(
    ctx, good_aoi: Path, spoil, error, match
) -> None:  # noqa: ANN001
    before = counts(ctx)
    old = get_aoi_config(ctx, "tiny")
    spoil(good_aoi)
    # Touch the fingerprint so the stored snapshot is not simply reused.
    with pytest.raises(error, match=match):
        fetch_imagery(ctx, old, STEP)
    assert counts(ctx) == before


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"type": "FeatureCollection", "features": []}', r"2025-06-01\.geojson"),
        ('{"type": "FeatureCollection", "features": [', r"2025-06-01\.geojson"),
        (
            '{"type": "FeatureCollection", "features": [{"type": "Feature", '
            '"properties": {"id": "p"}, '
            '"geometry": {"type": "Point", "coordinates": [8.546, 47.369]}}]}',
            r"polygon",
        ),
    ],
    ids=["empty", "invalid-json", "points-only"],
)
def test_bad_open_data_is_refused_and_keeps_what_was_stored(
    ctx, good_aoi: Path, content: str, match: str
) -> None:  # noqa: ANN001
    before = counts(ctx)
    (good_aoi / f"{STEP}.geojson").write_text(content)
    with pytest.raises(VectorDataError, match=match):
        fetch_opendata(ctx, get_aoi_config(ctx, "tiny"), STEP)
    assert counts(ctx) == before


def test_all_nodata_imagery_is_refused_and_keeps_what_was_stored(ctx, good_aoi: Path) -> None:  # noqa: ANN001
    before = counts(ctx)
    path = good_aoi / f"{STEP}.tif"
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(nodata=0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((profile["count"], profile["height"], profile["width"]), np.uint8))
    with pytest.raises(CoverageError, match=r"2025-06-01\.tif: imagery has no valid pixels"):
        fetch_imagery(ctx, get_aoi_config(ctx, "tiny"), STEP)
    assert counts(ctx) == before


def test_coordinates_in_latitude_longitude_order_are_refused(ctx, good_aoi: Path) -> None:  # noqa: ANN001
    path = good_aoi / f"{STEP}.geojson"
    data = json.loads(path.read_text())
    for feature in data["features"]:
        ring = feature["geometry"]["coordinates"][0]
        feature["geometry"]["coordinates"][0] = [[lat, lon] for lon, lat in ring]
    path.write_text(json.dumps(data))
    before = counts(ctx)
    # (47.37, 8.55) is a valid lon/lat in the Arabian Sea: nothing falls in the AOI
    with pytest.raises(VectorDataError, match=r"2025-06-01\.geojson.*no polygon over AOI 'tiny'"):
        fetch_opendata(ctx, get_aoi_config(ctx, "tiny"), STEP)
    assert counts(ctx) == before


def test_malformed_aoi_file_leaves_the_registry_as_it_was(
    ctx, good_aoi: Path, tmp_path: Path
) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: tiny\nbbox: [1, 2]\nimagery: {kind: geotiff, path: x.tif}\n"
        "opendata: {kind: vector, path: y.geojson}\n"
    )
    before = counts(ctx)
    with pytest.raises(ConfigError, match=r"bad\.yaml.*bbox"):
        add_aoi_file(ctx, bad)
    assert counts(ctx) == before
    assert get_aoi_config(ctx, "tiny").bbox == tuple(BBOX)


def test_unknown_aoi_is_named(ctx) -> None:  # noqa: ANN001
    with pytest.raises(NotFoundError, match="'nowhere'"):
        run_audit(ctx, "nowhere", STEP)


def test_audit_without_a_model_says_what_to_do(ctx, good_aoi: Path) -> None:  # noqa: ANN001
    with pytest.raises(NotFoundError, match="train one first"):
        run_audit(ctx, "tiny", STEP)


def test_bad_step_is_refused(ctx, good_aoi: Path) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError, match="ISO date"):
        run_audit(ctx, "tiny", "yesterday")
