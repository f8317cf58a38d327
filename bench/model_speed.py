"""Training and inference throughput of the segmentation model (default spec unless told).

    .venv/bin/python bench/model_speed.py                       # default spec, CPU (+ CUDA)
    .venv/bin/python bench/model_speed.py --threads 2 --chip 128 --batch 16
    .venv/bin/python bench/model_speed.py --encoder resnet18 --depth 4 --decoder 64,32,16,8

Train: full optimizer steps (augmented random chips from random imagery, forward,
Lovász+BCE, backward, AdamW) -> samples/s. Predict: ``predict_mosaic`` over a 1024 px
mosaic (256 px windows, 32 px overlap) -> 256 px tiles/s. Reports the median and the
best of the timed repetitions (the best is the uncontended speed on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from torch.utils.data import default_collate

from pipeline.model import (
    ChipDataset,
    LovaszBCELoss,
    ModelSpec,
    TrainConfig,
    TrainingSample,
    build_model,
    predict_mosaic,
)
from pipeline.model.device import autocast, memory_format
from pipeline.model.train import make_optimizer


def _random_sample(size: int, seed: int) -> TrainingSample:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (3, size, size), dtype=np.uint8)
    label = (rng.random((size, size)) < 0.2).astype(np.uint8)
    return TrainingSample(image, label, np.ones((size, size), bool), "bench")


def bench_train(
    spec: ModelSpec, chip: int, batch: int, device: torch.device, steps: int
) -> tuple[float, float]:
    """(median, best) training samples/s over ``steps`` timed steps after 2 warm-up steps."""
    torch.manual_seed(0)
    model = build_model(spec).to(device=device, memory_format=memory_format(device)).train()
    opt = make_optimizer(model, TrainConfig())
    crit = LovaszBCELoss()
    ds = ChipDataset([_random_sample(1024, 0)], chip)
    times = []
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        b = default_collate([ds[(i * batch + j) % len(ds)] for j in range(batch)])
        x = b["image"].to(device).float().contiguous(memory_format=memory_format(device))
        with autocast(device):
            out = model(x)
        loss = crit(out.float(), b["label"].to(device), b["valid"].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return batch / statistics.median(times), batch / min(times)


def bench_predict(
    spec: ModelSpec, device: torch.device, reps: int, size: int = 1024
) -> tuple[float, float]:
    """(median, best) 256 px tiles/s of ``predict_mosaic`` over a ``size`` px mosaic."""
    torch.manual_seed(0)
    model = build_model(spec).to(device=device, memory_format=memory_format(device)).eval()
    image = _random_sample(size, 1).image
    predict_mosaic(model, image[:, :512, :512], device=device)  # warm-up
    tiles = (size / 256) ** 2
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        predict_mosaic(model, image, window=256, overlap=32, batch_size=8, device=device)
        times.append(time.perf_counter() - t)
    return tiles / statistics.median(times), tiles / min(times)


def main() -> None:
    cfg, default = TrainConfig(), ModelSpec()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arch", default=default.arch)
    ap.add_argument("--encoder", default=default.encoder)
    ap.add_argument("--depth", type=int, default=default.encoder_depth)
    ap.add_argument("--decoder", default=",".join(map(str, default.decoder_channels)))
    ap.add_argument("--chip", type=int, default=cfg.chip_size)
    ap.add_argument("--batch", type=int, default=cfg.batch_size)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--steps", type=int, default=8, help="timed training steps")
    ap.add_argument("--reps", type=int, default=3, help="timed mosaic predictions")
    ap.add_argument("--device", choices=["all", "cpu", "cuda"], default="all")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(a.threads)
    spec = ModelSpec(
        arch=a.arch,
        encoder=a.encoder,
        encoder_depth=a.depth,
        decoder_channels=tuple(int(c) for c in a.decoder.split(",")),
    )
    n_params = sum(p.numel() for p in build_model(spec).parameters())
    print(f"spec {spec}  ({n_params / 1e6:.2f} M parameters)")
    print(f"train chips {a.chip}px x batch {a.batch}; torch threads {torch.get_num_threads()}")
    devices = [torch.device("cpu")] if a.device in ("all", "cpu") else []
    if a.device in ("all", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    for device in devices:
        med, best = bench_train(spec, a.chip, a.batch, device, a.steps)
        print(f"{device.type:4s} train   {med:7.1f} samples/s median  {best:7.1f} best")
        med, best = bench_predict(spec, device, a.reps)
        print(f"{device.type:4s} predict {med:7.1f} tiles/s   median  {best:7.1f} best  (256 px)")


if __name__ == "__main__":
    main()
