"""Tile and shard math: hand-checked values and property-based round trips."""

from __future__ import annotations

import math

import mercantile
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pipeline.errors import ConfigError, InvalidTileError
from pipeline.tiles import (
    HALF_WORLD_M,
    MAX_LATITUDE,
    LngLatBbox,
    Shard,
    Tile,
    block_of,
    check_bbox,
    check_zooms,
    cover,
    group_into_shards,
    parent,
    parse_shard_id,
    resolution,
    shard_of,
    shard_tile,
    shard_tiles,
    shard_transform,
    tiles_of_points,
    xy_bounds,
)

zooms = st.integers(min_value=1, max_value=22)


@st.composite
def tiles(draw: st.DrawFn, min_zoom: int = 2) -> Tile:
    z = draw(st.integers(min_value=min_zoom, max_value=22))
    return Tile(draw(st.integers(0, 2**z - 1)), draw(st.integers(0, 2**z - 1)), z)


def test_parent_matches_mercantile() -> None:
    tile = Tile(773394, 440526, 20)
    expected = mercantile.parent(mercantile.Tile(*tile), zoom=16)
    assert parent(tile, 16) == Tile(expected.x, expected.y, expected.z)


@given(tiles(), st.integers(0, 5))
def test_tile_sits_in_its_shard_block(tile: Tile, dz: int) -> None:
    shard_zoom = max(tile.z - dz, 0)
    shard = Shard(parent(tile, shard_zoom), tile.z)
    row, col = block_of(tile, shard)
    n = shard.tiles_per_side
    assert 0 <= row < n and 0 <= col < n
    assert shard_tiles(shard)[row * n + col] == tile


@given(tiles(), st.integers(0, 5))
def test_shard_id_round_trip(tile: Tile, dz: int) -> None:
    shard = Shard(parent(tile, max(tile.z - dz, 0)), tile.z)
    assert parse_shard_id(shard.id, tile.z) == shard


@given(tiles(min_zoom=3), st.integers(1, 3))
def test_shard_transform_places_block_on_tile_bounds(tile: Tile, dz: int) -> None:
    shard = Shard(parent(tile, tile.z - dz), tile.z)
    row, col = block_of(tile, shard)
    transform = shard_transform(shard)
    left, top = transform @ (col * 256, row * 256)
    right, bottom = transform @ ((col + 1) * 256, (row + 1) * 256)
    expected = xy_bounds(tile)
    scale = abs(expected[2] - expected[0])
    for got, want in zip((left, bottom, right, top), expected, strict=True):
        assert got == pytest.approx(want, abs=scale * 1e-9)


def test_cover_and_group_into_shards() -> None:
    bbox = (8.54, 47.36, 8.555, 47.372)
    work = cover(bbox, 18)
    shards = group_into_shards(work, 16)
    assert sum(len(v) for v in shards.values()) == len(work)
    assert all(len(v) <= 16 for v in shards.values())
    assert set(work) == {Tile(t.x, t.y, t.z) for t in mercantile.tiles(*bbox, zooms=[18])}


