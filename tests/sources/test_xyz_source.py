"""XYZ tile directories: real Lalitpur tiles at z19 / z20, and tiny generated trees."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image

from pipeline.errors import CoverageError, ImageryError
from pipeline.sources import ShardImage, XyzSpec, check_coverage, open_imagery
from pipeline.sources.xyz import load_tile
from pipeline.tiles import Shard, Tile, block_of, lnglat_bounds, shard_tiles

TILES = Path(__file__).resolve().parents[1] / "data" / "oam-lalitpur" / "tiles"
# The northern cluster: z19 tiles x 386718-386719, y 220252-220253 (all RGBA, partly
# transparent) and their 16 z20 children, all inside this z17 shard.
SHARD_Z17 = Tile(96679, 55063, 17)


def _png(path: Path) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(Image.open(path).convert("RGBA"))
    return arr[..., :3], arr[..., 3] > 0


def _read(spec: XyzSpec, shard: Shard) -> ShardImage:
    with open_imagery(spec) as src:
        return src.read_shard(shard)


def test_equal_zoom_blocks_are_the_png_pixels() -> None:
    shard = Shard(SHARD_Z17, 19)
    image = _read(XyzSpec(path=str(TILES)), shard)
    assert image.data.shape == (3, 1024, 1024) and image.data.dtype == np.uint8
    found = 0
    for tile in shard_tiles(shard):
        r, c = block_of(tile, shard)
        block = np.s_[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]
        png = TILES / "19" / str(tile.x) / f"{tile.y}.png"
        if png.exists():
            found += 1
            rgb, alpha = _png(png)
            np.testing.assert_array_equal(image.valid[block], alpha)
            np.testing.assert_array_equal(image.data[(slice(None), *block)][:, alpha], rgb[alpha].T)
        else:
            assert not image.valid[block].any() and not image.data[(slice(None), *block)].any()
    assert found == 4
    assert 0.2 < image.valid_share < 0.25  # 4 of 16 blocks, some transparent pixels


def test_finer_native_tiles_are_block_averaged() -> None:
    shard = Shard(SHARD_Z17, 19)
    image = _read(XyzSpec(path=str(TILES), zoom=20), shard)
    for tile in [Tile(386718, 220252, 19), Tile(386719, 220253, 19)]:
        # the four z20 children, assembled, averaged 2x2 over their valid pixels
        rgb = np.zeros((512, 512, 3), np.float64)
        alpha = np.zeros((512, 512), bool)
        for dy in (0, 1):
            for dx in (0, 1):
                child = TILES / "20" / str(2 * tile.x + dx) / f"{2 * tile.y + dy}.png"
                crgb, calpha = _png(child)
                rgb[dy * 256 : dy * 256 + 256, dx * 256 : dx * 256 + 256] = crgb
                alpha[dy * 256 : dy * 256 + 256, dx * 256 : dx * 256 + 256] = calpha
        w = alpha.reshape(256, 2, 256, 2).sum(axis=(1, 3))
        s = (rgb * alpha[..., None]).reshape(256, 2, 256, 2, 3).sum(axis=(1, 3))
        expected = np.rint(s / np.maximum(w, 1)[..., None]).astype(np.uint8)
        r, c = block_of(tile, shard)
        block = np.s_[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]
        np.testing.assert_array_equal(image.valid[block], w >= 2)
        got = image.data[(slice(None), *block)].transpose(1, 2, 0)
        diff = np.abs(got.astype(int) - expected.astype(int))[w >= 2]
        assert diff.max() <= 1


def test_z20_tiles_at_work_zoom_19_match_the_z19_tiles() -> None:
    shard = Shard(SHARD_Z17, 19)
    native = _read(XyzSpec(path=str(TILES)), shard)
    from_z20 = _read(XyzSpec(path=str(TILES), zoom=20), shard)
    both = native.valid & from_z20.valid
    assert both.sum() > 0.99 * native.valid.sum()
    diff = np.abs(native.data.astype(int) - from_z20.data.astype(int))[:, both]
    assert np.median(diff) <= 4  # same imagery, resampled independently by the tile server


def test_coarser_native_tiles_are_upsampled() -> None:
    z19 = _read(XyzSpec(path=str(TILES)), Shard(SHARD_Z17, 19))
    up = _read(XyzSpec(path=str(TILES), zoom=19), Shard(SHARD_Z17, 20))
    assert up.data.shape == (3, 2048, 2048)
    assert abs(up.valid.mean() - z19.valid.mean()) < 1e-3
    down = up.data.reshape(3, 1024, 2, 1024, 2).astype(float).mean(axis=(2, 4))
    both = up.valid.reshape(1024, 2, 1024, 2).all(axis=(1, 3)) & z19.valid
    assert np.abs(down - z19.data)[:, both].mean() < 4


def test_shard_smaller_than_a_native_tile_is_a_zoomed_part_of_it() -> None:
    # z21 work tiles from the z19 tile (386718, 220252): shard z20 (773436, 440504) is its
    # top-left quarter, 512 px from 128 native px.
    image = _read(XyzSpec(path=str(TILES), zoom=19), Shard(Tile(773436, 440504, 20), 21))
    rgb, alpha = _png(TILES / "19" / "386718" / "220252.png")
    assert image.data.shape == (3, 512, 512)
    assert abs(image.valid.mean() - alpha[:128, :128].mean()) < 0.01
    down = image.data.reshape(3, 128, 4, 128, 4).astype(float).mean(axis=(2, 4))
    ok = alpha[:128, :128]
    assert np.abs(down.transpose(1, 2, 0) - rgb[:128, :128])[ok].mean() < 6


def test_missing_tiles_are_invalid_and_footprint_covers_tiles() -> None:
    with open_imagery(XyzSpec(path=str(TILES))) as src:
        empty = src.read_shard(Shard(Tile(96670, 55063, 17), 19))
        assert not empty.valid.any() and not empty.data.any()
        assert src.zooms() == [19, 20]
        fp = src.footprint()
        for tile in [Tile(386697, 220263, 19), Tile(386719, 220253, 19)]:
            assert fp.contains(shapely.box(*lnglat_bounds(tile)).buffer(-1e-7))
        assert check_coverage(
            src, shapely.box(*lnglat_bounds(Tile(386718, 220252, 19)))
        ) == pytest.approx(1.0)
        half = shapely.box(*lnglat_bounds(Tile(193359, 110126, 18)))  # 4 z19 tiles in it
        assert check_coverage(src, half) == pytest.approx(1.0, abs=1e-6)
        with pytest.raises(CoverageError, match="does not cover the AOI"):
            check_coverage(src, shapely.box(85.0, 27.0, 85.01, 27.01))


def test_work_zoom_without_tiles_names_present_zooms() -> None:
    with (
        open_imagery(XyzSpec(path=str(TILES))) as src,
        pytest.raises(ImageryError, match=r"no tiles at zoom 18 \(present: \[19, 20\]\)"),
    ):
        src.read_shard(Shard(Tile(48339, 27531, 16), 18))


def _tree(tmp_path: Path, tiles: dict[tuple[int, int, int], Image.Image], ext: str) -> Path:
    for (z, x, y), im in tiles.items():
        (tmp_path / str(z) / str(x)).mkdir(parents=True, exist_ok=True)
        im.save(tmp_path / str(z) / str(x) / f"{y}.{ext}")
    return tmp_path


@pytest.mark.parametrize("ext", ["jpg", "webp", "png"])
def test_jpeg_webp_png_tiles(tmp_path: Path, ext: str) -> None:
    colour = (200, 40, 90)
    _tree(tmp_path, {(3, 2, 5): Image.new("RGB", (256, 256), colour)}, ext)
    image = _read(XyzSpec(path=str(tmp_path)), Shard(Tile(1, 2, 2), 3))
    assert image.valid[256:, :256].all() and image.valid.sum() == 256 * 256
    assert np.abs(image.data[:, 256:, :256].mean(axis=(1, 2)) - colour).max() < 3


def test_tiles_two_zooms_finer_are_averaged_4x4(tmp_path: Path) -> None:
    tiles = {}
    for dx in range(4):
        for dy in range(4):
            rgba = np.zeros((256, 256, 4), np.uint8)
            rgba[..., 0] = 10 * (4 * dy + dx)  # one colour per child tile
            rgba[:, ::2, 1] = 100  # alternating columns average to 50
            rgba[:, 128:, 3] = 255  # left half transparent
            tiles[(7, 4 + dx, 8 + dy)] = Image.fromarray(rgba)
    _tree(tmp_path, tiles, "png")
    image = _read(XyzSpec(path=str(tmp_path), zoom=7), Shard(Tile(1, 2, 5), 5))
    for dx in range(4):
        for dy in range(4):
            block = np.s_[dy * 64 : dy * 64 + 64, dx * 64 : dx * 64 + 64]
            assert not image.valid[block][:, :32].any() and image.valid[block][:, 32:].all()
            assert (image.data[0][block][:, 32:] == 10 * (4 * dy + dx)).all()
            assert (image.data[1][block][:, 32:] == 50).all()


def test_alpha_becomes_the_valid_mask_and_template_path_is_accepted(tmp_path: Path) -> None:
    rgba = np.zeros((256, 256, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[:100, :, 3] = 255
    _tree(tmp_path, {(5, 0, 0): Image.fromarray(rgba)}, "png")
    image = _read(XyzSpec(path=f"{tmp_path}/{{z}}/{{x}}/{{y}}.png"), Shard(Tile(0, 0, 5), 5))
    assert image.valid[:100].all() and not image.valid[100:].any()
    assert (image.data[:, :100] == 120).all() and (image.data[:, 100:] == 0).all()


def test_a_file_that_is_not_an_image_names_the_file(tmp_path: Path) -> None:
    _tree(tmp_path, {(3, 2, 5): Image.new("RGB", (256, 256))}, "png")
    bad = tmp_path / "3" / "3" / "5.png"
    bad.parent.mkdir()
    bad.write_text("<html>404 Not Found</html>")
    with (
        open_imagery(XyzSpec(path=str(tmp_path))) as src,
        pytest.raises(ImageryError, match=r"3/3/5\.png: not a readable image tile"),
    ):
        src.read_shard(Shard(Tile(1, 2, 2), 3))
    with pytest.raises(ImageryError, match="not a readable image"):
        load_tile(bad)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageryError, match="nowhere: tile directory not found"):
        open_imagery(XyzSpec(path="nowhere"), base_dir=tmp_path)


def test_step_in_path_and_fingerprint_tracks_the_listing(tmp_path: Path) -> None:
    _tree(tmp_path / "2024", {(3, 2, 5): Image.new("RGB", (256, 256))}, "png")
    spec = XyzSpec(path="{step}")
    with open_imagery(spec, step="2024", base_dir=tmp_path) as src:
        first = src.fingerprint()
    with open_imagery(spec, step="2024", base_dir=tmp_path) as src:
        assert src.fingerprint() == first
    tile = tmp_path / "2024" / "3" / "2" / "5.png"
    Image.new("RGB", (256, 256), (9, 9, 9)).save(tile)
    os.utime(tile, ns=(1, 1))
    with open_imagery(spec, step="2024", base_dir=tmp_path) as src:
        assert src.fingerprint() != first
