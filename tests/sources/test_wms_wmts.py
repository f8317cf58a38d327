"""WMS from MapServer (Debian's mapserv as CGI) and WMTS from titiler, on loopback, both
serving a COG made from the real Lalitpur tiles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from imagery_servers import NORTH_Z19, TILES, mapserver, mosaic_of, uvicorn, write_cog
from pydantic import ValidationError

from pipeline.errors import ImageryError
from pipeline.sources import ShardImage, check_coverage, open_imagery
from pipeline.sources.specs import WmsSpec, WmtsSpec, XyzSpec
from pipeline.tiles import Shard, Tile, lnglat_bounds

SHARD = Shard(Tile(96679, 55063, 17), 19)  # 1024 px; the COG fills blocks rows 0-1, cols 2-3
NORTH = shapely.union_all([shapely.box(*lnglat_bounds(Tile(x, y, 19))) for x, y in NORTH_Z19])
BOUNDS = tuple(NORTH.buffer(-1e-7).bounds)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOAUDIT_SOURCE_ATTEMPTS", "2")
    monkeypatch.setenv("GEOAUDIT_SOURCE_MAX_WAIT_S", "0.05")


@pytest.fixture(scope="module")
def local() -> ShardImage:
    """The shard as the local XYZ reader gives it from the same tiles."""
    with open_imagery(XyzSpec(path=str(TILES))) as src:
        return src.read_shard(SHARD)


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rgba, transform = mosaic_of(NORTH_Z19)
    return write_cog(tmp_path_factory.mktemp("cog") / "north.tif", rgba, transform)


@pytest.fixture(scope="module")
def wms(cog: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mapserver(cog, tmp_path_factory.mktemp("mapserver")) as url:
        yield url


@pytest.fixture(scope="module")
def titiler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app_dir = Path(__file__).parent
    with uvicorn(
        "titiler_app:app",
        cwd=tmp_path_factory.mktemp("titiler"),
        env={"PYTHONPATH": str(app_dir)},
        ready="/healthz",
    ) as url:
        yield url


def _read(spec: WmsSpec | WmtsSpec, shard: Shard = SHARD) -> ShardImage:
    with open_imagery(spec) as src:
        return src.read_shard(shard)


# --- WMS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.3.0", "1.1.1"])
def test_wms_in_blocks_equals_the_local_reader(wms: str, local: ShardImage, version: str) -> None:
    image = _read(WmsSpec(url=wms, layers=["ortho"], version=version, max_size=512))
    np.testing.assert_array_equal(image.valid, local.valid)
    np.testing.assert_array_equal(image.data, local.data)


def test_one_getmap_per_shard_is_very_close(wms: str, local: ShardImage) -> None:
    # MapServer resamples a 1024-px request half covered by the COG with a sub-pixel shift
    image = _read(WmsSpec(url=wms, layers=["ortho"]))
    assert (image.valid == local.valid).mean() > 0.999
    both = image.valid & local.valid
    assert np.abs(image.data.astype(int) - local.data.astype(int))[:, both].mean() < 6


def test_wms_130_in_epsg4326_has_latitude_first(wms: str, local: ShardImage) -> None:
    with open_imagery(WmsSpec(url=wms, layers=["ortho"], crs="EPSG:4326")) as src:
        url = src.getmap_url((85.3, 27.6, 85.4, 27.7), 8, 8)
        image = src.read_shard(SHARD)
    assert "BBOX=27.6%2C85.3%2C27.7%2C85.4" in url and "CRS=EPSG%3A4326" in url
    assert (image.valid == local.valid).mean() > 0.995  # warped back to the shard grid
    both = image.valid & local.valid
    assert np.abs(image.data.astype(int) - local.data.astype(int))[:, both].mean() < 8
    with open_imagery(WmsSpec(url=wms, layers=["ortho"], crs="EPSG:4326", version="1.1.1")) as src:
        assert "BBOX=85.3%2C27.6%2C85.4%2C27.7" in src.getmap_url((85.3, 27.6, 85.4, 27.7), 8, 8)


def test_wms_service_exceptions_name_the_service(wms: str) -> None:
    with pytest.raises(ImageryError, match=r"WMS http://127\.0\.0\.1:\d+: no layer \['roads'\]"):
        open_imagery(WmsSpec(url=wms, layers=["roads"]))
    # HTTP 200 with an XML ServiceException: the server's message in ours
    with pytest.raises(
        ImageryError,
        match=r"WMS http://127\.0\.0\.1:\d+: service exception .*Style \(nostyle\) not defined",
    ):
        _read(WmsSpec(url=wms, layers=["ortho"], styles=["nostyle"]))
    with pytest.raises(ImageryError, match=r"does not offer format 'image/webp'"):
        open_imagery(WmsSpec(url=wms, layers=["ortho"], format="image/webp"))


def test_wms_fingerprint_and_footprint_over_bounds(wms: str, cog: Path) -> None:
    spec = WmsSpec(url=wms, layers=["ortho"], bounds=BOUNDS, zoom=19, max_size=512)
    with open_imagery(spec) as src:
        first = src.fingerprint()
        assert check_coverage(src, NORTH.buffer(-1e-6)) > 0.99
        outside = shapely.box(*lnglat_bounds(Tile(386716, 220252, 19)))
        assert src.footprint().intersection(outside).area == 0
    with open_imagery(spec) as src:
        assert src.fingerprint() == first
    window = rasterio.windows.Window(300, 300, 16, 16)
    with rasterio.open(cog, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
        original = ds.read([1, 2, 3], window=window)
        ds.write(np.full((3, 16, 16), 7, np.uint8), indexes=[1, 2, 3], window=window)
    try:  # a patch of the served image changed
        with open_imagery(spec) as src:
            assert src.fingerprint() != first
    finally:
        with rasterio.open(cog, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as ds:
            ds.write(original, indexes=[1, 2, 3], window=window)
    with open_imagery(spec) as src:
        assert src.fingerprint() == first
    with open_imagery(WmsSpec(url=wms, layers=["ortho"])) as src:
        with pytest.raises(ImageryError, match="cannot be listed"):
            src.footprint()
        src.read_shard(SHARD)
        assert src.footprint().intersection(NORTH).area > 0.99 * NORTH.area


# --- WMTS -----------------------------------------------------------------------------------


def test_wmts_from_capabilities_equals_the_local_reader(
    titiler: str, cog: Path, local: ShardImage
) -> None:
    spec = WmtsSpec(
        url=f"{titiler}/WMTSCapabilities.xml?url={cog}", layer=f"{cog}_WebMercatorQuad_default"
    )
    with open_imagery(spec) as src:
        assert src.matrices is not None and src.matrices[19] == "19"
        image = src.read_shard(SHARD)
    np.testing.assert_array_equal(image.valid, local.valid)
    np.testing.assert_array_equal(image.data, local.data)


def test_wmts_rest_template_and_fingerprint(titiler: str, cog: Path, local: ShardImage) -> None:
    template = f"{titiler}/tiles/{{TileMatrixSet}}/{{TileMatrix}}/{{TileCol}}/{{TileRow}}.png"
    spec = WmtsSpec(
        url=f"{template}?url={cog}",
        layer="ortho",
        tile_matrix_set="WebMercatorQuad",
        bounds=BOUNDS,
        zoom=19,
    )
    with open_imagery(spec) as src:
        first = src.fingerprint()
        np.testing.assert_array_equal(src.read_shard(SHARD).data, local.data)
    with open_imagery(spec) as src:
        assert src.fingerprint() == first


def test_wmts_refuses_a_set_that_is_not_web_mercator(titiler: str, cog: Path) -> None:
    url = f"{titiler}/WMTSCapabilities.xml?url={cog}"
    with pytest.raises(
        ImageryError, match=r"no web-mercator quad tile matrix set \(has WorldCRS84"
    ):
        open_imagery(WmtsSpec(url=url, layer=f"{cog}_WorldCRS84Quad_default"))
    with pytest.raises(ImageryError, match=r"WMTS http://127\.0\.0\.1:\d+/.*: no layer 'nope'"):
        open_imagery(WmtsSpec(url=url, layer="nope"))
    with pytest.raises(ValidationError, match=r"needs \{TileMatrix\}, \{TileRow\} and \{TileCol\}"):
        WmtsSpec(url="https://t.example/{TileMatrix}/{TileCol}.png", layer="a")
