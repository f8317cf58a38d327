from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import ModelError
from pipeline.model.dataset import ChipDataset, TrainingSample, to_model_input

N = 32


@pytest.fixture()
def coords() -> TrainingSample:
    """Band 0 = row, band 1 = column, band 2 = 100; label an asymmetric L; valid a corner cut."""
    r, c = np.mgrid[0:N, 0:N]
    image = np.stack([r * 4 + 2, c * 4 + 2, np.full((N, N), 100)]).astype(np.uint8)
    label = (((r < 6) & (c < 20)) | ((c < 5) & (r < 25))).astype(np.uint8)
    valid = (r + 2 * c) < 80
    return TrainingSample(image, label, valid, "coords")


def recover(item: dict) -> tuple[np.ndarray, np.ndarray]:
    """Source (row, col) of every chip pixel, read back from the coordinate bands."""
    img = item["image"].numpy()
    return img[0] // 4, img[1] // 4


def test_augmented_chips_keep_image_label_and_valid_aligned(coords):
    ds = ChipDataset(
        [coords], chip_size=N, geometric=True, jitter=0.0, brightness=0.0, min_valid=0.0
    )
    ds.length = 64
    seen = set()
    for i in range(len(ds)):
        item = ds[i]
        rows, cols = recover(item)
        assert np.array_equal(item["label"].numpy(), coords.label[rows, cols])
        assert np.array_equal(item["valid"].numpy(), coords.valid[rows, cols])
        # record which of the 8 rotations/flips this chip is
        seen.add((int(rows[0, 0]), int(cols[0, 0]), int(rows[0, 1]), int(cols[0, 1])))
    assert len(seen) == 8


def test_without_geometric_augmentation_chips_are_plain_crops(coords):
    ds = ChipDataset([coords], chip_size=16, jitter=0.0, brightness=0.0, min_valid=0.0)
    for i in range(16):
        rows, cols = recover(ds[i])
        assert np.all(np.diff(rows, axis=0) == 1) and np.all(np.diff(cols, axis=1) == 1)


def test_colour_jitter_changes_image_only(coords):
    plain = ChipDataset([coords], chip_size=N, jitter=0.0, brightness=0.0, min_valid=0.0, seed=4)
    jittered = ChipDataset([coords], chip_size=N, min_valid=0.0, seed=4)
    a, b = plain[0], jittered[0]
    assert np.array_equal(a["label"].numpy(), b["label"].numpy())
    diff = np.abs(a["image"].numpy().astype(int) - b["image"].numpy().astype(int))
    assert 0 < diff.mean() < 25


def test_no_data_pixels_stay_black_under_jitter():
    image = np.full((3, 40, 40), 120, np.uint8)
    image[:, :, :10] = 0
    sample = TrainingSample(image, np.zeros((40, 40), np.uint8), np.ones((40, 40), bool))
    ds = ChipDataset([sample], chip_size=40, brightness=30.0, seed=1)
    for i in range(8):
        img = ds[i]["image"].numpy()
        assert ((img == 0).all(axis=0)).sum() == 400


def test_items_are_deterministic_per_seed_and_epoch(coords):
    a = ChipDataset([coords], chip_size=16, seed=7)
    b = ChipDataset([coords], chip_size=16, seed=7)
    assert all(np.array_equal(a[i]["image"], b[i]["image"]) for i in range(4))
    first = a[0]["image"].clone()
    a.set_epoch(1)
    assert not np.array_equal(a[0]["image"], first)


def test_chip_larger_than_sample_is_padded_as_invalid(coords):
    item = ChipDataset([coords], chip_size=48, augment=False)[0]
    assert item["image"].shape == (3, 48, 48)
    assert not item["valid"][N:, :].any() and not item["valid"][:, N:].any()
    assert np.array_equal(item["label"][:N, :N].numpy(), coords.label)


def test_training_sample_rejects_misshaped_arrays():
    img = np.zeros((3, 8, 8), np.uint8)
    with pytest.raises(ModelError, match="image must be a .bands, H, W. uint8"):
        TrainingSample(img.astype(np.float32), np.zeros((8, 8), np.uint8), np.ones((8, 8), bool))
    with pytest.raises(ModelError, match="label must be an"):
        TrainingSample(img, np.zeros((8, 9), np.uint8), np.ones((8, 8), bool))
    with pytest.raises(ModelError, match="values in"):
        TrainingSample(img, np.full((8, 8), 255, np.uint8), np.ones((8, 8), bool))
    with pytest.raises(ModelError, match="valid must be"):
        TrainingSample(img, np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8))
    ok = TrainingSample(img, np.ones((8, 8), bool), np.ones((8, 8), bool))
    assert ok.label.dtype == np.uint8


def test_dataset_needs_valid_pixels():
    img = np.zeros((3, 8, 8), np.uint8)
    empty = TrainingSample(img, np.zeros((8, 8), np.uint8), np.zeros((8, 8), bool), "empty")
    with pytest.raises(ModelError, match="no valid pixel"):
        ChipDataset([empty], chip_size=8)
    with pytest.raises(ModelError, match="no training samples"):
        ChipDataset([], chip_size=8)


def test_model_input_is_raw_float_values():
    img = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    x = to_model_input(img)
    assert x.dtype.is_floating_point and x.shape == (3, 2, 2) and x[2, 1, 1] == 11.0
