"""Training sets from hand-made training areas: what is held out, masked and excluded."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from pipeline.errors import GeoAuditError
from pipeline.model.folds import FoldPlan
from pipeline.tiles import Shard, Tile, shard_tiles
from pipeline.training.trainset import (
    TrainingArea,
    fold_splits,
    heldout_split,
    is_heldout,
    split,
    validatable_tiles,
)

SHARD = Shard(Tile(386697, 220263, 19), 20)  # 2 x 2 work tiles, 512 px
T00, T01, T10, T11 = shard_tiles(SHARD)  # row by row


def area(
    tiles=(T00, T01, T10, T11), step: str = "2025-06-01", dark: Tile | None = None
) -> TrainingArea:
    """A shard with a distinct image and label per tile; ``dark`` has imagery on a third."""
    image = np.zeros((3, 512, 512), np.uint8)
    labels = np.zeros((512, 512), np.uint8)
    for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        image[:, r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = 40 * (k + 1)
        labels[r * 256 : r * 256 + 64 * (k + 1), c * 256 : c * 256 + 100] = 1
    valid = np.ones((512, 512), bool)
    made = TrainingArea(step, SHARD, image, labels, valid, tuple(tiles))
    if dark is not None:
        rows, cols = made.window(dark)
        valid[rows, cols] = False
        valid[rows.start : rows.start + 85, cols] = True  # a third of the tile
    return made


def test_window_and_validatable():
    a = area(dark=T10)
    assert a.window(T11) == (slice(256, 512), slice(256, 512))
    assert a.validatable(T00) and not a.validatable(T10)
    # more than half of the tile must have imagery; exactly half is not enough
    a.valid[a.window(T10)] = False
    a.valid[256:384, 0:256] = True
    assert not a.validatable(T10)
    a.valid[384, 0] = True
    assert a.validatable(T10)


def test_split_validates_held_out_tiles_and_masks_them_from_training():
    a = area()
    out = split([a], lambda t: t == T01, excluded={T10})
    assert out.val_tiles == [T01] and out.excluded_tiles == [str(T10)]
    (val,) = out.val
    np.testing.assert_array_equal(val.image, a.image[:, 0:256, 256:512])
    np.testing.assert_array_equal(val.label, a.labels[0:256, 256:512])
    assert val.name == f"2025-06-01/{T01}"
    (train,) = out.train
    assert train.image is a.image and train.name == f"2025-06-01/{SHARD.id}"
    expected = np.ones((512, 512), bool)
    expected[a.window(T01)] = False  # held out
    expected[a.window(T10)] = False  # excluded
    np.testing.assert_array_equal(train.valid, expected)


def test_pixels_outside_the_aois_tiles_are_not_trained_on():
    a = area(tiles=(T00, T11))
    out = split([a], lambda t: False, excluded=set())
    (train,) = out.train
    assert train.valid[a.window(T00)].all() and train.valid[a.window(T11)].all()
    assert not train.valid[a.window(T01)].any() and not train.valid[a.window(T10)].any()
    assert out.val == []


def test_a_held_out_tile_without_enough_imagery_is_neither_validated_nor_trained_on():
    a = area(dark=T10)
    out = split([a], lambda t: t in (T00, T10), excluded=set())
    assert out.val_tiles == [T00]
    assert not out.train[0].valid[a.window(T10)].any()


def test_fold_splits_validate_every_tile_in_exactly_one_fold():
    areas = [area(dark=T11)]
    plan = FoldPlan(2, 20, {str(T00): 0, str(T01): 1, str(T10): 1, str(T11): 0})
    splits = fold_splits(areas, plan, set(), "town")
    assert [s.val_tiles for s in splits] == [[T00], [T01, T10]]
    for j, s in enumerate(splits):
        (train,) = s.train
        for t in (T00, T01, T10, T11):
            if plan.fold_of(t) == j:  # held out of its own fold's training
                assert not train.valid[areas[0].window(t)].any()
            else:
                assert train.valid[areas[0].window(t)].any()


def test_a_fold_without_a_validation_tile_is_an_error():
    plan = FoldPlan(2, 20, {str(T00): 0, str(T01): 0, str(T10): 0, str(T11): 1})
    with pytest.raises(GeoAuditError, match="town fold 1: too little imagery to train on"):
        fold_splits([area(dark=T11)], plan, set(), "town")


def test_validatable_tiles_once_sorted_without_excluded():
    areas = [area(dark=T01), area(step="2025-07-01")]  # T01 has imagery at the 2nd step
    assert validatable_tiles(areas, set()) == [T00, T01, T10, T11]
    assert validatable_tiles(areas[:1], {T11}) == [T00, T10]


def test_is_heldout_is_the_documented_hash():
    tiles = [Tile(773394 + i, 440526 + j, 20) for i in range(8) for j in range(8)]
    for t in tiles:
        h = int(hashlib.sha1(f"20/{t.x}/{t.y}".encode()).hexdigest()[:8], 16) / 2**32
        assert is_heldout(t, 0.3) == (h < 0.3)
    share = np.mean([is_heldout(t, 0.3) for t in tiles])
    assert 0.1 < share < 0.5


def test_heldout_split_holds_out_at_least_one_tile():
    a = area()
    # a share so small no tile is held out by the hash: the lowest hash is
    out = heldout_split([a], 1e-9, set(), "town")
    assert len(out.val_tiles) == 1
    assert out.val_tiles == heldout_split([area()], 1e-9, set(), "town").val_tiles
    (held,) = out.val_tiles
    assert not out.train[0].valid[a.window(held)].any()
    with pytest.raises(GeoAuditError, match="town: too little imagery"):
        heldout_split([area()], 0.999999, set(), "town")  # nothing left to train on
