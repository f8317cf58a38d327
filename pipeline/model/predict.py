"""Sliding-window prediction of building probabilities over a shard mosaic."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from pipeline.errors import ImageryError, ModelError
from pipeline.model.dataset import to_model_input
from pipeline.model.device import autocast, memory_format

log = logging.getLogger(__name__)


def window_starts(length: int, window: int, overlap: int) -> list[int]:
    """Window offsets covering ``[0, length)``: every ``window - overlap`` px, the last
    one flush with the end (``length >= window``)."""
    step = window - overlap
    starts = list(range(0, length - window + 1, step))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def blend_weights(window: int, overlap: int) -> np.ndarray:
    """``(window, window)`` float32 weights ``r(y) * r(x)`` with the linear ramp
    ``r(i) = min(1, (i + 0.5) / overlap, (window - i - 0.5) / overlap)``: window borders,
    where context is missing, count little; the mosaic is ``sum(w p) / sum(w)``."""
    if overlap <= 0:
        return np.ones((window, window), np.float32)
    i = np.arange(window, dtype=np.float32) + 0.5
    r = np.minimum(1.0, np.minimum(i, window - i) / overlap)
    return np.outer(r, r).astype(np.float32)


def _stride(model: nn.Module) -> int:
    return int(getattr(model, "output_stride", 32))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for a block, then restore its previous mode."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.inference_mode()
def _probabilities(model: nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    n, _, h, w = images.shape
    s = _stride(model)
    ph, pw = -h % s, -w % s
    if ph or pw:
        images = np.pad(images, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect")
    x = to_model_input(images).to(device, non_blocking=True)
    x = x.contiguous(memory_format=memory_format(device))
    with autocast(device):
        logits = model(x)
    return torch.sigmoid(logits.float())[:, 0, :h, :w].cpu().numpy()


def predict_batch(model: nn.Module, images: np.ndarray, *, device: torch.device) -> np.ndarray:
    """Probabilities ``(N, H, W)`` float32 for a batch ``(N, C, H, W)`` uint8 in one forward.

    Sides that are not multiples of the model's output stride are reflect-padded and
    cropped back. Runs in eval mode, bf16 autocast on CUDA, channels_last input.
    """
    with eval_mode(model):
        return _probabilities(model, images, device)


def predict_mosaic(
    model: nn.Module,
    image: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    window: int = 256,
    overlap: int = 32,
    batch_size: int = 8,
    device: torch.device,
) -> np.ndarray:
    """Building probability ``(H, W)`` float32 in [0, 1] for imagery ``(C, H, W)`` uint8.

    Windows of ``window`` px every ``window - overlap`` px (the last flush with the edge)
    are predicted ``batch_size`` at a time and blended with :func:`blend_weights`, so
    objects on window seams are whole; windows without any valid pixel are skipped and
    pixels outside ``valid`` are 0. Images smaller than a window are reflect-padded.
    ``model`` takes float 0..255 input (see :mod:`pipeline.model.net`) and is put in eval
    mode for the call; it is moved to ``device``.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.dtype != np.uint8:
        got = getattr(image, "shape", type(image)), getattr(image, "dtype", "")
        raise ImageryError(f"predict_mosaic: image must be (bands, H, W) uint8, got {got}")
    c, h, w = image.shape
    if valid is not None and (valid.shape != (h, w) or valid.dtype != np.bool_):
        raise ImageryError(f"predict_mosaic: valid must be an ({h}, {w}) bool array")
    s = _stride(model)
    if window < s or window % s:
        raise ModelError(f"predict_mosaic: window {window} must be a multiple of {s}")
    if not 0 <= overlap < window:
        raise ModelError(f"predict_mosaic: overlap {overlap} must be in [0, window={window})")
    if batch_size < 1:
        raise ModelError(f"predict_mosaic: batch_size {batch_size} must be >= 1")

    ph, pw = max(window - h, 0), max(window - w, 0)
    img = np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="reflect") if ph or pw else image
    H, W = img.shape[1:]
    weight = blend_weights(window, overlap)
    acc = np.zeros((H, W), np.float32)
    norm = np.zeros((H, W), np.float32)
    boxes = [
        (y, x)
        for y in window_starts(H, window, overlap)
        for x in window_starts(W, window, overlap)
        if valid is None or valid[y : y + window, x : x + window].any()
    ]
    model.to(device)
    with eval_mode(model):
        for i in range(0, len(boxes), batch_size):
            chunk = boxes[i : i + batch_size]
            batch = np.stack([img[:, y : y + window, x : x + window] for y, x in chunk])
            probs = _probabilities(model, batch, device)
            for (y, x), p in zip(chunk, probs, strict=True):
                acc[y : y + window, x : x + window] += p * weight
                norm[y : y + window, x : x + window] += weight
    out = np.divide(acc, norm, out=np.zeros_like(acc), where=norm > 0)[:h, :w]
    if valid is not None:
        out[~valid] = 0.0
    log.debug("predicted %dx%d px in %d windows", h, w, len(boxes))
    return out
