"""Labels: a shard's open data rasterized once per open-data snapshot, stored under
``layout.labels_key`` and read back from there afterwards."""

from __future__ import annotations

import os

import numpy as np
import pytest
import rasterio
from shapely.geometry import box
from sqlalchemy.orm import Session

from pipeline.mosaic import KIND_TAG, write_mosaic
from pipeline.rasterize import rasterize_shard
from pipeline.run import layout
from pipeline.run.fetch import fetch_opendata
from pipeline.run.inputs import read_opendata
from pipeline.run.labels import shard_labels
from pipeline.run.snapshots import OpenDataSnapshot, opendata_snapshot
from pipeline.tiles import Shard, Tile, parse_shard_id, shard_transform, xy_bounds

from ._helpers import SHARD_IDS
from .conftest import STEP, RealAoi


@pytest.fixture(scope="module")
def opendata(real_aoi: RealAoi) -> OpenDataSnapshot:
    fetched = fetch_opendata(real_aoi.ctx, real_aoi.config, STEP)
    with Session(real_aoi.ctx.engine) as s:
        return opendata_snapshot(s, fetched.snapshot_id)


def _shard(i: int) -> Shard:
    return parse_shard_id(SHARD_IDS[i], 20)


def test_labels_are_rasterized_once_then_read(
    real_aoi: RealAoi, opendata: OpenDataSnapshot
) -> None:
    ctx, name = real_aoi.ctx, real_aoi.config.name
    shard = _shard(0)
    key = layout.labels_key(name, opendata.content_hash, shard.id)
    assert not ctx.store.exists(key)
    first = shard_labels(ctx, name, opendata, shard)
    assert ctx.store.exists(key)
    assert first.shape == (shard.size, shard.size) and first.dtype == np.uint8
    assert set(np.unique(first)) == {0, 1}
    expected = rasterize_shard(read_opendata(ctx, opendata), shard).labels
    np.testing.assert_array_equal(first, expected)
    with ctx.store.readable_path(key) as path, rasterio.open(path) as src:
        assert src.tags()[KIND_TAG] == "label" and src.crs.to_epsg() == 3857
        assert src.transform.almost_equals(shard_transform(shard))
    mtime = os.stat(ctx.store.path(key)).st_mtime_ns

    second = shard_labels(ctx, name, opendata, shard)
    np.testing.assert_array_equal(second, first)
    assert second.dtype == np.uint8 and second.shape == first.shape
    assert os.stat(ctx.store.path(key)).st_mtime_ns == mtime  # not written again


def test_stored_labels_are_what_is_read(real_aoi: RealAoi, opendata: OpenDataSnapshot) -> None:
    # proof that a stored label mosaic is read, not rasterized again: change it in place
    ctx, name = real_aoi.ctx, real_aoi.config.name
    shard = _shard(1)
    labels = shard_labels(ctx, name, opendata, shard)
    assert labels.any()
    inverted = (1 - labels).astype(np.uint8)
    with ctx.store.writable_path(layout.labels_key(name, opendata.content_hash, shard.id)) as tmp:
        write_mosaic(tmp, inverted, shard, kind="label")
    np.testing.assert_array_equal(shard_labels(ctx, name, opendata, shard), inverted)


def test_labels_cover_the_buildings(real_aoi: RealAoi, opendata: OpenDataSnapshot) -> None:
    ctx, name = real_aoi.ctx, real_aoi.config.name
    shard = _shard(2)
    labels = shard_labels(ctx, name, opendata, shard)
    frame = read_opendata(ctx, opendata).to_crs(3857)
    inverse = ~shard_transform(shard)
    hits = 0
    for point in frame.geometry.representative_point():
        col, row = (int(v) for v in inverse * (point.x, point.y))
        if 0 <= row < shard.size and 0 <= col < shard.size:
            assert labels[row, col] == 1
            hits += 1
    assert hits >= 3
    # no more building pixels than the footprints' area in the shard
    px_area = shard_transform(shard).a ** 2
    assert labels.sum() * px_area <= frame.clip(box(*xy_bounds(shard.tile))).area.sum() * 1.05


def test_another_snapshot_has_its_own_labels(real_aoi: RealAoi, opendata: OpenDataSnapshot) -> None:
    ctx, name = real_aoi.ctx, real_aoi.config.name
    shard = _shard(3)
    shard_labels(ctx, name, opendata, shard)
    other = OpenDataSnapshot(**{**opendata.__dict__, "content_hash": "f" * 64})
    key = layout.labels_key(name, other.content_hash, shard.id)
    assert not ctx.store.exists(key)
    shard_labels(ctx, name, other, shard)  # the same footprints: stored under its own key
    assert ctx.store.exists(key)


def test_a_shard_without_buildings_is_all_background(
    real_aoi: RealAoi, opendata: OpenDataSnapshot
) -> None:
    ctx, name = real_aoi.ctx, real_aoi.config.name
    far = Shard(Tile(0, 0, 19), 20)
    labels = shard_labels(ctx, name, opendata, far)
    assert labels.shape == (512, 512) and not labels.any()
    assert ctx.store.exists(layout.labels_key(name, opendata.content_hash, far.id))
    assert not shard_labels(ctx, name, opendata, far).any()
