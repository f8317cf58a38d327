"""GeoTIFF imagery: the real SpaceNet scene, generated UTM rasters, and broken files."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import mercantile
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer

from pipeline.errors import CoverageError, ImageryError
from pipeline.sources import GeoTiffSource, GeoTiffSpec, check_coverage, open_imagery
from pipeline.tiles import Shard, Tile, lnglat_bounds, shard_transform, xy_bounds

ATLANTA_TIF = (
    Path(__file__).resolve().parents[1] / "data" / "spacenet4-atlanta" / "pan_0.5m_epsg32616.tif"
)
# The z16 tile holding the scene's north-east part; work zoom 18 -> 1024 px shard.
ATLANTA_SHARD = Shard(Tile(17389, 26258, 16), 18)

# A generated scene in UTM 45N near Lalitpur: 400 x 400 px at 0.5 m, a bright square.
UTM45 = "EPSG:32645"
ORIGIN = (333_000.0, 3_065_000.0)  # top-left (x, y)
SQUARE = (100, 240, 20)  # row, col, side in pixels


def _utm_scene(make_tif, path: Path) -> Path:  # noqa: ANN001
    data = np.full((3, 400, 400), 60, np.uint8)
    r, c, n = SQUARE
    data[:, r : r + n, c : c + n] = 250
    return make_tif(path, data, crs=UTM45, transform=Affine(0.5, 0, ORIGIN[0], 0, -0.5, ORIGIN[1]))


def _shard_at(lon: float, lat: float) -> Shard:
    t = mercantile.tile(lon, lat, 18)
    p = mercantile.parent(t, zoom=16)
    return Shard(Tile(p.x, p.y, 16), 18)


def test_spacenet_single_band_uint16_into_a_z18_shard() -> None:
    spec = GeoTiffSpec(path=str(ATLANTA_TIF), bands=[1])
    with open_imagery(spec) as src:
        image = src.read_shard(ATLANTA_SHARD)
        lo, hi = src.stretch()
        footprint = src.footprint()
    assert image.data.shape == (3, 1024, 1024) and image.data.dtype == np.uint8
    np.testing.assert_array_equal(image.data[0], image.data[1])  # grey replicated
    np.testing.assert_array_equal(image.data[0], image.data[2])
    assert 0.2 < image.valid_share < 0.5  # the scene covers part of this shard
    assert not image.data[:, ~image.valid].any()
    values = image.data[0][image.valid]
    assert values.std() > 20 and (values == 255).mean() < 0.1  # 0.5-99.5 % stretch, not saturated
    assert 54 <= lo < hi <= 6615
    # valid pixels sit inside the scene footprint (and fill it within a pixel or two)
    inv = ~shard_transform(ATLANTA_SHARD)
    rows, cols = np.nonzero(image.valid)
    t = Transformer.from_crs(4326, 3857, always_xy=True)
    fx, fy = t.transform(*np.array(footprint.exterior.coords).T)
    fc, fr = inv @ (np.asarray(fx), np.asarray(fy))
    assert cols.min() >= max(fc.min(), 0) - 2 and cols.max() <= min(fc.max(), 1024) + 2
    assert rows.min() >= max(fr.min(), 0) - 2 and rows.max() <= min(fr.max(), 1024) + 2


def test_spacenet_with_default_rgb_bands_says_which_bands() -> None:
    with pytest.raises(
        ImageryError,
        match=r"pan_0\.5m_epsg32616\.tif: raster has 1 band, spec asks for bands \[1, 2, 3\]",
    ):
        open_imagery(GeoTiffSpec(path=str(ATLANTA_TIF)))


def test_utm_raster_lands_in_the_right_place(tmp_path: Path, make_tif) -> None:  # noqa: ANN001
    path = _utm_scene(make_tif, tmp_path / "utm.tif")
    r, c, n = SQUARE
    centre_utm = (ORIGIN[0] + (c + n / 2) * 0.5, ORIGIN[1] - (r + n / 2) * 0.5)
    lon, lat = Transformer.from_crs(UTM45, 4326, always_xy=True).transform(*centre_utm)
    shard = _shard_at(lon, lat)
    with open_imagery(GeoTiffSpec(path=str(path))) as src:
        image = src.read_shard(shard)
    x, y = Transformer.from_crs(UTM45, 3857, always_xy=True).transform(*centre_utm)
    col, row = ~shard_transform(shard) @ (x, y)  # continuous pixel coordinates
    bright = image.data[0] > 155
    rows, cols = np.nonzero(bright)
    assert abs(cols.mean() + 0.5 - col) < 1.0 and abs(rows.mean() + 0.5 - row) < 1.0
    # ~10 m square at z18 (0.597 m px in mercator units, x 1/cos(lat) on the ground)
    side_px = n * 0.5 / np.cos(np.radians(lat)) / (shard_transform(shard).a)
    assert bright.sum() == pytest.approx(side_px**2, rel=0.1)
    assert (image.data[:, image.valid & ~bright] < 155).all()


def test_rescale_nodata_and_an_open_dataset(tmp_path: Path, make_tif) -> None:  # noqa: ANN001
    data = np.full((1, 64, 64), 500, np.uint16)
    data[0, :, :32] = 1000
    data[0, :8] = 7  # declared nodata by the spec, not by the file
    tif = make_tif(
        tmp_path / "u16.tif",
        data,
        crs="EPSG:3857",
        transform=shard_transform(Shard(Tile(0, 0, 0), 0)) @ Affine.scale(4),
    )
    spec = GeoTiffSpec(path=str(tif), bands=[1], rescale=(0, 1000), nodata=7)
    with rasterio.open(tif) as ds, GeoTiffSource(spec, dataset=ds) as src:
        image = src.read_shard(Shard(Tile(0, 0, 0), 0))
        assert not ds.closed  # the caller owns a dataset it passed in
    assert not image.valid[:30].any() and image.valid[34:].all()
    assert image.data[0, 100:, 10] == pytest.approx(255, abs=1)
    assert image.data[0, 100:, 200] == pytest.approx(128, abs=1)


def test_shard_outside_the_raster_is_invalid_and_coverage_error(tmp_path: Path, make_tif) -> None:  # noqa: ANN001
    path = _utm_scene(make_tif, tmp_path / "utm.tif")
    with open_imagery(GeoTiffSpec(path=str(path))) as src:
        far = src.read_shard(Shard(Tile(0, 0, 16), 18))
        assert not far.valid.any() and far.data.shape == (3, 1024, 1024)
        fp = src.footprint()
        assert check_coverage(src, fp.buffer(-1e-5)) == pytest.approx(1.0)
        assert 0.2 < check_coverage(src, shapely.box(*fp.bounds).buffer(0.001)) < 0.9
        with pytest.raises(CoverageError, match=r"utm\.tif: imagery does not cover the AOI"):
            check_coverage(src, shapely.box(*lnglat_bounds(Tile(0, 0, 16))))


def test_fingerprint_is_sha256_of_the_file(tmp_path: Path, make_tif) -> None:  # noqa: ANN001
    path = _utm_scene(make_tif, tmp_path / "utm.tif")
    with open_imagery(GeoTiffSpec(path="{step}.tif"), step="utm", base_dir=tmp_path) as src:
        assert src.fingerprint() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_remote_geotiff_over_http(http_root, make_tif) -> None:  # noqa: ANN001
    root, url = http_root
    _utm_scene(make_tif, root / "utm.tif")
    local = open_imagery(GeoTiffSpec(path=str(root / "utm.tif")))
    with local, open_imagery(GeoTiffSpec(path=f"{url}/utm.tif")) as remote:
        shard = _shard_at(*local.footprint().centroid.coords[0])
        np.testing.assert_array_equal(remote.read_shard(shard).data, local.read_shard(shard).data)
        assert len(remote.fingerprint()) == 64


# --- broken inputs -------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageryError, match=r"nope\.tif: file not found"):
        open_imagery(GeoTiffSpec(path="nope.tif"), base_dir=tmp_path)


def test_not_a_raster(tmp_path: Path) -> None:
    bad = tmp_path / "junk.tif"
    bad.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageryError, match=r"junk\.tif: not a readable raster"):
        open_imagery(GeoTiffSpec(path=str(bad)))


def test_truncated_geotiff_fails_on_read(tmp_path: Path, make_tif) -> None:  # noqa: ANN001
    path = _utm_scene(make_tif, tmp_path / "trunc.tif")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    with open_imagery(GeoTiffSpec(path=str(path))) as src:
        shard = _shard_at(*src.footprint().centroid.coords[0])
        with pytest.raises(
            ImageryError, match=r"trunc\.tif: cannot read pixels of shard .*TIFFRead"
        ):
            src.read_shard(shard)


def test_geotiff_cut_inside_its_header(tmp_path: Path, make_tif) -> None:  # noqa: ANN001
    path = _utm_scene(make_tif, tmp_path / "cut.tif")
    path.write_bytes(path.read_bytes()[:64])
    with pytest.raises(ImageryError, match=r"cut\.tif: not a readable raster"):
        open_imagery(GeoTiffSpec(path=str(path)))


def test_raster_without_crs(tmp_path: Path, make_tif) -> None:  # noqa: ANN001
    path = make_tif(
        tmp_path / "nocrs.tif", np.zeros((3, 8, 8), np.uint8), crs=None, transform=Affine.identity()
    )
    with pytest.raises(ImageryError, match=r"nocrs\.tif: raster has no CRS"):
        open_imagery(GeoTiffSpec(path=str(path)))


def test_requested_band_missing(tmp_path: Path, make_tif) -> None:  # noqa: ANN001
    path = _utm_scene(make_tif, tmp_path / "rgb.tif")
    with pytest.raises(
        ImageryError, match=r"rgb\.tif: raster has 3 bands, spec asks for bands \[4, 3, 2\]"
    ):
        open_imagery(GeoTiffSpec(path=str(path), bands=[4, 3, 2]))


def test_xy_bounds_are_what_the_shard_covers() -> None:
    # sanity link between tiles.py and the reads above
    left, bottom, right, top = xy_bounds(ATLANTA_SHARD.tile)
    t = shard_transform(ATLANTA_SHARD)
    assert (t.c, t.f) == (left, top) and t.a * 1024 == pytest.approx(right - left)


# --- VRTs and GDAL service descriptions -------------------------------------------------------

_VRT_BAND = """  <VRTRasterBand dataType="Byte" band="{band}">
{sources}  </VRTRasterBand>
"""
_VRT_SOURCE = """    <SimpleSource>
      <SourceFilename relativeToVRT="1">{name}</SourceFilename>
      <SourceBand>{band}</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="32" ySize="64"/>
      <DstRect xOff="{x}" yOff="0" xSize="32" ySize="64"/>
    </SimpleSource>
