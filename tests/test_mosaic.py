"""Shard mosaic GeoTIFFs: round trips, QGIS-friendly layout, atomic writes, content hash."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp, Compression, MaskFlags

from pipeline.errors import StoreError
from pipeline.mosaic import array_hash, decode_prob, encode_prob, read_mosaic, write_mosaic
from pipeline.tiles import Shard, Tile, shard_transform

SHARD = Shard(Tile(96679, 55063, 17), 19)  # 1024 px


@pytest.fixture
def image() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    data = rng.integers(0, 256, (3, 1024, 1024), dtype=np.uint8)
    valid = np.zeros((1024, 1024), bool)
    valid[100:700, 50:900] = True
    data[:, ~valid] = 0
    return data, valid


def test_image_round_trip_and_layout(tmp_path: Path, image) -> None:  # noqa: ANN001
    data, valid = image
    path = tmp_path / "img.tif"
    write_mosaic(path, data, SHARD, kind="image", valid=valid)
    assert [p.name for p in tmp_path.iterdir()] == ["img.tif"]  # internal mask, no sidecar
    with rasterio.open(path) as src:
        assert src.count == 3 and src.dtypes == ("uint8",) * 3
        assert src.crs.to_epsg() == 3857
        assert src.transform.almost_equals(shard_transform(SHARD), precision=1e-9)
        assert (src.width, src.height) == (1024, 1024)
        assert src.block_shapes == [(256, 256)] * 3 and src.compression == Compression.zstd
        assert src.colorinterp == (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
        assert src.mask_flag_enums[0] == [MaskFlags.per_dataset]
        assert src.tags()["GEOAUDIT_KIND"] == "image" and src.tags()["GEOAUDIT_SHARD"] == SHARD.id
    got, got_valid = read_mosaic(path)
    np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(got_valid, valid)


def test_label_and_prob_round_trip(tmp_path: Path) -> None:
    labels = np.zeros((1024, 1024), bool)
    labels[10:20, 30:60] = True
    write_mosaic(tmp_path / "l.tif", labels, SHARD, kind="label")
    got, valid = read_mosaic(tmp_path / "l.tif")
    assert got.dtype == np.uint8 and got.shape == (1024, 1024) and valid is None
    assert got.sum() == 300 and got[15, 40] == 1

    prob = np.linspace(0, 1, 1024 * 1024, dtype=np.float32).reshape(1024, 1024)
    write_mosaic(tmp_path / "p.tif", prob, SHARD, kind="prob", nodata=None)
    got, _ = read_mosaic(tmp_path / "p.tif")
    np.testing.assert_array_equal(got, encode_prob(prob))
    assert np.abs(decode_prob(got) - prob).max() <= 0.5 / 255 + 1e-6
    with rasterio.open(tmp_path / "p.tif") as src:
        assert src.count == 1 and src.crs.to_epsg() == 3857


def test_nodata_gives_a_valid_mask_and_file_objects_work() -> None:
    labels = np.full((1024, 1024), 255, np.uint8)
    labels[:512] = 0
    buf = io.BytesIO()
    write_mosaic(buf, labels, SHARD, kind="label", nodata=255)
    buf.seek(0)
    got, valid = read_mosaic(buf)
    np.testing.assert_array_equal(got, labels)
    assert valid[:512].all() and not valid[512:].any()


@pytest.mark.parametrize(
    ("array", "kind", "fragment"),
    [
        (np.zeros((3, 512, 512), np.uint8), "image", r"must be \(3, 1024, 1024\) uint8"),
        (np.zeros((3, 1024, 1024), np.float32), "image", "uint8"),
        (np.zeros((1024, 1000), np.uint8), "label", r"must be \(1024, 1024\)"),
        (np.zeros((1024, 1024), np.int32), "label", "must be uint8"),
    ],
)
def test_wrong_arrays_are_refused(
    tmp_path: Path, array: np.ndarray, kind: str, fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        write_mosaic(tmp_path / "x.tif", array, SHARD, kind=kind)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_the_previous_mosaic_and_no_temp_file(
    tmp_path: Path,
    image,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    data, valid = image
    path = tmp_path / "img.tif"
    write_mosaic(path, data, SHARD, kind="image", valid=valid)
    before = path.read_bytes()

    def disk_full(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        raise OSError(28, "No space left on device")

    # the failure strikes after the pixels are written, while the mask is written
    monkeypatch.setattr(rasterio.io.DatasetWriter, "write_mask", disk_full)
    with pytest.raises(StoreError, match=r"img\.tif: cannot write image mosaic .*No space left"):
        write_mosaic(path, np.full_like(data, 7), SHARD, kind="image", valid=valid)
    assert [p.name for p in tmp_path.iterdir()] == ["img.tif"]
    assert path.read_bytes() == before


def test_parent_folders_are_created_and_a_file_in_the_way_is_a_store_error(
    tmp_path: Path,
    image,  # noqa: ANN001
) -> None:
    write_mosaic(tmp_path / "shards" / SHARD.id / "img.tif", image[0], SHARD, kind="image")
    assert read_mosaic(tmp_path / "shards" / SHARD.id / "img.tif").valid is None
    (tmp_path / "blocker").write_text("a file, not a folder")
    with pytest.raises(StoreError, match=r"blocker/img\.tif: cannot write image mosaic"):
        write_mosaic(tmp_path / "blocker" / "img.tif", image[0], SHARD, kind="image")


def test_read_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"gone\.tif: cannot read mosaic"):
        read_mosaic(tmp_path / "gone.tif")
    (tmp_path / "bad.tif").write_bytes(b"II*\0garbage")
    with pytest.raises(StoreError, match=r"bad\.tif: cannot read mosaic"):
        read_mosaic(tmp_path / "bad.tif")


def test_array_hash() -> None:
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    h = array_hash(a)
    assert len(h) == 64 and h == array_hash(a.copy())
    assert h == array_hash(np.asfortranarray(a))  # layout does not matter, values do
    b = a.copy()
    b[1, 2, 3] += 1
    assert array_hash(b) != h
    assert array_hash(a.reshape(4, 3, 2)) != h  # same bytes, other shape
    assert array_hash(a.view(np.int8)) != h  # same bytes, other dtype
    valid = np.ones((3, 4), bool)
    assert array_hash(a, valid) != h
    valid2 = valid.copy()
    valid2[0, 0] = False
    assert array_hash(a, valid2) != array_hash(a, valid)
