"""Spatially blocked folds: out-of-sample verdicts from a model that learns the very
labels it audits.

The AOI's work tiles are grouped into **blocks** (their parent tiles at ``block_zoom``),
and the blocks dealt into ``k`` folds. Fold model ``j`` trains on every block but those
of fold ``j``; a tile is always predicted by the model of its block's fold, so no
verdict comes from a model that saw that tile's labels. A block is a whole tile or a
group of tiles, so a building on a tile edge rarely has its halves in two folds.

Blocks known at training are dealt shuffled, round robin (balanced folds); a block
first seen later (the AOI grew) gets ``int(sha1("z/x/y")[:8], 16) % k``: no fold model
trained on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.errors import ModelError
from pipeline.tiles import Tile, parent


@dataclass(frozen=True)
class FoldPlan:
    """Which fold holds each block: ``k`` folds of blocks at ``block_zoom``."""

    k: int
    block_zoom: int
    assignment: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ModelError(f"FoldPlan.k must be >= 1, got {self.k}")
        bad = {b: f for b, f in self.assignment.items() if not 0 <= f < self.k}
        if bad:
            raise ModelError(
                f"FoldPlan: folds outside 0..{self.k - 1}: {dict(list(bad.items())[:3])}"
            )

    def block_of(self, tile: Tile) -> Tile:
        """The block (a tile at ``block_zoom``) holding ``tile``."""
        return parent(tile, min(self.block_zoom, tile.z))

    def fold_of(self, tile: Tile) -> int:
        """The fold whose model predicts ``tile`` (the one that did not train on it)."""
        block = self.block_of(tile)
        key = str(block)
        if key in self.assignment:
            return self.assignment[key]
        digest = hashlib.sha1(key.encode()).hexdigest()
        return int(digest[:8], 16) % self.k

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (stored with the model)."""
        return {"k": self.k, "block_zoom": self.block_zoom, "assignment": dict(self.assignment)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FoldPlan:
        """Inverse of :meth:`to_dict`."""
        try:
            return cls(
                int(data["k"]),
                int(data["block_zoom"]),
                {str(b): int(f) for b, f in dict(data.get("assignment") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"fold plan is malformed: {data!r}") from exc


def plan_folds(
    tiles: Iterable[Tile], k: int, *, seed: int = 0, min_blocks_per_fold: int = 4
) -> FoldPlan:
    """Deal the blocks of ``tiles`` into ``k`` balanced folds.

    The block zoom is the coarsest of ``work zoom - 2``, ``- 1`` and the work zoom itself
    that still gives every fold ``min_blocks_per_fold`` blocks (bigger blocks leak less
    across fold borders; small AOIs need small blocks to have folds at all).
    """
    if k < 1:
        raise ModelError(f"plan_folds: k must be >= 1, got {k}")
    tiles = sorted(set(tiles), key=lambda t: (t.z, t.y, t.x))
    if not tiles:
        raise ModelError("plan_folds: no tiles")
    zoom = tiles[0].z
    if any(t.z != zoom for t in tiles):
        raise ModelError("plan_folds: tiles of several zooms")
    if k > len(tiles):
        raise ModelError(f"plan_folds: {k} folds need at least {k} tiles, the AOI has {len(tiles)}")
    for dz in (2, 1, 0):
        blocks = sorted({parent(t, zoom - dz) for t in tiles}, key=lambda b: (b.y, b.x))
        if len(blocks) >= k * min_blocks_per_fold or dz == 0:
            break
    order = np.random.default_rng(seed).permutation(len(blocks))
    assignment = {str(blocks[i]): n % k for n, i in enumerate(order)}
    return FoldPlan(k, zoom - dz, assignment)


@dataclass
class FoldSet:
    """The fold models of one model version and the plan saying which predicts a tile
    (one model and a one-fold plan for a model trained the plain way)."""

    models: list[Any]
    plan: FoldPlan

    def __post_init__(self) -> None:
        if len(self.models) != self.plan.k:
            raise ModelError(f"FoldSet: {len(self.models)} models for {self.plan.k} folds")

    @property
    def k(self) -> int:
        """How many fold models."""
        return self.plan.k

    def model_for(self, tile: Tile) -> Any:
        """The model that did not train on ``tile``'s labels."""
        return self.models[self.plan.fold_of(tile)]

    @classmethod
    def single(cls, model: Any) -> FoldSet:
        """A plain model as a one-fold set."""
        return cls([model], FoldPlan(1, 0))
