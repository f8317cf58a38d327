"""create_sample: determinism, valid files, imagery that shows the truth."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.enums import Compression
from rasterio.features import rasterize
from rasterio.warp import transform_bounds

from pipeline.errors import ConfigError
from pipeline.sample import STEPS, SampleInfo, create_sample


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes(small_sample: SampleInfo, tmp_path: Path) -> None:
    again = create_sample(tmp_path / "again", seed=7, size_m=300.0)
    first, second = _digests(small_sample.root), _digests(again.root)
    assert len(first) == 7  # 2 rasters, 2 open-data files, 2 truth layers, truth.json
    assert first == second


def test_identical_bytes_across_processes(small_sample: SampleInfo, tmp_path: Path) -> None:
    """No dependence on hash randomisation or process state (PYTHONHASHSEED differs)."""
    code = (
        "import sys; from pathlib import Path; from pipeline.sample import create_sample; "
        "create_sample(Path(sys.argv[1]), seed=7, size_m=300.0)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "sub")], check=True, env=env)
    assert _digests(tmp_path / "sub") == _digests(small_sample.root)


def test_other_seed_gives_other_town(small_sample: SampleInfo, tmp_path: Path) -> None:
    other = create_sample(tmp_path / "other", seed=8, size_m=300.0)
    first, second = _digests(small_sample.root), _digests(other.root)
    assert all(first[k] != second[k] for k in first)


def test_sample_info_points_at_the_files(small_sample: SampleInfo) -> None:
    assert small_sample.steps == STEPS == ("2025-06-01", "2026-06-01")
    assert small_sample.crs == "EPSG:32632"
    for step in STEPS:
        assert small_sample.imagery[step] == small_sample.root / "imagery" / f"{step}.tif"
        assert small_sample.opendata[step] == small_sample.root / "opendata" / f"{step}.geojson"
        assert (small_sample.root / "truth" / f"buildings_{step}.geojson").is_file()
    truth = json.loads(small_sample.truth.read_text())
    assert truth["seed"] == 7 and truth["crs"] == "EPSG:32632"
    assert truth["steps"] == list(STEPS)
    assert truth["bbox"] == list(small_sample.bbox)


def test_imagery_is_a_tiled_rgb_utm_geotiff(small_sample: SampleInfo) -> None:
    w, s, e, n = small_sample.bbox
    assert w < 8.55 < e and s < 47.37 < n
    for path in small_sample.imagery.values():
        with rasterio.open(path) as src:
            assert src.crs.to_epsg() == 32632 and src.crs.is_projected
            assert src.count == 3 and set(src.dtypes) == {"uint8"}
            assert src.res == pytest.approx((0.4, 0.4))
            assert (src.width, src.height) == (750, 750)
            assert src.block_shapes == [(256, 256)] * 3
            assert src.compression == Compression.deflate
            assert src.overviews(1) == [2, 4]
            bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
            assert bounds == pytest.approx(small_sample.bbox, abs=1e-6)
            img = src.read()
            assert 40 < img.mean() < 200 and img.std() > 20  # not blank, not saturated


def test_vector_files_are_wgs84_with_unique_ids(small_sample: SampleInfo) -> None:
    w, s, e, n = small_sample.bbox
    for step in STEPS:
        od = gpd.read_file(small_sample.opendata[step])
        assert od.crs.to_epsg() == 4326
        assert od["id"].is_unique and od["id"].map(type).eq(str).all()
        assert (od["building"] == "yes").all()
        assert od.geom_type.eq("Polygon").all() and od.is_valid.all()
        truth = gpd.read_file(small_sample.root / "truth" / f"buildings_{step}.geojson")
        assert truth.crs.to_epsg() == 4326 and truth["truth_id"].is_unique
        assert truth.is_valid.all()
        for layer in (od, truth):
            minx, miny, maxx, maxy = layer.total_bounds
            assert w <= minx and s <= miny and maxx <= e and maxy <= n


def test_roofs_cover_the_true_footprints(small_sample: SampleInfo) -> None:
    """Roof pixels differ from the ground around them, and changes show between steps."""
    truth = json.loads(small_sample.truth.read_text())
    images, masks = [], []
    for step in STEPS:
        with rasterio.open(small_sample.imagery[step]) as src:
            images.append(src.read().astype(np.float32))
            tb = gpd.read_file(small_sample.root / "truth" / f"buildings_{step}.geojson").to_crs(
                src.crs
            )
            masks.append(
                rasterize(tb.geometry, out_shape=src.shape, transform=src.transform).astype(bool)
            )
            transform = src.transform
            crs = src.crs
    changes = gpd.GeoDataFrame.from_features(
        [
            {"type": "Feature", "geometry": c["geometry"], "properties": {"kind": c["kind"]}}
            for c in truth["changes"]
        ],
        crs="EPSG:4326",
    ).to_crs(crs)
    changed = rasterize(changes.geometry, out_shape=masks[0].shape, transform=transform).astype(
        bool
    )
    stable = masks[0] & masks[1] & ~changed
    diff = np.abs(images[1] - images[0]).mean(axis=0)
    # A change repaints the roof; an unchanged roof only sees the new light.
    assert diff[changed].mean() > 2.5 * diff[stable].mean()
    # The appeared buildings are roofs only at step 2.
    appeared = changes[changes["kind"] == "appeared"]
    app = rasterize(appeared.geometry, out_shape=masks[0].shape, transform=transform).astype(bool)
    assert app.any() and not (app & masks[0]).any() and (app <= masks[1]).all()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"size_m": 50.0}, "size_m=50.0"),
        ({"resolution_m": 5.0}, "resolution_m=5.0"),
        ({"size_m": 3000.0, "resolution_m": 0.3}, "10000 px across"),
    ],
)
def test_bad_settings_are_rejected(tmp_path: Path, kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        create_sample(tmp_path, **kwargs)
