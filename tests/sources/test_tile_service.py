"""XYZ/TMS tile services: the real Lalitpur tiles served over HTTP on loopback."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import shapely
from imagery_servers import NORTH_Z19, TileServer, copy_tiles, jpeg_tiles, tile_server
from PIL import Image

from pipeline.errors import ConfigError, ImageryError
from pipeline.sources import ShardImage, check_coverage, open_imagery
from pipeline.sources.base import latest_step
from pipeline.sources.specs import XyzSpec
from pipeline.sources.tile_service import TileServiceSource, xyz_url
from pipeline.tiles import Shard, Tile, lnglat_bounds

SHARD = Shard(Tile(96679, 55063, 17), 19)  # 16 z19 blocks, 4 of them with tiles
# WGS84 bbox of the four northern z19 tiles (a hair inside, so exactly those four)
NORTH_BOUNDS = (
    lnglat_bounds(Tile(386718, 220253, 19))[0] + 1e-7,
    lnglat_bounds(Tile(386718, 220253, 19))[1] + 1e-7,
    lnglat_bounds(Tile(386719, 220252, 19))[2] - 1e-7,
    lnglat_bounds(Tile(386719, 220252, 19))[3] - 1e-7,
)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOAUDIT_SOURCE_ATTEMPTS", "3")
    monkeypatch.setenv("GEOAUDIT_SOURCE_MAX_WAIT_S", "0.05")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[TileServer]:
    """A copy of the real tiles (z19, z20) served on loopback."""
    with tile_server(copy_tiles(tmp_path / "www")) as server:
        yield server


def _read(spec: XyzSpec, shard: Shard = SHARD) -> ShardImage:
    with open_imagery(spec) as src:
        return src.read_shard(shard)


def _template(server: TileServer, ext: str = "png") -> str:
    return f"{server.url}/{{z}}/{{x}}/{{y}}.{ext}"


@pytest.mark.parametrize("zoom", [None, 20])
def test_remote_shard_equals_the_local_reader(
    served: TileServer, tmp_path: Path, zoom: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILE_KEY", "k-123")
    local = _read(XyzSpec(path=str(served.root), zoom=zoom))
    spec = XyzSpec(path=_template(served), zoom=zoom, headers={"X-Api-Key": "${TILE_KEY}"})
    with open_imagery(spec) as src:
        assert isinstance(src, TileServiceSource)
        remote = src.read_shard(SHARD)
        cache = src.fetcher.folder
    np.testing.assert_array_equal(remote.valid, local.valid)
    np.testing.assert_array_equal(remote.data, local.data)
    assert 0.2 < remote.valid_share < 0.25
    # every tile of the shard was asked for once, with our User-Agent and the header
    # whose ${TILE_KEY} was filled in from the environment at open time
    native = zoom or 19
    assert len(served.log) == (4 if native == 19 else 8) ** 2
    _path, _status, headers = served.log[0]
    assert headers["User-Agent"].startswith("GeoAudit/") and "(+https://" in headers["User-Agent"]
    assert headers["X-Api-Key"] == "k-123"
    # the cache: $GEOAUDIT_HOME/cache/tiles/<sha of template>/z/x/y
    home = Path(os.environ.get("GEOAUDIT_HOME", Path.home() / ".geoaudit"))
    assert cache.parent == home / "cache" / "tiles" and len(cache.name) == 64
    x, y = NORTH_Z19[0]
    if native == 19:
        assert (cache / "19" / str(x) / str(y)).read_bytes() == (
            served.root / "19" / str(x) / f"{y}.png"
        ).read_bytes()


def test_a_missing_tile_is_invalid_pixels_not_an_error(served: TileServer) -> None:
    (served.root / "19" / "386719" / "220253.png").unlink()
    image = _read(XyzSpec(path=_template(served)))
    local = _read(XyzSpec(path=str(served.root)))
    assert not image.valid[256:512, 768:1024].any()  # the deleted tile: block (1, 3)
    assert image.valid[:256, 512:768].mean() > 0.9  # its neighbours are there
    np.testing.assert_array_equal(image.data, local.data)
    assert served.paths(404) and "/19/386719/220253.png" in served.paths(404)


def test_tms_rows_and_subdomains(served: TileServer, tmp_path: Path) -> None:
    # the same tiles stored TMS-style (row 2**z - 1 - y) under two "subdomains" a/ and b/
    for sub in ("a", "b"):
        for x, y in NORTH_Z19:
            src = served.root / "19" / str(x) / f"{y}.png"
            dst = served.root / sub / "19" / str(x) / f"{(1 << 19) - 1 - y}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    spec = XyzSpec(path=f"{served.url}/{{s}}/{{z}}/{{x}}/{{-y}}.png", subdomains=["a", "b"])
    image = _read(spec)
    np.testing.assert_array_equal(image.data, _read(XyzSpec(path=str(served.root))).data)
    found = [p for p in served.paths(200)]
    assert sorted(found) == sorted(
        f"/{'ab'[(x + y) % 2]}/19/{x}/{(1 << 19) - 1 - y}.png" for x, y in NORTH_Z19
    )
    assert xyz_url("u/{s}/{z}/{x}/{-y}", 1, 1, 0, ["a", "b"]) == "u/b/1/1/1"


def test_jpeg_black_border_is_invalid_with_nodata_colour(tmp_path: Path) -> None:
    root = jpeg_tiles(tmp_path / "jpg")
    png = _read(XyzSpec(path=str(copy_tiles(tmp_path / "png", (19,)))))
    with tile_server(root) as server:
        plain = _read(XyzSpec(path=_template(server, "jpg")))
        masked = _read(
            XyzSpec(path=_template(server, "jpg"), nodata_colour=(0, 0, 0), nodata_tolerance=12)
        )
    block = np.s_[0:256, 512:768]  # tile (386718, 220252)
    assert plain.valid[block].all()  # JPEG has no alpha: the black frame looks valid
    frame = np.ones((256, 256), bool)
    frame[40:-40, 40:-40] = False
    assert not masked.valid[block][frame[...]][: 256 * 32].any()
    assert not masked.valid[block][:32].any() and not masked.valid[block][:, -32:].any()
    inner = np.s_[40:216, 552:728]
    assert masked.valid[inner].mean() > 0.98
    both = masked.valid & png.valid
    diff = np.abs(masked.data.astype(int) - png.data.astype(int))[:, both]
    assert diff.mean() < 4  # the same pixels, through JPEG


def test_fingerprint_hashes_the_served_tiles(served: TileServer) -> None:
    spec = XyzSpec(path=_template(served), zoom=19, bounds=NORTH_BOUNDS)
    with open_imagery(spec) as src:
        first = src.fingerprint()
        footprint = src.footprint()
        src.read_shard(SHARD)  # re-uses the tiles the fingerprint pass fetched
    north = [f"/19/{x}/{y}.png" for x, y in NORTH_Z19]
    assert sorted(served.paths(200)) == sorted(north)  # each fetched once
    assert len(served.log) == 16  # and the 12 other tiles of the shard: 404
    assert check_coverage_of(footprint, Tile(386718, 220252, 19)) > 0.99
    served.log.clear()
    with open_imagery(spec) as src:
        assert src.fingerprint() == first  # unchanged tiles: same fingerprint ...
    assert sorted(s for _p, s, _h in served.log) == [304] * 4  # ... revalidated, not fetched
    # one pixel of one tile changes: the fingerprint and the pixels read change
    tile = served.root / "19" / "386719" / "220253.png"
    rgba = np.asarray(Image.open(tile).convert("RGBA")).copy()
    rgba[100, 100] = (1, 2, 3, 255)
    Image.fromarray(rgba).save(tile)
    with open_imagery(spec) as src:
        assert src.fingerprint() != first
        image = src.read_shard(SHARD)
    assert tuple(image.data[:, 256 + 100, 768 + 100]) == (1, 2, 3)
    # the nodata rule changes pixels without changing bytes: it is in the fingerprint
    with open_imagery(spec.model_copy(update={"nodata_colour": (0, 0, 0)})) as src:
        assert src.fingerprint() not in (first,)


def check_coverage_of(footprint: shapely.Geometry, tile: Tile) -> float:
    box = shapely.box(*lnglat_bounds(tile))
    return footprint.intersection(box).area / box.area


def test_without_bounds_footprint_is_what_was_read(served: TileServer) -> None:
    spec = XyzSpec(path=_template(served))
    with open_imagery(spec) as src:
        with pytest.raises(ImageryError, match="cannot be listed.*set 'bounds'"):
            src.footprint()
        first = src.fingerprint()
        src.read_shard(SHARD)
        aoi = shapely.box(*lnglat_bounds(Tile(386718, 220252, 19))).buffer(-1e-6)
        assert check_coverage(src, aoi) == pytest.approx(1.0)
        far = shapely.box(*lnglat_bounds(Tile(386697, 220263, 19)))  # not read yet
        assert src.footprint().intersection(far).area == 0
    with open_imagery(spec) as src:
        assert src.fingerprint() != first  # unknowable content: never re-used


def test_http_errors_are_retried_then_name_the_masked_url(served: TileServer) -> None:
    served.status["/19/386718/220252.png"] = 500
    spec = XyzSpec(path=_template(served) + "?key=s3cret")
    with pytest.raises(ImageryError) as info:
        _read(spec)
    message = str(info.value)
    assert "HTTP 500" in message and "/19/386718/220252.png?***" in message
    assert "s3cret" not in message and "tile service http://127.0.0.1" in message
    assert served.paths().count("/19/386718/220252.png") == 3  # GEOAUDIT_SOURCE_ATTEMPTS
    served.status["/19/386718/220252.png"] = 403  # not transient: one attempt, an error
    served.log.clear()
    with pytest.raises(ImageryError, match=r"answered HTTP 403"):
        _read(spec)
    assert served.paths().count("/19/386718/220252.png") == 1
    served.status["/19/386718/220252.png"] = 204  # "no content": a missing tile
    assert not _read(spec).valid[:256, 512:768].any()


def test_an_exception_report_with_http_200_names_the_service(served: TileServer) -> None:
    served.bodies["/19/386718/220252.png"] = (
        b'<?xml version="1.0"?><ows:ExceptionReport xmlns:ows="http://www.opengis.net/ows/1.1"'
        b' version="1.1.0"><ows:Exception exceptionCode="TileOutOfRange">'
        b"<ows:ExceptionText>TileRow is out of range</ows:ExceptionText>"
        b"</ows:Exception></ows:ExceptionReport>"
    )
    with pytest.raises(
        ImageryError,
        match=r"tile service http://127\.0\.0\.1:\d+/.*: service exception for .*220252\.png: "
        r"TileOutOfRange: TileRow is out of range",
    ):
        _read(XyzSpec(path=_template(served)))


def test_latest_step_of_a_dated_template(served: TileServer) -> None:
    for day in ("2024-01-05", "2024-03-01"):
        copy_tiles(served.root / day, (19,))
    spec = XyzSpec(
        path=f"{served.url}/{{step}}/{{z}}/{{x}}/{{y}}.png", zoom=19, bounds=NORTH_BOUNDS
    )
    assert latest_step(spec, until="2024-02-10", imagery=True) == "2024-01-05"
    assert latest_step(spec, until="2024-03-01", imagery=True) == "2024-03-01"
    assert latest_step(spec, until="2024-01-04", imagery=True) is None
    undated = XyzSpec(path=f"{served.url}/{{step}}/{{z}}/{{x}}/{{y}}.png")
    with pytest.raises(ConfigError, match=r"needs 'bounds' and 'zoom'"):
        latest_step(undated, until="2024-03-01", imagery=True)
    with open_imagery(spec, step="2024-03-01") as src:
        assert src.read_shard(SHARD).valid.any()


def test_concurrency_is_bounded_and_rate_limited(served: TileServer) -> None:
    served.delay_s = 0.05
    _read(XyzSpec(path=_template(served), max_concurrency=3))
    assert served.max_in_flight == 3
    served.delay_s = 0.0
    started = time.monotonic()
    _read(XyzSpec(path=_template(served), rate_limit=40.0))  # 16 requests at 40/s
    assert time.monotonic() - started >= 15 / 40


def test_a_service_that_is_not_there(tmp_path: Path) -> None:
    from imagery_servers import free_port

    spec = XyzSpec(path=f"http://127.0.0.1:{free_port()}/{{z}}/{{x}}/{{y}}.png")
    with pytest.raises(ImageryError, match=r"tile service http://127\.0\.0\.1:\d+/.* failed"):
        _read(spec)


def test_template_specs_are_checked() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"lacks \{y\} or \{-y\}"):
        XyzSpec(path="https://t.example/{z}/{x}.png")
    with pytest.raises(ValidationError, match="list the subdomains"):
        XyzSpec(path="https://{s}.t.example/{z}/{x}/{y}.png")
    with pytest.raises(ValidationError, match="bounds needs zoom"):
        XyzSpec(path="https://t.example/{z}/{x}/{y}.png", bounds=NORTH_BOUNDS)
    with pytest.raises(ValidationError, match="only apply to a tile service URL"):
        XyzSpec(path="tiles", headers={"a": "b"})
