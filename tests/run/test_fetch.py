"""The fetch stage on real sources: XYZ tiles of Lalitpur into one mosaic per shard with
imagery, OpenStreetMap footprints into GeoParquet with their profile; an unchanged
source reuses its snapshot."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import rasterio
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.aoi import AoiConfig
from pipeline.aoi.registry import register_aoi
from pipeline.db import repo
from pipeline.db.models import Snapshot
from pipeline.errors import ConfigError, CoverageError, ImageryError, VectorDataError
from pipeline.mosaic import KIND_TAG, SHARD_TAG, array_hash, read_mosaic
from pipeline.run import layout
from pipeline.run.fetch import fetch_imagery, fetch_opendata
from pipeline.run.inputs import read_opendata
from pipeline.run.snapshots import imagery_snapshot, opendata_snapshot
from pipeline.tiles import Tile, parse_shard_id, shard_transform

from ._helpers import SHARD_IDS, register, tile_tree_without, tiles_of_shard
from .conftest import DATA, STEP, RealAoi

# the partial tree: the last shard has no tile left, the first lacks one tile
EMPTY_SHARD = SHARD_IDS[3]
DROPPED = [*tiles_of_shard(EMPTY_SHARD), Tile(773394, 440526, 20)]
#: an AOI and the copy of its source that a test may change
Owned = tuple[AoiConfig, Path]


def _xyz(root: Path) -> dict:
    return {"kind": "xyz", "path": str(root), "zoom": 20}


def _vector(path: Path) -> dict:
    return {"kind": "vector", "path": str(path), "id_field": "osm_id"}


def _n_snapshots(real_aoi: RealAoi, config: AoiConfig) -> int:
    with Session(real_aoi.ctx.engine) as s:
        aoi_id = repo.get_aoi(s, config.name).id
        return s.scalar(select(func.count()).select_from(Snapshot).filter_by(aoi_id=aoi_id))


@pytest.fixture(scope="module")
def partial(real_aoi: RealAoi, tmp_path_factory: pytest.TempPathFactory) -> AoiConfig:
    root = tile_tree_without(tmp_path_factory.mktemp("partial"), DROPPED)
    return register(real_aoi.ctx, "partial", imagery=_xyz(root))


@pytest.fixture
def own_tiles(real_aoi: RealAoi, tmp_path: Path) -> Owned:
    """An AOI on its own copy of the tile tree (the test changes the copy)."""
    root = tile_tree_without(tmp_path, [])
    return register(real_aoi.ctx, "copy", imagery=_xyz(root)), root


@pytest.fixture
def own_opendata(real_aoi: RealAoi, tmp_path: Path) -> Owned:
    """An AOI on its own copy of the footprints (the test changes the copy)."""
    path = tmp_path / "buildings.geojson"
    shutil.copyfile(DATA / "buildings_osm.geojson", path)
    return register(real_aoi.ctx, "vec", opendata=_vector(path)), path


# --- imagery --------------------------------------------------------------------------


def test_one_mosaic_per_shard_with_imagery(real_aoi: RealAoi, partial: AoiConfig) -> None:
    ctx = real_aoi.ctx
    fetched = fetch_imagery(ctx, partial, STEP)
    assert fetched.kind == "imagery" and fetched.step == STEP and not fetched.reused
    assert fetched.seconds > 0
    with Session(ctx.engine) as s:
        row = repo.get_snapshot(s, fetched.snapshot_id)
        uri, source, count = row.uri, row.source, row.feature_count
        snap = imagery_snapshot(s, fetched.snapshot_id)
    assert sorted(snap.shards) == sorted(set(SHARD_IDS) - {EMPTY_SHARD}) and count == 3
    assert uri == ctx.store.uri(layout.imagery_folder(partial.name, STEP, snap.fingerprint))
    assert source == partial.imagery.path
    # 11 of the AOI's 16 tiles have imagery
    assert snap.coverage == pytest.approx(11 / 16, abs=1e-3)
    for sid, ref in snap.shards.items():
        shard = parse_shard_id(sid, partial.work_zoom)
        assert ref.key == layout.imagery_key(partial.name, STEP, snap.fingerprint, sid)
        with ctx.store.readable_path(ref.key) as path:
            with rasterio.open(path) as src:
                assert src.crs.to_epsg() == 3857 and src.count == 3
                assert (src.width, src.height) == (shard.size, shard.size)
                assert src.transform.almost_equals(shard_transform(shard))
                assert src.tags()[KIND_TAG] == "image" and src.tags()[SHARD_TAG] == sid
            data, valid = read_mosaic(path)
        assert ref.content_hash == array_hash(data, valid)
        assert ref.valid_share == pytest.approx(valid.mean())
    assert snap.shards[SHARD_IDS[0]].valid_share == pytest.approx(0.75)
    assert not ctx.store.exists(
        layout.imagery_key(partial.name, STEP, snap.fingerprint, EMPTY_SHARD)
    )
    by_shard = {sid: ref.content_hash for sid, ref in sorted(snap.shards.items())}
    assert fetched.content_hash == hashlib.sha256(json.dumps(by_shard).encode()).hexdigest()


def test_a_fetch_that_fails_midway_leaves_no_mosaic_behind(
    real_aoi: RealAoi, own_tiles: Owned
) -> None:
    ctx = real_aoi.ctx
    config, root = own_tiles
    shards = list(config.shards())
    assert len(shards) == 4
    # the last shard read has a tile cut short by a failed download: the earlier shards'
    # mosaics are written before the fetch fails
    last = tiles_of_shard(shards[-1].id)[0]
    tile = root / str(last.z) / str(last.x) / f"{last.y}.png"
    tile.write_bytes(tile.read_bytes()[: tile.stat().st_size * 6 // 10])
    n = _n_snapshots(real_aoi, config)
    with pytest.raises(ImageryError, match=rf"{last.y}\.png: not a readable image tile"):
        fetch_imagery(ctx, config, STEP)
    assert _n_snapshots(real_aoi, config) == n
    folder = Path(ctx.store.path(layout.imagery_folder(config.name, STEP, "x"))).parent
    left = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    assert left == []


def test_an_unchanged_source_reuses_its_snapshot(real_aoi: RealAoi, partial: AoiConfig) -> None:
    ctx = real_aoi.ctx
    first = fetch_imagery(ctx, partial, STEP)
    with Session(ctx.engine) as s:
        keys = [ref.key for ref in imagery_snapshot(s, first.snapshot_id).shards.values()]
    mtimes = [os.stat(ctx.store.path(k)).st_mtime_ns for k in keys]
    n = _n_snapshots(real_aoi, partial)
    again = fetch_imagery(ctx, partial, STEP)
    assert again.reused and again.snapshot_id == first.snapshot_id
    assert again.content_hash == first.content_hash
    assert _n_snapshots(real_aoi, partial) == n
    assert [os.stat(ctx.store.path(k)).st_mtime_ns for k in keys] == mtimes  # not rewritten


def test_a_missing_mosaic_is_fetched_again(real_aoi: RealAoi, partial: AoiConfig) -> None:
    ctx = real_aoi.ctx
    first = fetch_imagery(ctx, partial, STEP)
    with Session(ctx.engine) as s:
        key = imagery_snapshot(s, first.snapshot_id).shards[SHARD_IDS[1]].key
    Path(ctx.store.path(key)).unlink()
    again = fetch_imagery(ctx, partial, STEP)
    assert not again.reused and again.snapshot_id == first.snapshot_id
    assert ctx.store.exists(key)
    assert fetch_imagery(ctx, partial, STEP).reused


def test_changed_imagery_is_a_new_snapshot(real_aoi: RealAoi, own_tiles: Owned) -> None:
    ctx = real_aoi.ctx
    config, root = own_tiles
    first = fetch_imagery(ctx, config, STEP)
    # another tile's pixels in place of one tile of the second shard
    target = root / "20" / "773394" / "440528.png"
    shutil.copyfile(root / "20" / "773395" / "440526.png", target)
    changed = fetch_imagery(ctx, config, STEP)
    assert not changed.reused and changed.snapshot_id != first.snapshot_id
    assert changed.content_hash != first.content_hash
    with Session(ctx.engine) as s:
        old, new = (imagery_snapshot(s, f.snapshot_id) for f in (first, changed))
    assert old.fingerprint != new.fingerprint
    for sid in SHARD_IDS:  # only the changed shard's mosaic differs
        same = old.shards[sid].content_hash == new.shards[sid].content_hash
        assert same == (sid != SHARD_IDS[1]), sid
    assert all(ctx.store.exists(ref.key) for ref in old.shards.values())
    assert fetch_imagery(ctx, config, STEP).reused


def test_touching_a_tile_keeps_the_snapshot(real_aoi: RealAoi, own_tiles: Owned) -> None:
    ctx = real_aoi.ctx
    config, root = own_tiles
    first = fetch_imagery(ctx, config, STEP)
    tile = root / "20" / "773394" / "440526.png"
    os.utime(tile, ns=(tile.stat().st_atime_ns, tile.stat().st_mtime_ns + 10**9))
    touched = fetch_imagery(ctx, config, STEP)  # a new fingerprint: read, same pixels
    assert not touched.reused
    assert touched.snapshot_id == first.snapshot_id
    assert touched.content_hash == first.content_hash


def test_a_touched_source_is_reused_from_the_next_fetch_on(
    real_aoi: RealAoi, own_tiles: Owned
) -> None:
    ctx = real_aoi.ctx
    config, root = own_tiles
    fetch_imagery(ctx, config, STEP)
    tile = root / "20" / "773394" / "440526.png"
    os.utime(tile, ns=(tile.stat().st_atime_ns, tile.stat().st_mtime_ns + 10**9))
    fetch_imagery(ctx, config, STEP)
    assert fetch_imagery(ctx, config, STEP).reused  # nothing changed since the last fetch


def test_a_new_shard_layout_fetches_again(real_aoi: RealAoi, own_tiles: Owned) -> None:
    ctx = real_aoi.ctx
    config, _ = own_tiles
    coarse = fetch_imagery(ctx, config, STEP)
    fine_config = config.model_copy(update={"shard_zoom": 20})
    fine = fetch_imagery(ctx, fine_config, STEP)
    assert not fine.reused and fine.snapshot_id != coarse.snapshot_id
    with Session(ctx.engine) as s:
        snap = imagery_snapshot(s, fine.snapshot_id)
    assert len(snap.shards) == 16
    with ctx.store.readable_path(next(iter(snap.shards.values())).key) as path:
        assert read_mosaic(path).array.shape == (3, 256, 256)


def test_imagery_missing_the_aoi_stores_nothing(real_aoi: RealAoi, tmp_path: Path) -> None:
    cluster = [Tile(x, y, 20) for x in range(773394, 773398) for y in range(440526, 440530)]
    root = tile_tree_without(tmp_path, cluster)
    config = register(real_aoi.ctx, "nowhere", imagery=_xyz(root))
    with pytest.raises(CoverageError, match="does not cover the AOI"):
        fetch_imagery(real_aoi.ctx, config, STEP)
    assert _n_snapshots(real_aoi, config) == 0


def test_a_bad_step_is_refused(real_aoi: RealAoi, partial: AoiConfig) -> None:
    with pytest.raises(ConfigError, match="time step must be an ISO date"):
        fetch_imagery(real_aoi.ctx, partial, "2025-06")
    with pytest.raises(ConfigError, match="is not a calendar date"):
        fetch_opendata(real_aoi.ctx, partial, "2025-02-30")


# --- open data ----------------------------------------------------------------------------


def test_open_data_is_stored_with_its_profile(real_aoi: RealAoi) -> None:
    ctx, config = real_aoi.ctx, real_aoi.config
    fetched = fetch_opendata(ctx, config, STEP)
    assert fetched.kind == "opendata" and not fetched.reused and fetched.seconds > 0
    with Session(ctx.engine) as s:
        uri = repo.get_snapshot(s, fetched.snapshot_id).uri
        snap = opendata_snapshot(s, fetched.snapshot_id)
    assert snap.key == layout.opendata_key(config.name, STEP, fetched.content_hash)
    assert snap.profile_key == layout.opendata_profile_key(config.name, STEP, fetched.content_hash)
    assert uri == ctx.store.uri(snap.key)
    frame = read_opendata(ctx, snap)
    assert frame.columns.tolist() == ["feature_id", "geometry"]
    assert frame["feature_id"].tolist() == sorted(frame["feature_id"])
    assert frame["feature_id"].is_unique and frame.geometry.is_valid.all()
    assert len(frame) == snap.feature_count
    expected = hashlib.sha256(
        frame["feature_id"].str.cat(sep="\n").encode() + b"".join(frame.geometry.to_wkb())
    ).hexdigest()
    assert fetched.content_hash == expected
    # the footprints are those of the source that touch the AOI's tiles
    source = gpd.read_file(DATA / "buildings_osm.geojson")
    touching = source[source.intersects(config.scored_area())]
    assert len(frame) == len(touching)
    with_id = {str(int(v)) for v in touching["osm_id"].dropna()}
    assert with_id and with_id <= set(frame["feature_id"])
    # the profile: one row per feature as read, before clipping and repair
    profile = pd.read_parquet(io.BytesIO(ctx.store.read_bytes(snap.profile_key)))
    assert len(profile) == snap.read_info["n_read"] >= snap.feature_count
    assert set(frame["feature_id"]) <= set(profile["feature_id"])
    assert {"geom_type", "is_valid", "area_m2", "n_vertices", "n_missing_required"} <= set(
        profile.columns
    )
    assert (profile["area_m2"] > 1).all() and (profile["n_missing_required"] == 0).all()
    again = fetch_opendata(ctx, config, STEP)
    assert again.reused and again.snapshot_id == fetched.snapshot_id


def test_open_data_covers_the_scored_tiles_beyond_the_outline(real_aoi: RealAoi) -> None:
    """The edge tiles of an outline that does not follow tile edges are scored whole:
    their footprints outside the outline are compared too (dropped, each building the
    imagery shows there was a ``missing_in_opendata`` finding and a "no building" label)."""
    ctx = real_aoi.ctx
    west, south, east, north = real_aoi.config.bounds
    dx, dy = (east - west) / 5, (north - south) / 5
    inner = register(ctx, "inner", bbox=(west + dx, south + dy, east - dx, north - dy))
    area = inner.scored_area()
    assert area.covers(inner.geometry) and area.area > 1.2 * inner.geometry.area
    fetched = fetch_opendata(ctx, inner, STEP)
    with Session(ctx.engine) as s:
        frame = read_opendata(ctx, opendata_snapshot(s, fetched.snapshot_id))
    source = gpd.read_file(DATA / "buildings_osm.geojson")
    on_tiles = source[source.intersects(area)]
    assert len(frame) == len(on_tiles) > int(source.intersects(inner.geometry).sum())
    assert fetch_opendata(ctx, inner, STEP).reused
    # the AOI's outline redrawn over the same source: fetched again, never the old area
    corner = (west + dx, south + dy, west + 1.5 * dx, south + 1.5 * dy)
    redrawn = register_aoi(ctx, inner.model_copy(update={"bbox": corner}))
    assert not redrawn.scored_area().equals(area)
    assert not fetch_opendata(ctx, redrawn, STEP).reused


def test_changed_open_data_is_a_new_snapshot(real_aoi: RealAoi, own_opendata: Owned) -> None:
    ctx = real_aoi.ctx
    config, path = own_opendata
    first = fetch_opendata(ctx, config, STEP)
    data = json.loads(path.read_text())
    with Session(ctx.engine) as s:
        stored = set(read_opendata(ctx, opendata_snapshot(s, first.snapshot_id))["feature_id"])
    gone = next(f for f in data["features"] if str(f["properties"]["osm_id"]) in stored)
    data["features"].remove(gone)
    path.write_text(json.dumps(data))
    changed = fetch_opendata(ctx, config, STEP)
    assert not changed.reused and changed.snapshot_id != first.snapshot_id
    with Session(ctx.engine) as s:
        snap = opendata_snapshot(s, changed.snapshot_id)
    assert snap.feature_count == len(stored) - 1
    assert str(gone["properties"]["osm_id"]) not in set(read_opendata(ctx, snap)["feature_id"])


def test_required_attributes_are_counted_in_the_profile(
    real_aoi: RealAoi, own_opendata: Owned
) -> None:
    ctx = real_aoi.ctx
    config, _ = own_opendata
    needing = config.model_copy(
        update={
            "validation": config.validation.model_copy(
                update={"required_attributes": ["building:levels"]}
            )
        }
    )
    fetched = fetch_opendata(ctx, needing, STEP)
    with Session(ctx.engine) as s:
        snap = opendata_snapshot(s, fetched.snapshot_id)
    profile = pd.read_parquet(io.BytesIO(ctx.store.read_bytes(snap.profile_key)))
    assert (profile["n_missing_required"] == 1).all()  # OSM here has no levels


def test_open_data_missing_the_aoi_stores_nothing(real_aoi: RealAoi, tmp_path: Path) -> None:
    path = tmp_path / "far.geojson"
    far = {
        "type": "Feature",
        "properties": {"osm_id": 1},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[10, 10], [10.001, 10], [10.001, 10.001], [10, 10.001], [10, 10]]],
        },
    }
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [far]}))
    config = register(real_aoi.ctx, "empty", opendata=_vector(path))
    with pytest.raises(VectorDataError, match=f"no polygon over AOI '{config.name}'"):
        fetch_opendata(real_aoi.ctx, config, STEP)
    assert _n_snapshots(real_aoi, config) == 0


def test_opendata_key_is_the_content_not_the_file(real_aoi: RealAoi, own_opendata: Owned) -> None:
    # the same footprints written differently are the same snapshot
    ctx = real_aoi.ctx
    config, path = own_opendata
    first = fetch_opendata(ctx, config, STEP)
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2))
    again = fetch_opendata(ctx, config, STEP)
    assert again.snapshot_id == first.snapshot_id and again.content_hash == first.content_hash


def test_a_rewritten_file_is_reused_from_the_next_fetch_on(
    real_aoi: RealAoi, own_opendata: Owned
) -> None:
    ctx = real_aoi.ctx
    config, path = own_opendata
    fetch_opendata(ctx, config, STEP)
    path.write_text(json.dumps(json.loads(path.read_text()), indent=2))
    fetch_opendata(ctx, config, STEP)
    assert fetch_opendata(ctx, config, STEP).reused  # nothing changed since the last fetch