def test_resolution_at_equator_and_latitude() -> None:
    assert resolution(18) == pytest.approx(0.5972, abs=1e-4)
    assert resolution(18, 60.0) == pytest.approx(0.5972 / 2, abs=1e-4)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: check_zooms(25, 16), "work zoom must be within"),
        (lambda: check_zooms(16, 18), "shard zoom must be within"),
        (lambda: parse_shard_id("16-1", 18), "must look like 'z-x-y'"),
        (lambda: parse_shard_id("2-9-0", 18), "outside the zoom 2 grid"),
        (lambda: cover((1.0, 1.0, 0.0, 2.0), 10), "west < east"),
        (lambda: parent(Tile(1, 1, 3), 5), "must not exceed"),
        (lambda: block_of(Tile(0, 0, 18), Shard(Tile(5, 5, 16), 18)), "is not in shard 16-5-5"),
    ],
)
def test_bad_tile_input_is_named(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(InvalidTileError, match=match):
        call()


# --- bbox check, shard of a tile, shard id, tiles of points -------------------------------

lngs = st.floats(min_value=-180.0, max_value=180.0, allow_nan=False)
lats = st.floats(min_value=-MAX_LATITUDE, max_value=MAX_LATITUDE, allow_nan=False)
# a little beyond the valid ranges, so that both outcomes are drawn
wide = st.floats(min_value=-200.0, max_value=200.0, allow_nan=False)


@given(st.tuples(wide, wide, wide, wide))
def test_check_bbox_accepts_exactly_the_web_mercator_boxes(bbox: tuple[float, ...]) -> None:
    west, south, east, north = bbox
    valid = -180 <= west < east <= 180 and -MAX_LATITUDE <= south < north <= MAX_LATITUDE
    if valid:
        assert check_bbox(bbox) == LngLatBbox(west, south, east, north)
        assert check_bbox(list(bbox)) == bbox
    else:
        with pytest.raises(ConfigError, match=r"bbox must be \[west, south, east, north\]"):
            check_bbox(bbox)


@given(tiles(min_zoom=0))
def test_every_tile_s_bounds_are_a_valid_bbox(tile: Tile) -> None:
    b = mercantile.bounds(tile.x, tile.y, tile.z)
    assert check_bbox([b.west, b.south, b.east, b.north]) == tuple(b)


@pytest.mark.parametrize(
    "bbox",
    [
        [1.0, 2.0, 3.0],
        [1.0, 2.0, 3.0, 4.0, 5.0],
        ["west", 2.0, 3.0, 4.0],
        None,
        "1,2,3,4",
        [1.0, float("nan"), 3.0, 4.0],
    ],
)
def test_check_bbox_refuses_what_is_not_four_numbers(bbox: object) -> None:
    with pytest.raises(ConfigError, match="bbox must be"):
        check_bbox(bbox)  # type: ignore[arg-type]


def test_check_bbox_refuses_the_poles_and_swapped_corners() -> None:
    with pytest.raises(ConfigError, match="web-mercator range"):
        check_bbox([0.0, 80.0, 1.0, 89.0])
    with pytest.raises(ConfigError, match="west < east"):
        check_bbox([10.0, 0.0, 9.0, 1.0])
    assert check_bbox([-180, -MAX_LATITUDE, 180, MAX_LATITUDE]) == (
        -180.0,
        -MAX_LATITUDE,
        180.0,
        MAX_LATITUDE,
    )


@given(tiles(min_zoom=0), st.integers(0, 6))
def test_shard_of_is_the_parent_tile(tile: Tile, dz: int) -> None:
    shard_zoom = max(tile.z - dz, 0)
    shard = shard_of(tile, shard_zoom)
    if shard_zoom < tile.z:
        up = mercantile.parent(mercantile.Tile(*tile), zoom=shard_zoom)
        assert shard.tile == Tile(up.x, up.y, up.z)
    else:  # a shard at the work zoom is the tile itself
        assert shard.tile == tile
    assert shard.work_zoom == tile.z
    assert tile in shard_tiles(shard)
    assert shard_of(tile, shard_zoom) in group_into_shards([tile], shard_zoom)


def test_shard_of_a_finer_zoom_is_refused() -> None:
    with pytest.raises(InvalidTileError, match="must not exceed"):
        shard_of(Tile(1, 1, 3), 4)


@given(tiles(min_zoom=0))
def test_shard_tile_reads_back_a_shard_id(tile: Tile) -> None:
    shard = Shard(tile, min(tile.z + 2, 24))
    assert shard_tile(shard.id) == tile


@given(st.text(alphabet="0123456789-+ abx", max_size=14))
def test_shard_tile_of_any_text_is_a_tile_or_invalid(text: str) -> None:
    try:
        tile = shard_tile(text)
    except InvalidTileError:
        return
    assert 0 <= tile.z <= 24 and 0 <= tile.x < 2**tile.z and 0 <= tile.y < 2**tile.z
    assert shard_tile(f"{tile.z}-{tile.x}-{tile.y}") == tile


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("19-1", "must look like 'z-x-y'"),
        ("a-b-c", "must look like 'z-x-y'"),
        ("2-0--1", "must look like 'z-x-y'"),
        (None, "must look like 'z-x-y'"),
        (19, "must look like 'z-x-y'"),
        ("25-0-0", "outside the zoom 25 grid"),
        ("2-4-0", "outside the zoom 2 grid"),
        ("2-0-4", "outside the zoom 2 grid"),
    ],
)
def test_shard_tile_names_a_bad_shard_id(text: object, match: str) -> None:
    with pytest.raises(InvalidTileError, match=match):
        shard_tile(text)  # type: ignore[arg-type]


