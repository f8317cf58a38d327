"""The run's typed data model: snapshot metadata written and parsed back, a shard's
image read whole and decimated, the open data and a run's inputs."""

from __future__ import annotations

import io

import geopandas as gpd
import numpy as np
import pytest
import shapely
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.db.models import Snapshot
from pipeline.errors import ConfigError, StoreError
from pipeline.mosaic import write_mosaic
from pipeline.run import layout
from pipeline.run.handoffs import FetchedSnapshot
from pipeline.run.inputs import (
    compared_opendata,
    geoparquet_bytes,
    load_run_inputs,
    read_geoparquet,
    read_opendata,
    read_shard_image,
)
from pipeline.run.snapshots import (
    ImagerySnapshot,
    OpenDataSnapshot,
    ShardRef,
    imagery_meta,
    imagery_snapshot,
    opendata_meta,
    opendata_snapshot,
)
from pipeline.tiles import Tile, lnglat_bounds, parse_shard_id

from ._helpers import SHARD_IDS, bbox_of, fetched, planned, register, tile_tree_without
from .conftest import STEP, RealAoi

# the first shard loses its north-west tile in the partial copy of the tile tree
PARTIAL_SHARD = SHARD_IDS[0]
DROPPED = Tile(773394, 440526, 20)
Snapshots = tuple[FetchedSnapshot, FetchedSnapshot]


@pytest.fixture(scope="module")
def snapshots(real_aoi: RealAoi) -> Snapshots:
    return fetched(real_aoi.ctx, real_aoi.config)


@pytest.fixture(scope="module")
def partial_imagery(real_aoi: RealAoi, tmp_path_factory: pytest.TempPathFactory) -> ImagerySnapshot:
    """Imagery of an AOI whose tile tree lacks one tile."""
    root = tile_tree_without(tmp_path_factory.mktemp("partial"), [DROPPED])
    config = register(
        real_aoi.ctx, "partial", imagery={"kind": "xyz", "path": str(root), "zoom": 20}
    )
    imagery, _ = fetched(real_aoi.ctx, config)
    with Session(real_aoi.ctx.engine) as s:
        return imagery_snapshot(s, imagery.snapshot_id)


def _row(real_aoi: RealAoi, snapshot_id: int) -> Snapshot:
    with Session(real_aoi.ctx.engine, expire_on_commit=False) as s:
        row = repo.get_snapshot(s, snapshot_id)
        s.expunge(row)
        return row


def _aoi_id(real_aoi: RealAoi) -> int:
    with Session(real_aoi.ctx.engine) as s:
        return repo.get_aoi(s, real_aoi.config.name).id


# --- snapshot metadata ----------------------------------------------------------------


def test_fetched_imagery_meta_parses_into_its_snapshot(
    real_aoi: RealAoi, snapshots: Snapshots
) -> None:
    imagery, _ = snapshots
    row = _row(real_aoi, imagery.snapshot_id)
    snap = ImagerySnapshot.from_row(row)
    assert (snap.id, snap.aoi_id, snap.step) == (row.id, _aoi_id(real_aoi), STEP)
    assert snap.content_hash == imagery.content_hash == row.content_hash
    assert sorted(snap.shards) == list(SHARD_IDS) and snap.feature_count == len(SHARD_IDS)
    for sid, ref in snap.shards.items():
        assert ref.shard_id == sid
        assert ref.key == layout.imagery_key(real_aoi.config.name, STEP, snap.fingerprint, sid)
        assert real_aoi.ctx.store.exists(ref.key)
        assert len(ref.content_hash) == 64 and 0.99 < ref.valid_share <= 1.0
    assert snap.coverage == pytest.approx(1.0)
    assert dict(snap.described) == {"band_count": 3, "dtype": "uint8", "crs": "EPSG:3857"}
    # written and parsed in one place: writing the parsed snapshot gives the row's JSON
    assert snap.source_step == STEP  # the date rule 'latest' found the step's own file
    meta = imagery_meta(
        snap.fingerprint, snap.coverage, snap.shards, snap.described, snap.source_step
    )
    assert meta == row.meta


