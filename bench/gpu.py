"""The default model's share of the device's peak, through the audit's prediction path.

On the device prediction picks (CUDA when present, else the CPU; ``--device`` to force):

* the network's FLOPs per 256 px tile as the audit predicts it (one 320 px window per
  tile, ``torch.utils.flop_counter``);
* tiles/s through :func:`pipeline.model.predict.predict_tiles` on a 4 x 4 shard of random
  imagery (bf16 autocast and channels_last on CUDA, the batch from free memory;
  fp32 on the CPU), timed after a warm-up;
* the device's matmul peak measured beside it (bf16 on CUDA, fp32 on the CPU, 4096²);
* the model's achieved FLOP/s as a share of that peak.

    python bench/gpu.py [--device auto|cpu|cuda] [--repeats 5] [--threads 2]

The weights are a fresh default network (speed does not depend on their values).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from pipeline.model.device import (
    autocast,
    is_cuda,
    repeatable,
    select_device,
    to_device_input,
    windows_per_batch,
)
from pipeline.model.net import ModelSpec, build_model
from pipeline.model.predict import predict_tiles


def _sync(device: torch.device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, size: int = 4096, repeats: int = 10) -> float:
    """FLOP/s of a ``size``² matmul on ``device`` (bf16 on CUDA, fp32 on the CPU)."""
    dtype = torch.bfloat16 if is_cuda(device) else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - t0)


def flops_per_tile(model: torch.nn.Module, device: torch.device, window: int) -> float:
    """FLOPs of one forward pass over one ``window`` px window (one 256 px tile)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = to_device_input(np.zeros((1, 3, window, window), np.uint8), device)
    with FlopCounterMode(display=False) as counter, torch.inference_mode(), autocast(device):
        model(x)
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    repeatable(args.threads)
    device = select_device(args.device)
    model = build_model(ModelSpec()).to(device).eval()
    margin, tile, side = 32, 256, 4
    window = tile + 2 * margin
    image = np.random.default_rng(0).integers(0, 256, (3, side * tile, side * tile), np.uint8)
    blocks = [(r, c) for r in range(side) for c in range(side)]

    def predict() -> None:
        predict_tiles(model, image, blocks, tile=tile, margin=margin, max_side=1, device=device)
        _sync(device)

    predict()  # warm-up: kernels chosen, the batch size probed on CUDA
    seconds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        predict()
        seconds.append(time.perf_counter() - t0)
    tiles_per_s = len(blocks) / statistics.median(seconds)
    flops = flops_per_tile(model, device, window)
    peak = matmul_peak(device)
    achieved = flops * tiles_per_s
    name = torch.cuda.get_device_name(device) if is_cuda(device) else f"CPU, {args.threads} threads"
    precision = "bf16 autocast" if is_cuda(device) else "fp32"
    print(f"device: {name} ({precision}), {windows_per_batch(model, window, device)} per batch")
    print(f"  model: {flops / 1e9:.3f} GFLOP per tile ({window} px window)")
    print(f"  audit path: {tiles_per_s:.1f} tiles/s, {achieved / 1e9:.1f} GFLOP/s")
    print(f"  matmul peak: {peak / 1e9:.1f} GFLOP/s")
    if not is_cuda(device):
        print("  (no CUDA device here: the figures are the CPU's)")
    print(f"model share of the device's peak: {achieved / peak:.1%}")


if __name__ == "__main__":
    main()
