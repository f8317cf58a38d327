"""Spatially blocked folds: which fold holds a tile, how blocks are dealt, fold sets."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from pipeline.errors import ModelError
from pipeline.model.folds import FoldPlan, FoldSet, plan_folds
from pipeline.tiles import Tile, parent

# an 8 x 8 grid of z20 tiles aligned on the z18 grid: 4 z18 blocks, 16 z19 blocks
X0, Y0 = 773392, 440520
GRID = [Tile(X0 + c, Y0 + r, 20) for r in range(8) for c in range(8)]


def hashed_fold(block: Tile, k: int) -> int:
    """The documented rule for a block no fold trained on."""
    return int(hashlib.sha1(f"{block.z}/{block.x}/{block.y}".encode()).hexdigest()[:8], 16) % k


# --- FoldPlan -----------------------------------------------------------------------------


def test_block_of_is_the_parent_at_block_zoom_or_the_tile_itself():
    plan = FoldPlan(2, 18)
    assert plan.block_of(Tile(773397, 440529, 20)) == Tile(193349, 110132, 18)
    assert plan.block_of(Tile(193349, 110132, 18)) == Tile(193349, 110132, 18)
    coarse = Tile(96674, 55066, 17)  # coarser than the blocks: its own block
    assert plan.block_of(coarse) == coarse


def test_fold_of_known_blocks_follows_the_assignment_for_every_tile_inside():
    plan = FoldPlan(3, 19, {"19/386697/220263": 2, "19/386698/220263": 0})
    inside = [Tile(773394 + dx, 440526 + dy, 20) for dx in (0, 1) for dy in (0, 1)]
    assert [plan.fold_of(t) for t in inside] == [2, 2, 2, 2]
    assert plan.fold_of(Tile(773396, 440527, 20)) == 0
    # a finer tile inside the block too
    assert plan.fold_of(Tile(773394 * 2 + 1, 440526 * 2, 21)) == 2


def test_unknown_blocks_get_the_sha1_fold_and_spread_over_all_folds():
    plan = FoldPlan(4, 20, {str(GRID[0]): 3})
    unknown = [Tile(X0 + 100 + c, Y0 + r, 20) for r in range(8) for c in range(8)]
    folds = [plan.fold_of(t) for t in unknown]
    assert folds == [hashed_fold(t, 4) for t in unknown]
    assert set(folds) == {0, 1, 2, 3}
    # the same for another plan object: nothing random, nothing cached
    again = FoldPlan(4, 20)
    assert [again.fold_of(t) for t in unknown] == folds
    # a known block wins over the hash
    assert plan.fold_of(GRID[0]) == 3


def test_the_hash_is_taken_of_the_block_not_the_tile():
    plan = FoldPlan(5, 18)
    block = Tile(X0 >> 2, Y0 >> 2, 18)
    assert {plan.fold_of(t) for t in GRID[:4]} == {hashed_fold(block, 5)}


def test_dict_round_trip_through_json():
    plan = FoldPlan(3, 19, {"19/386697/220263": 2, "19/386698/220263": 0})
    data = json.loads(json.dumps(plan.to_dict()))
    assert data == {
        "k": 3,
        "block_zoom": 19,
        "assignment": {"19/386697/220263": 2, "19/386698/220263": 0},
    }
    back = FoldPlan.from_dict(data)
    assert back == plan
    assert [back.fold_of(t) for t in GRID] == [plan.fold_of(t) for t in GRID]
    assert FoldPlan.from_dict({"k": "2", "block_zoom": 20, "assignment": None}) == FoldPlan(2, 20)


@pytest.mark.parametrize(
    "data",
    [
        {"block_zoom": 20},
        {"k": 2},
        {"k": "two", "block_zoom": 20},
        {"k": 2, "block_zoom": 20, "assignment": {"20/1/1": "zero"}},
        {"k": 2, "block_zoom": 20, "assignment": ["20/1/1"]},
    ],
)
def test_malformed_dicts_are_rejected(data):
    with pytest.raises(ModelError, match="fold plan is malformed"):
        FoldPlan.from_dict(data)


def test_bad_plans_are_rejected():
    with pytest.raises(ModelError, match="k must be >= 1"):
        FoldPlan(0, 20)
    with pytest.raises(ModelError, match=r"folds outside 0\.\.1"):
        FoldPlan(2, 20, {"20/1/1": 2})
    with pytest.raises(ModelError, match="folds outside"):
        FoldPlan(2, 20, {"20/1/1": -1})
    with pytest.raises(ModelError, match="malformed"):  # the plan's own error, wrapped
        FoldPlan.from_dict({"k": 2, "block_zoom": 20, "assignment": {"20/1/1": 5}})


# --- plan_folds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k,min_blocks,block_zoom",
    [
        (1, 4, 18),  # 4 z18 blocks are enough for one fold
        (2, 4, 19),  # 4 z18 blocks < 8: 16 z19 blocks
        (4, 4, 19),  # 16 z19 blocks = 4 x 4
        (5, 4, 20),  # 16 z19 blocks < 20: the tiles themselves
        (2, 2, 18),  # 4 z18 blocks = 2 x 2
        (2, 9, 20),  # 16 < 18: tiles
    ],
)
def test_block_zoom_is_the_coarsest_giving_every_fold_enough_blocks(k, min_blocks, block_zoom):
    plan = plan_folds(GRID, k, min_blocks_per_fold=min_blocks)
    assert plan.k == k and plan.block_zoom == block_zoom
    blocks = {str(parent(t, block_zoom)) for t in GRID}
    assert set(plan.assignment) == blocks


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
def test_folds_are_balanced_and_every_tile_is_in_a_dealt_block(k):
    plan = plan_folds(GRID, k, seed=4)
    sizes = Counter(plan.assignment.values())
    assert set(sizes) == set(range(k))
    assert max(sizes.values()) - min(sizes.values()) <= 1
    for t in GRID:
        assert str(plan.block_of(t)) in plan.assignment
    # whole blocks go to one fold
    by_block: dict[Tile, set[int]] = {}
    for t in GRID:
        by_block.setdefault(plan.block_of(t), set()).add(plan.fold_of(t))
    assert all(len(f) == 1 for f in by_block.values())


def test_plan_is_deterministic_for_a_seed_and_order_free():
    a = plan_folds(GRID, 3, seed=1)
    b = plan_folds(list(reversed(GRID)) + GRID[:5], 3, seed=1)  # order and duplicates
    assert a == b
    others = [plan_folds(GRID, 3, seed=s).assignment for s in range(2, 6)]
    assert any(o != a.assignment for o in others)


def test_as_many_folds_as_tiles():
    tiles = GRID[:3]
    plan = plan_folds(tiles, 3)
    assert plan.block_zoom == 20
    assert sorted(plan.fold_of(t) for t in tiles) == [0, 1, 2]


def test_plan_folds_errors():
    with pytest.raises(ModelError, match="no tiles"):
        plan_folds([], 2)
    with pytest.raises(ModelError, match="several zooms"):
        plan_folds([GRID[0], Tile(1, 1, 19)], 1)
    with pytest.raises(ModelError, match="3 folds need at least 3 tiles, the AOI has 2"):
        plan_folds(GRID[:2], 3)


def test_plan_folds_rejects_zero_folds():
    with pytest.raises(ModelError, match="k must be >= 1"):
        plan_folds(GRID, 0)


# --- FoldSet ------------------------------------------------------------------------------


def test_model_for_picks_the_model_of_the_tiles_fold():
    plan = FoldPlan(2, 20, {str(GRID[0]): 1, str(GRID[1]): 0})
    folds = FoldSet(["model-0", "model-1"], plan)
    assert folds.k == 2
    assert folds.model_for(GRID[0]) == "model-1"
    assert folds.model_for(GRID[1]) == "model-0"
    unknown = Tile(5, 5, 20)
    assert folds.model_for(unknown) == f"model-{hashed_fold(unknown, 2)}"


def test_single_is_a_one_fold_set_serving_every_tile():
    folds = FoldSet.single("only")
    assert folds.k == 1 and folds.plan == FoldPlan(1, 0)
    assert {folds.model_for(t) for t in [*GRID, Tile(0, 0, 0), Tile(3, 5, 12)]} == {"only"}


def test_fold_set_needs_one_model_per_fold():
    with pytest.raises(ModelError, match="1 models for 2 folds"):
        FoldSet(["a"], FoldPlan(2, 20))
