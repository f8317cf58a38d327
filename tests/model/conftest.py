"""Fixtures for the model tests: a tiny synthetic town and a briefly trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.model import ModelSpec, TrainConfig, TrainResult, train_model

from .toytown import make_split, make_town


@pytest.fixture(scope="session")
def cpu() -> torch.device:
    return torch.device("cpu")


@pytest.fixture(scope="session")
def town():
    """Two 256 px training scenes (one with a no-data corner) and two validation tiles."""
    return make_split(n_train=3, n_val=2, size=256, seed=3)


@pytest.fixture(scope="session")
def spec() -> ModelSpec:
    return ModelSpec()


@pytest.fixture(scope="session")
def trained(town, spec, cpu, tmp_path_factory) -> TrainResult:
    """The default spec trained for 120 steps on the toy town."""
    train, val = town
    config = TrainConfig(
        chip_size=96,
        batch_size=8,
        max_steps=120,
        max_seconds=None,
        lr=3e-3,
        val_every=60,
        ema_decay=None,
        grad_clip=None,  # averaging and clipping are for long runs
        geometric_augment=True,  # the toy town's shapes have no sun direction to keep
    )
    return train_model(
        train, val, spec, config, device=cpu, checkpoint_dir=tmp_path_factory.mktemp("ckpt")
    )


@pytest.fixture()
def scene():
    return make_town(256, seed=11)


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8)