"""


def _halves_and_vrt(tmp_path: Path, make_tif) -> tuple[Path, Path]:  # noqa: ANN001
    """tiles/west.tif and tiles/east.tif (32 x 64 px each, EPSG:3857) and mosaic.vrt
    joining them by relative paths."""
    world = shard_transform(Shard(Tile(0, 0, 0), 0)) @ Affine.scale(4)  # 64 px = the world
    (tmp_path / "tiles").mkdir()
    for name, value, x in (("west", 60, 0), ("east", 200, 32)):
        make_tif(
            tmp_path / "tiles" / f"{name}.tif",
            np.full((3, 64, 32), value, np.uint8),
            crs="EPSG:3857",
            transform=world @ Affine.translation(x, 0),
        )
    bands = "".join(
        _VRT_BAND.format(
            band=b,
            sources="".join(
                _VRT_SOURCE.format(name=f"tiles/{n}.tif", band=b, x=x)
                for n, x in (("west", 0), ("east", 32))
            ),
        )
        for b in (1, 2, 3)
    )
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="64" rasterYSize="64">\n  <SRS>EPSG:3857</SRS>\n'
        f"  <GeoTransform>{', '.join(repr(v) for v in world.to_gdal())}</GeoTransform>\n"
        f"{bands}</VRTDataset>\n"
    )
    return vrt, tmp_path / "tiles" / "east.tif"


def test_vrt_fingerprint_covers_every_file_it_references(tmp_path: Path, make_tif) -> None:  # noqa: ANN001
    from pipeline.sources.geotiff import vrt_sources

    vrt, east = _halves_and_vrt(tmp_path, make_tif)
    assert vrt_sources(vrt.read_bytes(), str(vrt)) == [
        str(tmp_path / "tiles" / "west.tif"),
        str(east),
    ]
    with open_imagery(GeoTiffSpec(path=str(vrt))) as src:
        image = src.read_shard(Shard(Tile(0, 0, 0), 0))
        first = src.fingerprint()
    assert image.valid.all()
    assert image.data[0, 10, 10] == 60 and image.data[0, 10, 250] == 200
    assert first != hashlib.sha256(vrt.read_bytes()).hexdigest()
    with open_imagery(GeoTiffSpec(path=str(vrt))) as src:
        assert src.fingerprint() == first
    before = vrt.read_bytes()
    with rasterio.open(east, "r+") as ds:  # a new tile behind the unchanged VRT
        ds.write(np.full((3, 64, 32), 90, np.uint8))
    assert vrt.read_bytes() == before
    with open_imagery(GeoTiffSpec(path=str(vrt))) as src:
        changed = src.fingerprint()
        assert src.read_shard(Shard(Tile(0, 0, 0), 0)).data[0, 10, 250] == 90
    assert changed != first
    east.rename(east.with_suffix(".bak"))  # a referenced file gone: another fingerprint
    from pipeline.sources.geotiff import vrt_fingerprint

    assert vrt_fingerprint(str(vrt)) not in (first, changed)


def test_a_gdal_wms_description_is_refused_with_the_kind_to_use(tmp_path: Path) -> None:
    xml = tmp_path / "service.xml"
    xml.write_text(
        '<GDAL_WMS>\n  <Service name="WMS">\n    <ServerUrl>http://127.0.0.1:9/wms?</ServerUrl>\n'
        "    <Layers>ortho</Layers>\n  </Service>\n</GDAL_WMS>\n"
    )
    with pytest.raises(
        ImageryError, match=r"service\.xml: a GDAL WMS service description.*kind: wms"
    ):
        open_imagery(GeoTiffSpec(path=str(xml)))
    with pytest.raises(ImageryError, match=r"GDAL WMS service description.*'kind: wms'"):
        open_imagery(GeoTiffSpec(path="WMS:http://127.0.0.1:9/wms?LAYERS=ortho"))


def test_high_bit_depth_stretch_warns_only_when_it_clips(caplog: pytest.LogCaptureFixture) -> None:
    # the real 16-bit SpaceNet scene: the default stretch from its statistics clips ~1 %,
    # which is no warning
    spec = GeoTiffSpec(path=str(ATLANTA_TIF), bands=[1])
    with caplog.at_level(logging.WARNING, "pipeline.sources.geotiff"), open_imagery(spec) as src:
        values = src.read_shard(ATLANTA_SHARD)
        lo, hi = src.stretch()
    assert "clips" not in caplog.text
    bright = values.data[0][values.valid]
    assert (bright == 255).mean() < 0.02  # bright roofs keep their detail
    # a rescale far narrower than the data: most of the scene goes white, and it says so
    narrow = (lo, lo + (hi - lo) / 10)
    spec = GeoTiffSpec(path=str(ATLANTA_TIF), bands=[1], rescale=narrow)
    with caplog.at_level(logging.WARNING, "pipeline.sources.geotiff"), open_imagery(spec) as src:
        src.read_shard(ATLANTA_SHARD)
    (record,) = [r for r in caplog.records if "clips" in r.getMessage()]
    assert "pan_0.5m_epsg32616.tif" in record.getMessage()
    assert "to white" in record.getMessage() and "set 'rescale" in record.getMessage()
