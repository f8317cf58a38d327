"""Training samples and the augmented random-chip dataset fed to the trainer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.errors import ModelError


@dataclass(frozen=True)
class TrainingSample:
    """One training area: imagery ``(C, H, W) uint8``, labels ``(H, W) uint8`` in {0, 1},
    valid-pixel mask ``(H, W) bool`` (False = no imagery or excluded) and a name."""

    image: np.ndarray
    label: np.ndarray
    valid: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        img, lab, val = self.image, self.label, self.valid
        where = f"training sample {self.name!r}"
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.dtype != np.uint8:
            raise ModelError(f"{where}: image must be a (bands, H, W) uint8 array")
        shape = img.shape[1:]
        if not isinstance(lab, np.ndarray) or lab.shape != shape:
            raise ModelError(f"{where}: label must be an (H, W) = {shape} array")
        if lab.dtype == np.bool_:
            object.__setattr__(self, "label", lab.astype(np.uint8))
        elif lab.dtype != np.uint8 or lab.max(initial=0) > 1:
            raise ModelError(f"{where}: label must be uint8 with values in {{0, 1}}")
        if not isinstance(val, np.ndarray) or val.shape != shape or val.dtype != np.bool_:
            raise ModelError(f"{where}: valid must be an (H, W) = {shape} bool array")

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.image.shape[1], self.image.shape[2]


def to_model_input(image: np.ndarray) -> torch.Tensor:
    """``(C, H, W)`` or ``(N, C, H, W)`` uint8 imagery -> float32 tensor in 0..255.

    The only preprocessing anywhere: normalisation happens inside the network
    (:class:`pipeline.model.net.GeoAuditNet`), so training and prediction agree.
    """
    return torch.from_numpy(np.ascontiguousarray(image)).float()


class ChipDataset(Dataset):
    """Random ``chip_size`` crops from training samples with augmentation.

    Each item is ``{"image": uint8 (C, s, s), "label": uint8 (s, s), "valid": bool (s, s)}``.
    A sample is chosen with probability proportional to its valid-pixel count, then a
    crop position uniformly (re-drawn up to 4 times while under ``min_valid`` valid
    share). Augmentation (when ``augment``): horizontal/vertical flip, ``rot90`` by
    k in {0..3} applied identically to image, label and valid; per-band gain
    U(1 - jitter, 1 + jitter), brightness offset U(-brightness, brightness) (0..255 units)
    and contrast U(1 - jitter, 1 + jitter) on the image only (all-zero no-data pixels
    stay 0). Item ``i`` of epoch ``e``
    is a pure function of ``(seed, e, i)``; call :meth:`set_epoch` to move on.
    Samples smaller than the chip are zero-padded with ``valid=False``.
    """

    def __init__(
        self,
        samples: Sequence[TrainingSample],
        chip_size: int = 128,
        *,
        length: int | None = None,
        augment: bool = True,
        geometric: bool = False,
        seed: int = 0,
        jitter: float = 0.08,
        brightness: float = 12.0,
        min_valid: float = 0.25,
    ) -> None:
        if not samples:
            raise ModelError("ChipDataset: no training samples")
        if chip_size < 8:
            raise ModelError(f"ChipDataset: chip_size {chip_size} must be >= 8")
        self.samples = list(samples)
        self.chip_size = chip_size
        self.augment = augment
        self.geometric = geometric
        self.seed = seed
        self.jitter = jitter
        self.brightness = brightness
        self.min_valid = min_valid
        self.epoch = 0
        counts = np.array([s.valid.sum() for s in self.samples], dtype=np.float64)
        if counts.sum() == 0:
            raise ModelError("ChipDataset: training samples have no valid pixel")
        self.weights = counts / counts.sum()
        # one epoch ~ every valid pixel seen once
        self.length = length or max(1, math.ceil(counts.sum() / chip_size**2))

    def set_epoch(self, epoch: int) -> None:
        """Draw a fresh set of chips for ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        s = self.chip_size
        sample = self.samples[rng.choice(len(self.samples), p=self.weights)]
        h, w = sample.shape
        for _ in range(5):
            y0 = int(rng.integers(0, max(h - s, 0) + 1))
            x0 = int(rng.integers(0, max(w - s, 0) + 1))
            valid = sample.valid[y0 : y0 + s, x0 : x0 + s]
            if valid.mean() >= self.min_valid:
                break
        image = sample.image[:, y0 : y0 + s, x0 : x0 + s]
        label = sample.label[y0 : y0 + s, x0 : x0 + s]
        if image.shape[1:] != (s, s):
            image, label, valid = _pad(image, label, valid, s)
        if self.augment:
            image, label, valid = self._augment(rng, image, label, valid)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "label": torch.from_numpy(np.ascontiguousarray(label)),
            "valid": torch.from_numpy(np.ascontiguousarray(valid)),
        }

    def _augment(
        self, rng: np.random.Generator, image: np.ndarray, label: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = int(rng.integers(0, 4))
        flip_h, flip_v = rng.random(2) < 0.5
        if self.geometric:
            image, label, valid = (np.rot90(a, k, axes=(-2, -1)) for a in (image, label, valid))
            if flip_h:
                image, label, valid = (a[..., ::-1] for a in (image, label, valid))
            if flip_v:
                image, label, valid = (a[..., ::-1, :] for a in (image, label, valid))
        if self.jitter or self.brightness:
            c = image.shape[0]
            gain = rng.uniform(1 - self.jitter, 1 + self.jitter, size=(c, 1, 1))
            contrast = rng.uniform(1 - self.jitter, 1 + self.jitter)
            offset = rng.uniform(-self.brightness, self.brightness)
            img = image.astype(np.float32)
            mean = img.mean()
            img = (img * gain - mean) * contrast + mean + offset
            img[:, ~image.any(axis=0)] = 0  # keep no-data pixels (all bands 0) at 0
            image = np.clip(img, 0, 255).round().astype(np.uint8)
        return image, label, valid


def _pad(
    image: np.ndarray, label: np.ndarray, valid: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = image.shape[1:]
    out_i = np.zeros((image.shape[0], size, size), np.uint8)
    out_l = np.zeros((size, size), np.uint8)
    out_v = np.zeros((size, size), bool)
    out_i[:, :h, :w], out_l[:h, :w], out_v[:h, :w] = image, label, valid
    return out_i, out_l, out_v
