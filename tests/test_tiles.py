"""Tile and shard math: hand-checked values and property-based round trips."""

from __future__ import annotations

import mercantile
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import InvalidTileError
from pipeline.tiles import (
    Shard,
    Tile,
    block_of,
    check_zooms,
    cover,
    group_into_shards,
    parent,
    parse_shard_id,
    resolution,
    shard_tiles,
    shard_transform,
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
