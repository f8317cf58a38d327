from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import ImageryError, ModelError
from pipeline.model.folds import FoldPlan, FoldSet
from pipeline.model.predict import (
    Region,
    blend_weights,
    block_regions,
    predict_batch,
    predict_fold_set,
    predict_mosaic,
    predict_tiles,
    window_starts,
)
from pipeline.tiles import Shard, Tile, block_of, shard_tiles

from .conftest import random_image


class Pointwise(nn.Module):
    """1x1 convolution: exactly translation-equivariant, any window gives the same pixel."""

    output_stride = 1

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 1, 1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x / 64.0 - 2.0)


class SmallField(nn.Module):
    """Two 3x3 convolutions (5 px receptive field): differs from a full forward only
    within 2 px of a window edge."""

    output_stride = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 64.0 - 2.0)


def full_forward(model: nn.Module, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(image).float()[None]))[0, 0].numpy()


@pytest.mark.parametrize("length,window,overlap", [(1024, 256, 32), (300, 256, 32), (256, 256, 0)])
def test_window_starts_cover_and_end_flush(length, window, overlap):
    starts = window_starts(length, window, overlap)
    assert starts[0] == 0 and starts[-1] == length - window
    assert all(b - a <= window - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_blend_weights_ramp_to_one_in_the_middle():
    w = blend_weights(64, 16)
    assert w.shape == (64, 64) and w.max() == 1.0 and 0 < w[0, 0] < 0.01
    assert np.allclose(w, w.T) and np.allclose(w, w[::-1, ::-1])


@pytest.mark.parametrize("shape", [(512, 512), (300, 520), (100, 90)])
def test_pointwise_model_mosaic_equals_full_forward(shape, cpu):
    image = random_image(*shape)
    model = Pointwise()
    got = predict_mosaic(model, image, window=128, overlap=32, batch_size=3, device=cpu)
    assert got.shape == shape and got.dtype == np.float32
    np.testing.assert_allclose(got, full_forward(model, image), atol=1e-6)


def test_seams_are_continuous_for_a_local_model(cpu):
    image = random_image(512, 512, seed=2)
    model = SmallField()
    got = predict_mosaic(model, image, window=128, overlap=32, device=cpu)
    diff = np.abs(got - full_forward(model, image))
    assert diff.max() < 0.03  # window-edge pixels carry < 8% of the blend weight
    # without overlap the seams show: the full error of a zero-padded edge
    hard = predict_mosaic(model, image, window=128, overlap=0, device=cpu)
    assert np.abs(hard - full_forward(model, image)).max() > 3 * diff.max()


def test_default_model_mosaic_matches_single_forward_on_window_interiors(trained, town, cpu):
    image = town[1][0].image  # 256 px validation tile
    whole = predict_batch(trained.model, image[None], device=cpu)[0]
    tiled = predict_mosaic(trained.model, image, window=128, overlap=64, device=cpu)
    # The U-Net's receptive field is wider than a 128 px window, so windows see less
    # context than the whole tile and a few percent of pixels (mostly near 0.5) flip;
    # exact blending is checked by the pointwise and local-field models above. Measured
    # agreement 0.969-0.975 across machines (CPU reductions differ with load).
    assert np.mean(np.abs(whole - tiled)) < 0.05
    assert np.mean((whole >= 0.5) == (tiled >= 0.5)) > 0.95


def test_pixels_outside_valid_are_zero_and_empty_windows_skipped(cpu):
    image = random_image(512, 512)
    valid = np.zeros((512, 512), bool)
    valid[:200, :200] = True
    model = Pointwise()
    got = predict_mosaic(model, image, valid=valid, window=256, overlap=0, batch_size=1, device=cpu)
    assert np.all(got[~valid] == 0) and np.all(got[valid] > 0)
    assert model.calls == 1  # only the top-left window has valid pixels


def test_bad_inputs_are_rejected(cpu):
    model = SmallField()
    with pytest.raises(ImageryError, match="uint8"):
        predict_mosaic(model, np.zeros((3, 64, 64), np.float32), device=cpu)
    with pytest.raises(ImageryError, match="valid must be"):
        predict_mosaic(model, random_image(64, 64), valid=np.ones((64, 63), bool), device=cpu)
    with pytest.raises(ModelError, match="multiple of 8"):
        predict_mosaic(model, random_image(64, 64), window=100, device=cpu)
    with pytest.raises(ModelError, match="overlap"):
        predict_mosaic(model, random_image(64, 64), window=64, overlap=64, device=cpu)


def test_predict_restores_training_mode(cpu):
    model = SmallField().train()
    predict_mosaic(model, random_image(64, 64), window=64, device=cpu)
    assert model.training


# --- one window per tile, and fold sets ---------------------------------------------------


class Recorder(nn.Module):
    """Pointwise model that records the shapes of the batches it is given."""

    output_stride = 1

    def __init__(self) -> None:
        super().__init__()
        self.inner = Pointwise()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


class CentreMark(nn.Module):
    """+5 in the central ``tile`` px of a ``tile + 2 * margin`` window, -5 in its margin:
    shows which part of each window is kept."""

    output_stride = 8

    def __init__(self, margin: int) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(x[:, :1], -5.0)
        m = self.margin
        out[:, :, m:-m, m:-m] = 5.0
        return out


class ConstantLogit(nn.Module):
    """The same logit everywhere: tells which model predicted a pixel."""

    output_stride = 32

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return torch.full_like(x[:, :1], self.logit)


HIGH, LOW = float(torch.sigmoid(torch.tensor(5.0))), float(torch.sigmoid(torch.tensor(-5.0)))


def block(out: np.ndarray, r: int, q: int, tile: int) -> np.ndarray:
    return out[r * tile : (r + 1) * tile, q * tile : (q + 1) * tile]


def test_block_regions_cover_each_block_once_with_rectangles():
    shard = [(r, q) for r in range(4) for q in range(4)]
    assert block_regions(shard) == [Region(0, 0, 4, 4)]  # a whole shard: one window
    assert block_regions(shard, max_side=2) == [
        Region(0, 0, 2, 2),
        Region(0, 2, 2, 2),
        Region(2, 0, 2, 2),
        Region(2, 2, 2, 2),
    ]
    ell = [(0, 0), (0, 1), (1, 0), (2, 0), (2, 1), (2, 2), (5, 5)]
    regions = block_regions(ell)
    assert regions == [
        Region(0, 0, 1, 2),
        Region(1, 0, 2, 1),
        Region(2, 1, 1, 2),
        Region(5, 5, 1, 1),
    ]
    covered = [
        (g.row + i, g.col + j) for g in regions for i in range(g.rows) for j in range(g.cols)
    ]
    assert sorted(covered) == sorted(ell)


def test_predict_tiles_keeps_the_centre_of_one_window_per_region(cpu):
    image = random_image(128, 192)  # 2 x 3 blocks of 64 px
    model = Recorder()
    blocks = [(0, 0), (1, 2), (0, 1), (1, 1), (0, 2)]
    got = predict_tiles(model, image, blocks, tile=64, margin=16, batch_size=2, device=cpu)
    assert got.shape == (128, 192) and got.dtype == np.float32
    # regions: row 0 (1 x 3 blocks), then (1, 1)-(1, 2) (1 x 2); window = region + 2 * 16
    assert sorted(model.shapes) == [(1, 3, 96, 160), (1, 3, 96, 224)]
    # pointwise: the kept centre of each window is the full forward at those pixels
    full = full_forward(model.inner, image)
    for r in range(2):
        for q in range(3):
            if (r, q) in blocks:
                np.testing.assert_allclose(block(got, r, q, 64), block(full, r, q, 64), atol=1e-6)
            else:
                assert not block(got, r, q, 64).any()


def test_predict_tiles_keeps_only_the_central_tile_of_the_window(cpu):
    image = random_image(128, 128)
    blocks = [(0, 0), (0, 1), (1, 0), (1, 1)]
    got = predict_tiles(CentreMark(16), image, blocks, tile=64, margin=16, device=cpu)
    np.testing.assert_allclose(got, HIGH, rtol=1e-6)


def test_predict_tiles_gives_margin_px_of_reflected_context(cpu):
    # a 5 px receptive field within 16 px of context: every kept pixel is what a forward
    # over the whole mosaic, reflect-padded by the margin, gives there
    image = random_image(128, 192, seed=4)
    model = SmallField()
    blocks = [(r, q) for r in range(2) for q in range(3)]
    got = predict_tiles(model, image, blocks, tile=64, margin=16, device=cpu)
    padded = np.pad(image, ((0, 0), (16, 16), (16, 16)), mode="reflect")
    expected = full_forward(model, padded)[16:-16, 16:-16]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_predict_tiles_window_must_fit_the_stride(cpu):
    with pytest.raises(
        ModelError, match=r"tile 64 and tile \+ 2 \* margin = 70 must be multiples of 8"
    ):
        predict_tiles(SmallField(), random_image(64, 64), [(0, 0)], tile=64, margin=3, device=cpu)
    model = SmallField().train()
    predict_tiles(model, random_image(64, 64), [(0, 0)], tile=64, margin=8, device=cpu)
    assert model.training  # mode restored


SHARD = Shard(Tile(386697, 220263, 19), 20)  # 2 x 2 work tiles, 512 px
TILES = shard_tiles(SHARD)  # row by row: (0, 0), (0, 1), (1, 0), (1, 1)


def test_each_tile_is_predicted_by_the_model_of_its_fold(cpu):
    plan = FoldPlan(2, 20, {str(TILES[0]): 0, str(TILES[1]): 1, str(TILES[2]): 1})
    # TILES[3] is in no block of the plan: its fold is the hashed one
    plus, minus = ConstantLogit(5.0), ConstantLogit(-5.0)
    folds = FoldSet([plus, minus], plan)
    image = random_image(512, 512)
    got = predict_fold_set(folds, image, SHARD, device=cpu)
    expected = {0: HIGH, 1: LOW}
    for tile in TILES:
        r, q = block_of(tile, SHARD)
        np.testing.assert_allclose(block(got, r, q, 256), expected[plan.fold_of(tile)], rtol=1e-6)
    # one window per tile by default, each by one model
    assert sum(plus.batches) + sum(minus.batches) == 4
    assert sum(minus.batches) == 2 + (plan.fold_of(TILES[3]) == 1)
    # in regions: one window per region of a fold's adjacent tiles
    plus.batches.clear(), minus.batches.clear()
    regions = predict_fold_set(folds, image, SHARD, region_side=2, device=cpu)
    np.testing.assert_allclose(regions, got, rtol=1e-6)
    windows = {
        fold: len(block_regions([block_of(t, SHARD) for t in TILES if plan.fold_of(t) == fold]))
        for fold in (0, 1)
    }
    assert (sum(plus.batches), sum(minus.batches)) == (windows[0], windows[1])


def test_tiles_without_valid_pixels_stay_zero_and_are_not_predicted(cpu):
    plan = FoldPlan(2, 20, {str(TILES[0]): 0, str(TILES[1]): 1, str(TILES[2]): 1, str(TILES[3]): 0})
    plus, minus = ConstantLogit(5.0), ConstantLogit(-5.0)
    valid = np.zeros((512, 512), bool)
    valid[10:100, 10:100] = True  # part of tile (0, 0), fold 0
    valid[300:310, 500:512] = True  # part of tile (1, 1), fold 0
    got = predict_fold_set(
        FoldSet([plus, minus], plan), random_image(512, 512), SHARD, valid=valid, device=cpu
    )
    assert np.all(got[~valid] == 0)
    np.testing.assert_allclose(got[valid], HIGH, rtol=1e-6)
    assert sum(plus.batches) == 2 and minus.batches == []  # tiles (0, 1), (1, 0) skipped


def test_fold_set_prediction_composes_per_tile_predictions(cpu):
    torch.manual_seed(1)
    a = SmallField()
    torch.manual_seed(2)
    b = SmallField()
    b.net[2].bias.data += 1.0  # clearly another model
    plan = FoldPlan(2, 20, {str(TILES[0]): 1, str(TILES[1]): 0, str(TILES[2]): 0, str(TILES[3]): 1})
    image = random_image(512, 512, seed=9)
    got = predict_fold_set(FoldSet([a, b], plan), image, SHARD, margin=16, device=cpu)
    for tile in TILES:
        r, q = block_of(tile, SHARD)
        one = predict_tiles([a, b][plan.fold_of(tile)], image, [(r, q)], margin=16, device=cpu)
        np.testing.assert_allclose(block(got, r, q, 256), block(one, r, q, 256), atol=1e-6)
        other = predict_tiles([b, a][plan.fold_of(tile)], image, [(r, q)], margin=16, device=cpu)
        assert np.abs(block(got, r, q, 256) - block(other, r, q, 256)).max() > 0.05


def test_a_one_fold_set_is_the_sliding_window_mosaic(cpu):
    model = SmallField()
    image = random_image(512, 512, seed=3)
    valid = np.ones((512, 512), bool)
    valid[:, 400:] = False
    got = predict_fold_set(FoldSet.single(model), image, SHARD, valid=valid, device=cpu)
    np.testing.assert_array_equal(got, predict_mosaic(model, image, valid=valid, device=cpu))
    # ... which blends windows, unlike one window per tile
    tiled = predict_tiles(model, image, [(0, 0), (0, 1), (1, 0), (1, 1)], device=cpu)
    tiled[~valid] = 0
    assert not np.array_equal(got, tiled)


def test_batch_size_changes_no_prediction(trained, town, cpu):
    """The default batch (8 windows on the CPU, free memory on CUDA) and any other give
    the same probabilities: windows are predicted independently in eval mode."""
    image = town[0][0].image
    default = predict_mosaic(trained.model, image, window=128, overlap=32, device=cpu)
    for batch_size in (1, 3):
        other = predict_mosaic(
            trained.model, image, window=128, overlap=32, batch_size=batch_size, device=cpu
        )
        np.testing.assert_allclose(other, default, atol=1e-5)
