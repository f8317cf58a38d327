"""Map cells: the aggregation level of a map and an AOI's QoD change between steps."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.results.map_cells import (
    MAX_MAP_CELLS,
    QodMoves,
    aggregation_level,
    qod_change,
    qod_moves,
)


@pytest.mark.parametrize(
    ("n_tiles", "level"),
    [(0, 0), (MAX_MAP_CELLS, 0), (MAX_MAP_CELLS + 1, 1), (4 * MAX_MAP_CELLS, 1), (70_000, 3)],
)
def test_aggregation_keeps_the_map_under_its_cell_budget(n_tiles: int, level: int) -> None:
    assert aggregation_level(n_tiles) == level
    assert math.ceil(n_tiles / 4**level) <= MAX_MAP_CELLS


def test_qod_change_pairs_cells_and_counts_moves() -> None:
    before = pd.DataFrame({"cell_x": [1, 2, 3], "cell_y": [0, 0, 0], "qod": [90.0, 80.0, 70.0]})
    after = pd.DataFrame({"cell_x": [1, 2, 4], "cell_y": [0, 0, 0], "qod": [85.0, 81.0, 60.0]})
    both = qod_change(before, after).sort_values("cell_x").reset_index(drop=True)
    assert both["cell_x"].tolist() == [1, 2, 3, 4]
    assert both["delta"].tolist()[:2] == [-5.0, 1.0]
    assert both["delta"].isna().tolist() == [False, False, True, True]  # one step only
    assert qod_moves(both["delta"]) == QodMoves(lost=1, gained=0, held=1)
    assert qod_moves(pd.Series([2.0, -2.0, 1.99])) == QodMoves(lost=1, gained=1, held=1)