def test_fetched_opendata_meta_parses_into_its_snapshot(
    real_aoi: RealAoi, snapshots: Snapshots
) -> None:
    _, opendata = snapshots
    row = _row(real_aoi, opendata.snapshot_id)
    snap = OpenDataSnapshot.from_row(row)
    name = real_aoi.config.name
    assert snap.key == layout.opendata_key(name, STEP, opendata.content_hash)
    assert snap.profile_key == layout.opendata_profile_key(name, STEP, opendata.content_hash)
    assert snap.artifact_keys() == [snap.key, snap.profile_key]
    assert all(real_aoi.ctx.store.exists(k) for k in snap.artifact_keys())
    assert dict(snap.repair) == {"n_input": snap.feature_count, "n_repaired": 0, "n_dropped": 0}
    assert snap.read_info["crs"] == "EPSG:4326" and snap.read_info["n_read"] >= snap.feature_count
    assert snap.feature_count == len(read_opendata(real_aoi.ctx, snap)) > 10
    assert snap.source_step == STEP
    meta = opendata_meta(
        snap.fingerprint, snap.key, snap.profile_key, snap.repair, snap.read_info, snap.source_step
    )
    assert meta == row.meta


def test_hand_written_meta_round_trips(real_aoi: RealAoi) -> None:
    shards = {
        "19-1-2": ShardRef("19-1-2", "aois/x/imagery/a.tif", "h1", 0.25),
        "19-1-3": ShardRef("19-1-3", "aois/x/imagery/b.tif", "h2", 1.0),
    }
    described = {"band_count": 3, "dtype": "uint8", "crs": "EPSG:3857"}
    with Session(real_aoi.ctx.engine) as s, s.begin():
        aoi_id = repo.get_aoi(s, real_aoi.config.name).id
        img = repo.add_snapshot(
            s,
            aoi_id,
            "imagery",
            "2001-01-01",
            source="tiles",
            content_hash="c" * 64,
            feature_count=2,
            meta=imagery_meta("f" * 64, 0.5, shards, described),
        )
        od = repo.add_snapshot(
            s,
            aoi_id,
            "opendata",
            "2001-01-01",
            source="osm",
            content_hash="d" * 64,
            feature_count=3,
            meta=opendata_meta("e" * 64, "k.parquet", "k.profile.parquet", {"n_input": 3}, {}),
        )
        img_id, od_id = img.id, od.id
    with Session(real_aoi.ctx.engine) as s:
        image = imagery_snapshot(s, img_id)
        opendata = opendata_snapshot(s, od_id)
    assert image == ImagerySnapshot(
        img_id, aoi_id, "2001-01-01", "tiles", "c" * 64, 2, "f" * 64, 0.5, shards, described
    )
    assert opendata == OpenDataSnapshot(
        od_id,
        aoi_id,
        "2001-01-01",
        "osm",
        "d" * 64,
        3,
        "e" * 64,
        "k.parquet",
        "k.profile.parquet",
        {"n_input": 3},
        {},
    )


def test_a_shard_without_a_valid_share_is_read_as_fully_valid(real_aoi: RealAoi) -> None:
    # rows written before valid shares were recorded
    meta = {"fingerprint": "f", "coverage": 1.0, "shards": {"19-1-2": {"key": "k", "hash": "h"}}}
    with Session(real_aoi.ctx.engine) as s, s.begin():
        row = repo.add_snapshot(
            s,
            _aoi_id(real_aoi),
            "imagery",
            "2001-02-01",
            source="old",
            content_hash="0" * 64,
            meta=meta,
        )
        snap = ImagerySnapshot.from_row(row)
    assert snap.shards["19-1-2"] == ShardRef("19-1-2", "k", "h", 1.0)
    assert snap.described == {} and snap.feature_count == 0


def test_a_snapshot_of_the_other_kind_is_refused(real_aoi: RealAoi, snapshots: Snapshots) -> None:
    imagery, opendata = snapshots
    with pytest.raises(
        ConfigError, match=rf"snapshot {imagery.snapshot_id} is imagery, not opendata"
    ):
        OpenDataSnapshot.from_row(_row(real_aoi, imagery.snapshot_id))
    with pytest.raises(
        ConfigError, match=rf"snapshot {opendata.snapshot_id} is opendata, not imagery"
    ):
        ImagerySnapshot.from_row(_row(real_aoi, opendata.snapshot_id))
    with Session(real_aoi.ctx.engine) as s:
        with pytest.raises(ConfigError, match="is opendata, not imagery"):
            imagery_snapshot(s, opendata.snapshot_id)
        with pytest.raises(ConfigError, match="is imagery, not opendata"):
            opendata_snapshot(s, imagery.snapshot_id)


# --- a shard's image --------------------------------------------------------------------


