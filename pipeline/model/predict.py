"""Sliding-window prediction of building probabilities over a shard mosaic."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from pipeline.errors import ImageryError, ModelError
from pipeline.model.device import autocast, to_device_input, windows_per_batch
from pipeline.model.folds import FoldSet
from pipeline.tiles import TILE_SIZE, Shard, block_of, shard_tiles

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
    x = to_device_input(images, device)
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
    batch_size: int | None = None,
    device: torch.device,
) -> np.ndarray:
    """Building probability ``(H, W)`` float32 in [0, 1] for imagery ``(C, H, W)`` uint8.

    Windows of ``window`` px every ``window - overlap`` px (the last flush with the edge)
    are predicted ``batch_size`` at a time (default :func:`windows_per_batch`: 8 on the
    CPU, what fits in free memory on CUDA) and blended with :func:`blend_weights`, so
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
    if batch_size is not None and batch_size < 1:
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
        batch_size = batch_size or windows_per_batch(model, window, device)
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


class Region(NamedTuple):
    """A rectangle of tile blocks of a mosaic: first block row and column, and how many
    rows and columns of blocks it spans."""

    row: int
    col: int
    rows: int
    cols: int


def block_regions(blocks: list[tuple[int, int]], max_side: int = 4) -> list[Region]:
    """Cover the ``(row, col)`` blocks with rectangles of at most ``max_side`` blocks a
    side, each block once: row-major, each rectangle grown right, then down, as far as
    the blocks go. A whole shard of ``max_side`` blocks a side is one region."""
    todo = set(blocks)
    regions = []
    for r, q in sorted(todo):
        if (r, q) not in todo:
            continue
        cols = 1
        while cols < max_side and (r, q + cols) in todo:
            cols += 1
        rows = 1
        while rows < max_side and all((r + rows, q + c) in todo for c in range(cols)):
            rows += 1
        todo.difference_update((r + i, q + c) for i in range(rows) for c in range(cols))
        regions.append(Region(r, q, rows, cols))
    return regions


def predict_tiles(
    model: nn.Module,
    image: np.ndarray,
    blocks: list[tuple[int, int]],
    *,
    tile: int = 256,
    margin: int = 32,
    batch_size: int | None = None,
    max_side: int = 4,
    device: torch.device,
) -> np.ndarray:
    """Probabilities of the ``(row, col)`` tile blocks of a mosaic, 0 elsewhere.

    Adjacent blocks are predicted together (:func:`block_regions`, up to ``max_side``
    blocks a side): each region in one window of its size plus ``margin`` px of context
    on every side (the mosaic reflect-padded by ``margin`` at its border), whose centre
    is kept. Every pixel gets at least ``margin`` px of context, nothing is blended, and
    only the margins are predicted twice: a whole 4 x 4 shard costs 1.13 times its
    pixels, where one window per tile costs 1.56 times. Regions of one size go
    ``batch_size`` windows at a time (default :func:`windows_per_batch` for that size).
    """
    c, h, w = image.shape
    s = _stride(model)
    if (tile + 2 * margin) % s or tile % s:
        raise ModelError(
            f"predict_tiles: tile {tile} and tile + 2 * margin = {tile + 2 * margin} "
            f"must be multiples of {s}"
        )
    padded = np.pad(image, ((0, 0), (margin, margin), (margin, margin)), mode="reflect")
    out = np.zeros((h, w), np.float32)
    by_size: dict[tuple[int, int], list[Region]] = {}
    for region in block_regions(blocks, max_side):
        by_size.setdefault((region.rows, region.cols), []).append(region)
    model.to(device)
    with eval_mode(model):
        for (rows, cols), regions in sorted(by_size.items()):
            size = max(rows, cols) * tile + 2 * margin
            per_batch = batch_size or windows_per_batch(model, size, device)
            for i in range(0, len(regions), per_batch):
                chunk = regions[i : i + per_batch]
                batch = np.stack(
                    [
                        padded[
                            :,
                            g.row * tile : (g.row + rows) * tile + 2 * margin,
                            g.col * tile : (g.col + cols) * tile + 2 * margin,
                        ]
                        for g in chunk
                    ]
                )
                probs = _probabilities(model, batch, device)
                for g, p in zip(chunk, probs, strict=True):
                    out[
                        g.row * tile : (g.row + rows) * tile, g.col * tile : (g.col + cols) * tile
                    ] = p[margin : margin + rows * tile, margin : margin + cols * tile]
    return out


def predict_fold_set(
    folds: FoldSet,
    image: np.ndarray,
    shard: Shard,
    *,
    valid: np.ndarray | None = None,
    margin: int = 32,
    batch_size: int | None = None,
    region_side: int = 1,
    device: torch.device,
) -> np.ndarray:
    """Probabilities ``(H, W)`` of a shard mosaic, each work tile by the fold model that
    did not train on it (:class:`~pipeline.model.folds.FoldSet`), in windows of up to
    ``region_side`` tiles a side with ``margin`` px of context (:func:`predict_tiles`);
    tiles without a valid pixel and pixels outside ``valid`` are 0. A one-fold set is
    one sliding-window pass (:func:`predict_mosaic`).

    One window per tile is the default: larger windows cost fewer pixels (a 4 x 4
    region 1.13 times its pixels, a tile 1.56 times) but change what the network sees,
    since the default encoder's squeeze-and-excitation blocks pool over the whole
    window; measured on the sample towns, 4 x 4 regions gave the 1 km demo better
    figures and the 500 m town worse ones (``bench/predict_path.py``, README "Speed").
    """
    if folds.k == 1:
        return predict_mosaic(
            folds.models[0], image, valid=valid, batch_size=batch_size, device=device
        )
    by_fold: dict[int, list[tuple[int, int]]] = {}
    for t in shard_tiles(shard):
        r, q = block_of(t, shard)
        sl = np.s_[r * TILE_SIZE : (r + 1) * TILE_SIZE, q * TILE_SIZE : (q + 1) * TILE_SIZE]
        if valid is None or valid[sl].any():
            by_fold.setdefault(folds.plan.fold_of(t), []).append((r, q))
    out = np.zeros(image.shape[1:], np.float32)
    for fold, blocks in sorted(by_fold.items()):
        out += predict_tiles(
            folds.models[fold],
            image,
            blocks,
            tile=TILE_SIZE,
            margin=margin,
            batch_size=batch_size,
            max_side=region_side,
            device=device,
        )
    if valid is not None:
        out[~valid] = 0.0
    return out