def _fraction(value: float) -> float:
    return value - math.floor(value)


@given(lngs, lats, st.integers(0, 24))
def test_tiles_of_points_agree_with_mercantile(lng: float, lat: float, zoom: int) -> None:
    # away from tile edges (where float rounding may pick either side)
    n = 2**zoom
    fx = (lng + 180.0) / 360.0 * n
    fy = (1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n
    assume(1e-6 < _fraction(fx) < 1 - 1e-6 and 1e-6 < _fraction(fy) < 1 - 1e-6)
    x, y = mercantile.xy(lng, lat)
    cols, rows = tiles_of_points(np.array([x]), np.array([y]), zoom)
    expected = mercantile.tile(lng, lat, zoom)
    assert (int(cols[0]), int(rows[0])) == (expected.x, expected.y)


@given(tiles(min_zoom=0), st.floats(0.001, 0.999), st.floats(0.001, 0.999))
def test_a_point_inside_a_tile_is_in_that_tile(tile: Tile, fx: float, fy: float) -> None:
    left, bottom, right, top = xy_bounds(tile)
    cols, rows = tiles_of_points(
        np.array([left + fx * (right - left)]), np.array([top - fy * (top - bottom)]), tile.z
    )
    assert (cols[0], rows[0]) == (tile.x, tile.y)
    assert cols.dtype == np.int64 and rows.dtype == np.int64


@pytest.mark.parametrize("zoom", [1, 5, 18, 24])
def test_points_on_edges_belong_east_and_south_and_outside_points_are_clipped(zoom: int) -> None:
    n = 2**zoom
    h = HALF_WORLD_M
    x = np.array([0.0, -h, h, -2 * h, 2 * h, 0.0, 0.0])
    y = np.array([0.0, h, -h, 0.0, 0.0, 2 * h, -2 * h])
    cols, rows = tiles_of_points(x, y, zoom)
    # the prime meridian and the equator are edges: the tile east of / south of them
    assert (cols[0], rows[0]) == (n // 2, n // 2)
    # the world's corners and points beyond stay on the grid
    assert (cols[1], rows[1]) == (0, 0)
    assert (cols[2], rows[2]) == (n - 1, n - 1)
    assert list(cols[3:5]) == [0, n - 1] and list(rows[5:7]) == [0, n - 1]


def test_tiles_of_points_is_vectorised() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-HALF_WORLD_M, HALF_WORLD_M, (3, 50))
    y = rng.uniform(-HALF_WORLD_M, HALF_WORLD_M, (3, 50))
    cols, rows = tiles_of_points(x, y, 12)
    assert cols.shape == rows.shape == (3, 50)
    for i, j in [(0, 0), (1, 7), (2, 49)]:
        lng, lat = mercantile.lnglat(x[i, j], y[i, j])
        tile = mercantile.tile(lng, lat, 12)
        assert (cols[i, j], rows[i, j]) == (tile.x, tile.y)
    empty = tiles_of_points(np.empty(0), np.empty(0), 3)
    assert empty[0].shape == (0,) and empty[1].shape == (0,)