def test_read_shard_image_whole(real_aoi: RealAoi, snapshots: Snapshots) -> None:
    with Session(real_aoi.ctx.engine) as s:
        snap = imagery_snapshot(s, snapshots[0].snapshot_id)
    for sid, ref in snap.shards.items():
        size = parse_shard_id(sid, real_aoi.config.work_zoom).size
        pixels = read_shard_image(real_aoi.ctx, ref)
        assert pixels.data.shape == (3, size, size) and pixels.data.dtype == np.uint8
        assert pixels.valid.shape == (size, size) and pixels.valid.dtype == np.bool_
        assert pixels.valid.mean() == pytest.approx(ref.valid_share)
        assert pixels.data[:, pixels.valid].std() > 5  # real imagery, not a constant


def test_read_shard_image_decimated(real_aoi: RealAoi, snapshots: Snapshots) -> None:
    with Session(real_aoi.ctx.engine) as s:
        ref = imagery_snapshot(s, snapshots[0].snapshot_id).shards[SHARD_IDS[1]]
    whole = read_shard_image(real_aoi.ctx, ref)
    for size in (1, 64, 128):
        small = read_shard_image(real_aoi.ctx, ref, size=size)
        assert small.data.shape == (3, size, size) and small.data.dtype == np.uint8
        assert small.valid.shape == (size, size) and small.valid.dtype == np.bool_
        assert small.valid.all()
    # at full size the decimated read is the mosaic itself
    same = read_shard_image(real_aoi.ctx, ref, size=whole.data.shape[1])
    np.testing.assert_array_equal(same.data, whole.data)
    np.testing.assert_array_equal(same.valid, whole.valid)


def test_a_missing_tile_is_invalid_whole_and_decimated(
    partial_imagery: ImagerySnapshot, real_aoi: RealAoi
) -> None:
    ref = partial_imagery.shards[PARTIAL_SHARD]
    assert ref.valid_share == pytest.approx(0.75)
    whole = read_shard_image(real_aoi.ctx, ref)
    # the dropped tile is block (row 0, col 0) of its shard
    assert not whole.valid[:256, :256].any() and whole.valid[256:, :].all()
    assert whole.valid[:256, 256:].all()
    small = read_shard_image(real_aoi.ctx, ref, size=64)
    assert not small.valid[:32, :32].any()
    assert small.valid.sum() == 64 * 64 - 32 * 32


def test_a_mosaic_without_a_mask_is_valid_everywhere(real_aoi: RealAoi) -> None:
    shard = parse_shard_id("20-773394-440526", 20)
    key = "aois/unmasked/imagery/2001-01-01/0000000000000000/20-773394-440526.tif"
    data = np.random.default_rng(0).integers(0, 255, (3, 256, 256), dtype=np.uint8)
    with real_aoi.ctx.store.writable_path(key) as tmp:
        write_mosaic(tmp, data, shard, kind="image")
    ref = ShardRef(shard.id, key, "h", 1.0)
    pixels = read_shard_image(real_aoi.ctx, ref)
    np.testing.assert_array_equal(pixels.data, data)
    assert pixels.valid.all() and pixels.valid.shape == (256, 256)
    assert read_shard_image(real_aoi.ctx, ref, size=32).valid.all()


def test_an_unreadable_mosaic_is_named(real_aoi: RealAoi) -> None:
    key = "aois/broken/imagery/2001-01-01/0000000000000000/19-1-2.tif"
    real_aoi.ctx.store.write_bytes(key, b"not a tiff")
    ref = ShardRef("19-1-2", key, "h", 1.0)
    with pytest.raises(StoreError, match="cannot read"):
        read_shard_image(real_aoi.ctx, ref)
    with pytest.raises(StoreError, match=rf"imagery mosaic {key} of shard 19-1-2: cannot read"):
        read_shard_image(real_aoi.ctx, ref, size=16)
    with pytest.raises(StoreError, match="not found"):
        read_shard_image(real_aoi.ctx, ShardRef("19-1-2", "aois/none/x.tif", "h", 1.0))


# --- open data ----------------------------------------------------------------------------


def test_read_opendata_is_kept_per_process(real_aoi: RealAoi, snapshots: Snapshots) -> None:
    with Session(real_aoi.ctx.engine) as s:
        snap = opendata_snapshot(s, snapshots[1].snapshot_id)
    frame = read_opendata(real_aoi.ctx, snap)
    assert read_opendata(real_aoi.ctx, snap) is frame
    assert frame.columns.tolist() == ["feature_id", "geometry"]
    assert frame["feature_id"].is_unique and frame.geometry.is_valid.all()
    assert frame.crs is not None
    aoi = gpd.GeoSeries([real_aoi.config.geometry], crs="EPSG:4326").to_crs(frame.crs).iloc[0]
    assert frame.intersects(aoi).all()  # clipped to the AOI at fetch


