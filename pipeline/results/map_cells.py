"""Map cells: how many tiles a web map draws, and an AOI's QoD change between steps.

Above :data:`MAX_MAP_CELLS` tiles a map aggregates 2^k x 2^k tiles into one cell
(``sql/queries/tile_cells.sql`` averages them), so a browser never draws more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: most cells a map draws; above it, tiles are aggregated
MAX_MAP_CELLS = 4000
#: a cell's QoD moved when it changed by at least this many points
QOD_MOVED_POINTS = 2.0


def aggregation_level(n_tiles: int, max_cells: int = MAX_MAP_CELLS) -> int:
    """``k`` such that cells of 2^k x 2^k tiles number at most ``max_cells`` (0: tiles)."""
    if n_tiles <= max_cells:
        return 0
    return max(0, math.ceil(math.log(n_tiles / max_cells, 4)))


def qod_change(cells_from: pd.DataFrame, cells_to: pd.DataFrame) -> pd.DataFrame:
    """Cells of both steps (``cell_x``, ``cell_y``, ``qod``) side by side: ``qod_from``,
    ``qod_to`` (NaN where a step has no such cell) and ``delta`` (to minus from)."""
    both = cells_to[["cell_x", "cell_y", "qod"]].merge(
        cells_from[["cell_x", "cell_y", "qod"]],
        on=["cell_x", "cell_y"],
        how="outer",
        suffixes=("_to", "_from"),
    )
    both["delta"] = both["qod_to"] - both["qod_from"]
    return both


@dataclass(frozen=True)
class QodMoves:
    """How many cells lost, gained or held their QoD (cells in both steps only)."""

    lost: int
    gained: int
    held: int


def qod_moves(delta: pd.Series) -> QodMoves:
    """Count the cells whose QoD fell or rose by :data:`QOD_MOVED_POINTS` or more."""
    d = delta.dropna().to_numpy(np.float64)
    return QodMoves(
        lost=int((d <= -QOD_MOVED_POINTS).sum()),
        gained=int((d >= QOD_MOVED_POINTS).sum()),
        held=int((np.abs(d) < QOD_MOVED_POINTS).sum()),
    )
