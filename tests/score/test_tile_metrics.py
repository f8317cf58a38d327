"""Per-tile metrics by block reduction, checked against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.errors import ConfigError
from pipeline.score.metrics import binarize, footprint_stats, qod, tile_metrics
from pipeline.tiles import Shard, Tile


def test_qod_hand_values():
    # 100 - (1 - 0.5) * ln(21) * 100 / ln(100) = 100 - 0.5 * 3.04452 / 4.60517 * 100
    assert qod(0.5, 20.0) == pytest.approx(66.94452, abs=1e-4)
    # 100 - 0.2 * ln(6) * 100 / ln(100) = 100 - 0.2 * 1.79176 / 4.60517 * 100
    assert qod(0.8, 5.0) == pytest.approx(92.21849, abs=1e-4)
    assert qod(1.0, 60.0) == 100.0
    # IoU 0 on a full tile: 100 - ln(101) * 100 / ln(100) < 0 -> floored at 0
    assert qod(0.0, 100.0) == 0.0
    # empty tile: no foreground, disagreement costs nothing (1e-7 * 100 / ln 100)
    assert qod(0.0, 0.0) == pytest.approx(100.0, abs=1e-5)


def test_qod_is_vectorised_and_keeps_nan():
    out = qod(np.array([0.5, 1.0, np.nan]), np.array([20.0, 50.0, 10.0]))
    assert isinstance(out, np.ndarray)
    assert out[0] == pytest.approx(66.94452, abs=1e-4)
    assert out[1] == 100.0
    assert math.isnan(out[2])


def _mosaic():
    """A 2 x 2 tile mosaic of 4-pixel tiles.

    tile (0, 0): label 4 px, prediction 4 px, overlap 2 -> tp 2, fp 2, fn 2
    tile (0, 1): both empty
    tile (1, 0): label 3 px, nothing predicted
    tile (1, 1): no valid pixel
    """
    label = np.zeros((8, 8), np.uint8)
    pred = np.zeros((8, 8), np.float32)
    label[0, 0:4] = 1
    pred[0, 2:4] = 0.9
    pred[1, 0:2] = 0.7
    label[4, 0:3] = 1
    pred[4, 4] = 0.2  # below threshold
    valid = np.ones((8, 8), bool)
    valid[4:8, 4:8] = False
    label[5, 5] = 1  # in the invalid tile: ignored
    pred[6, 6] = 1.0
    return label, pred, valid


def test_tile_metrics_hand_computed_mosaic():
    label, pred, valid = _mosaic()
    m = tile_metrics(label, pred, valid=valid, tile_size=4)
    assert m.shape == (2, 2)
    np.testing.assert_array_equal(m.tp, [[2, 0], [0, 0]])
    np.testing.assert_array_equal(m.fp, [[2, 0], [0, 0]])
    np.testing.assert_array_equal(m.fn, [[2, 0], [3, 0]])
    np.testing.assert_array_equal(m.valid, [[16, 16], [16, 0]])

    # tile (0, 0)
    assert m.iou[0, 0] == pytest.approx(1 / 3)
    assert m.precision[0, 0] == pytest.approx(0.5)
    assert m.recall[0, 0] == pytest.approx(0.5)
    assert m.f1[0, 0] == pytest.approx(0.5)
    assert m.fg_label[0, 0] == pytest.approx(0.25)
    assert m.fg_pred[0, 0] == pytest.approx(0.25)
    assert m.qod[0, 0] == pytest.approx(52.83422, abs=1e-4)  # qod(1/3, 25 %)
    # tile (0, 1): both empty is perfect agreement
    assert (m.iou[0, 1], m.precision[0, 1], m.recall[0, 1], m.f1[0, 1]) == (1, 1, 1, 1)
    assert m.qod[0, 1] == 100.0
    assert m.fg_label[0, 1] == 0.0
    # tile (1, 0): nothing predicted -> precision 1, recall 0
    assert (m.iou[1, 0], m.precision[1, 0], m.recall[1, 0], m.f1[1, 0]) == (0, 1, 0, 0)
    assert m.fg_label[1, 0] == pytest.approx(3 / 16)
    assert m.qod[1, 0] == pytest.approx(35.22164, abs=1e-4)  # qod(0, 18.75 %)
    # tile (1, 1): no valid pixel
    for arr in (m.iou, m.precision, m.recall, m.f1, m.qod, m.fg_label, m.fg_pred):
        assert math.isnan(arr[1, 1])


def test_empty_label_with_prediction_gives_recall_one_precision_zero():
    label = np.zeros((4, 4), np.uint8)
    pred = np.zeros((4, 4), bool)
    pred[0, :2] = True
    m = tile_metrics(label, pred, tile_size=4)
    assert (m.iou[0, 0], m.precision[0, 0], m.recall[0, 0], m.f1[0, 0]) == (0, 0, 1, 0)
    assert m.fg_pred[0, 0] == pytest.approx(2 / 16)


def test_valid_mask_excludes_pixels():
    label = np.zeros((4, 4), np.uint8)
    pred = np.zeros((4, 4), bool)
    label[0, 0:2] = 1
    pred[0, 0:3] = True
    valid = np.ones((4, 4), bool)
    valid[0, 2] = False  # the only false positive is invalid
    m = tile_metrics(label, pred, valid=valid, tile_size=4)
    assert (m.tp[0, 0], m.fp[0, 0], m.fn[0, 0], m.valid[0, 0]) == (2, 0, 0, 15)
    assert m.iou[0, 0] == 1.0


def test_default_tile_size_and_stored_probabilities():
    label = np.zeros((512, 256), np.uint8)
    pred = np.zeros((512, 256), np.uint8)  # stored 0..255 probabilities
    label[0:16, 0:16] = 1
    pred[0:16, 0:8] = 200
    pred[0:16, 8:16] = 127  # 127 / 255 < 0.5
    m = tile_metrics(label, pred)
    assert m.shape == (2, 1)
    assert m.tp[0, 0] == 128 and m.fn[0, 0] == 128
    assert m.iou[0, 0] == pytest.approx(0.5)
    assert m.iou[1, 0] == 1.0


def test_binarize_dtypes():
    assert binarize(np.array([0.49, 0.5], np.float32)).tolist() == [False, True]
    assert binarize(np.array([127, 128], np.uint8)).tolist() == [False, True]
    assert binarize(np.array([True, False])).tolist() == [True, False]
    with pytest.raises(ConfigError, match="neither bool"):
        binarize(np.array(["a"]))


def test_to_frame_maps_blocks_to_tiles():
    shard = Shard(Tile(10, 20, 15), 16)  # 2 x 2 tiles
    label = np.zeros((512, 512), np.uint8)
    label[256:, 0:256] = 1  # block (row 1, col 0)
    frame = tile_metrics(label, np.zeros((512, 512), bool)).to_frame(shard)
    assert len(frame) == 4
    row = frame[(frame["row"] == 1) & (frame["col"] == 0)].iloc[0]
    assert (row["x"], row["y"], row["z"]) == (20, 41, 16)
    assert row["fn"] == 256 * 256 and row["iou"] == 0.0
    assert set(frame.columns) >= {"x", "y", "z", "tp", "fp", "fn", "valid", "iou", "qod"}
    with pytest.raises(ConfigError, match="shard"):
        tile_metrics(label[:256], np.zeros((256, 512), bool)).to_frame(shard)


def test_bad_shapes_raise():
    with pytest.raises(ConfigError, match="one shape"):
        tile_metrics(np.zeros((8, 8)), np.zeros((8, 4)), tile_size=4)
    with pytest.raises(ConfigError, match="whole number"):
        tile_metrics(np.zeros((8, 6)), np.zeros((8, 6)), tile_size=4)
    with pytest.raises(ConfigError, match="valid mask"):
        tile_metrics(np.zeros((8, 8)), np.zeros((8, 8)), valid=np.ones((4, 4), bool), tile_size=4)


def _reference(label, pred, valid, ts):
    """Tile by tile, with Python loops: the definition the block reduction must match."""
    rows, cols = label.shape[0] // ts, label.shape[1] // ts
    out = np.zeros((rows, cols, 4))
    for r in range(rows):
        for c in range(cols):
            sl = np.s_[r * ts : (r + 1) * ts, c * ts : (c + 1) * ts]
            lab, prd, val = label[sl].astype(bool), pred[sl], valid[sl]
            lab, prd = lab & val, prd & val
            tp = int((lab & prd).sum())
            fp = int((prd & ~lab).sum())
            fn = int((lab & ~prd).sum())
            out[r, c] = (tp, fp, fn, int(val.sum()))
    return out


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.bool_, (8, 12)),
    hnp.arrays(np.bool_, (8, 12)),
    hnp.arrays(np.bool_, (8, 12)),
)
def test_block_reduction_matches_per_tile_loop(label, pred, valid):
    m = tile_metrics(label.astype(np.uint8), pred, valid=valid, tile_size=4)
    ref = _reference(label, pred, valid, 4)
    np.testing.assert_array_equal(np.stack([m.tp, m.fp, m.fn, m.valid], -1), ref)
    ok = m.valid > 0
    for arr in (m.iou, m.precision, m.recall, m.f1):
        assert np.all((arr[ok] >= 0) & (arr[ok] <= 1))
        assert np.isnan(arr[~ok]).all()
    # F1 is the harmonic mean of precision and recall under the empty-tile conventions
    p, r = m.precision[ok], m.recall[ok]
    hm = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
    np.testing.assert_allclose(m.f1[ok], hm)
    assert np.all(m.qod[ok] >= 0) and np.all(m.qod[ok] <= 100)


@given(st.floats(0, 1), st.floats(0, 100))
def test_qod_bounds_and_monotonic_in_iou(iou, fg):
    q = qod(iou, fg)
    assert 0.0 <= q <= 100.0
    assert qod(min(1.0, iou + 0.1), fg) >= q


# --- what the prediction says under each footprint ----------------------------------------


def test_footprint_stats_by_hand():
    index = np.array(
        [
            [1, 1, 0, 2],
            [1, 1, 0, 2],
            [0, 0, 0, 2],
        ]
    )
    prob = np.array(
        [
            [0.9, 0.5, 0.7, 0.1],
            [0.2, 0.6, 0.8, 0.4999],
            [0.9, 0.9, 0.9, 0.3],
        ],
        np.float32,
    )
    valid = np.ones((3, 4), bool)
    valid[1, 1] = False  # one pixel of footprint 0 without imagery
    stats = footprint_stats(index, prob, valid, 3)  # footprint 2 covers no pixel
    assert stats["n_px"].tolist() == [4, 3, 0]
    assert stats["n_valid"].tolist() == [3, 3, 0]
    assert stats["sum_prob"] == pytest.approx([0.9 + 0.5 + 0.2, 0.1 + 0.4999 + 0.3, 0.0])
    assert stats["n_pred"].tolist() == [2, 0, 0]  # 0.9 and 0.5 (>= 0.5); 0.6 has no imagery
    assert set(stats) == {"n_px", "n_valid", "sum_prob", "n_pred"}


def test_footprint_stats_of_no_footprint():
    stats = footprint_stats(np.zeros((4, 4), np.int32), np.ones((4, 4)), np.ones((4, 4), bool), 0)
    assert all(len(v) == 0 for v in stats.values())


def test_footprint_stats_sum_to_the_mosaic_totals():
    rng = np.random.default_rng(0)
    index = rng.integers(0, 6, (64, 64)).astype(np.int32)
    prob = rng.random((64, 64)).astype(np.float32)
    valid = rng.random((64, 64)) < 0.7
    stats = footprint_stats(index, prob, valid, 5)
    covered = index > 0
    assert stats["n_px"].sum() == covered.sum()
    assert stats["n_valid"].sum() == (covered & valid).sum()
    assert stats["sum_prob"].sum() == pytest.approx(prob[covered & valid].sum(dtype=np.float64))
    assert stats["n_pred"].sum() == (covered & valid & (prob >= 0.5)).sum()
    for k in range(5):
        mine = (index == k + 1) & valid
        assert stats["n_pred"][k] == (mine & (prob >= 0.5)).sum()