def test_read_opendata_gives_the_prepared_footprints_in_web_mercator(
    real_aoi: RealAoi, snapshots: Snapshots
) -> None:
    with Session(real_aoi.ctx.engine) as s:
        snap = opendata_snapshot(s, snapshots[1].snapshot_id)
    frame = read_opendata(real_aoi.ctx, snap)
    assert frame.crs.to_epsg() == 3857 and frame.geometry.is_valid.all()
    assert len(frame) == snap.feature_count


def test_geoparquet_round_trip(real_aoi: RealAoi) -> None:
    frame = gpd.GeoDataFrame(
        {"feature_id": ["a", "b"], "confidence": [0.5, 0.9]},
        geometry=[shapely.box(0, 0, 10, 10), shapely.box(20, 0, 25, 5)],
        crs="EPSG:3857",
    )
    real_aoi.ctx.store.write_bytes("runs/999/buildings.parquet", geoparquet_bytes(frame))
    back = read_geoparquet(real_aoi.ctx, "runs/999/buildings.parquet")
    assert back.crs.to_epsg() == 3857
    assert back["feature_id"].tolist() == ["a", "b"]
    assert back.geometry.geom_equals(frame.geometry).all()
    assert gpd.read_parquet(io.BytesIO(geoparquet_bytes(frame))).equals(back)


# --- a run's inputs -----------------------------------------------------------------------


def test_load_run_inputs(real_aoi: RealAoi, snapshots: Snapshots) -> None:
    ctx, config = real_aoi.ctx, real_aoi.config
    bbox = bbox_of([Tile(773394, 440526, 20)])
    plan = planned(ctx, config, repredict=True, bbox=tuple(bbox))
    inputs = load_run_inputs(ctx, plan.run_id)
    with Session(ctx.engine) as s:
        imagery = imagery_snapshot(s, snapshots[0].snapshot_id)
        opendata = opendata_snapshot(s, snapshots[1].snapshot_id)
    assert inputs.run_id == plan.run_id and inputs.step == STEP
    assert inputs.aoi == config
    assert inputs.imagery == imagery and inputs.opendata == opendata
    assert inputs.model_version_id == real_aoi.model_version_id
    assert inputs.repredict is True
    assert inputs.bbox == tuple(bbox) and all(type(v) is float for v in inputs.bbox)

    plain = load_run_inputs(ctx, planned(ctx, config, force=True).run_id)
    assert plain.repredict is False and plain.bbox is None


def test_a_run_without_snapshots_has_no_inputs(real_aoi: RealAoi) -> None:
    with Session(real_aoi.ctx.engine) as s, s.begin():
        run = repo.start_run(s, _aoi_id(real_aoi), STEP, trigger="test", shards_total=0)
        run_id = run.id
        repo.finish_run(s, run_id, "failed", error="test run")
    with pytest.raises(ConfigError, match=rf"run {run_id} has no snapshots"):
        load_run_inputs(real_aoi.ctx, run_id)


def test_compared_opendata_is_all_of_it_or_what_a_bbox_run_looked_at(real_aoi: RealAoi) -> None:
    ctx, config = real_aoi.ctx, real_aoi.config
    whole = load_run_inputs(ctx, planned(ctx, config, force=True).run_id)
    tiles = gpd.GeoDataFrame(
        geometry=[shapely.box(*lnglat_bounds(t)) for t in config.tiles()], crs="EPSG:4326"
    )
    frame, footprint = compared_opendata(ctx, whole, tiles)
    assert footprint is None and frame.crs.to_epsg() == 3857
    assert len(frame) == whole.opendata.feature_count

    corner = Tile(773394, 440526, 20)
    subset = load_run_inputs(ctx, planned(ctx, config, bbox=tuple(bbox_of([corner]))).run_id)
    one = gpd.GeoDataFrame(geometry=[shapely.box(*lnglat_bounds(corner))], crs="EPSG:4326")
    part, footprint = compared_opendata(ctx, subset, one)
    assert footprint is not None and footprint.equals(one.to_crs(3857).geometry.iloc[0])
    inside = frame.representative_point().within(footprint)
    assert 0 < len(part) == int(inside.sum()) < len(frame)
    assert set(part["feature_id"]) == set(frame.loc[inside, "feature_id"])
