"""Prediction through the audit path, side by side with the way it predicted before, on
an audited AOI's real shards and model.

    .venv/bin/python bench/predict_path.py [--home ~/.geoaudit] [--aoi sample-town]
                                           [--repeats 3] [--threads 2]

Takes the AOI's latest succeeded run: its imagery shards, its model version (a fold set
or one model) and the labels of its open data. Each variant predicts every shard with
:func:`pipeline.model.predict.predict_fold_set` (what the shard stage calls):

* ``per tile, torch``: a 320 px window per 256 px tile (32 px of context), run by
  PyTorch (the audit path: ``GEOAUDIT_RUNTIME`` auto or torch);
* ``per tile, onnx``: the same windows run by ONNX Runtime (``GEOAUDIT_RUNTIME=onnx``);
* ``regions, onnx`` / ``regions, torch``: the tiles of one fold model in rectangles of
  up to 4 x 4 tiles, one window each with 32 px of context (``region_side=4``);
* ``sliding, onnx`` / ``sliding, torch``: :func:`predict_mosaic`, 256 px windows with
  32 px overlap, blended (what a one-model set runs), for a one-fold model only.

Variants alternate within each repeat. Prints the median tiles/s of each, the pixel
IoU of its masks (probability >= 0.5) against the open data over the valid pixels,
and, last, the fastest variant that loses at most 0.01 IoU against the audit path, with its
speed ratio over the audit path.
Run ``make demo`` first for the default home.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from pipeline.context import open_context
from pipeline.db import repo
from pipeline.model.device import repeatable
from pipeline.model.folds import FoldSet
from pipeline.model.predict import predict_fold_set, predict_mosaic
from pipeline.run.inputs import ShardPixels, load_run_inputs, read_shard_image
from pipeline.run.labels import shard_labels
from pipeline.run.predict import load_model_version
from pipeline.settings import Settings
from pipeline.tiles import Shard, parse_shard_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--home", type=Path, default=Path(os.environ.get("GEOAUDIT_HOME", "~/.geoaudit"))
    )
    parser.add_argument("--aoi", default="sample-town")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    repeatable(args.threads)
    home = args.home.expanduser()
    ctx = open_context(Settings(home=home, runtime="torch"))
    with Session(ctx.engine) as s:
        run = repo.latest_run(s, repo.get_aoi(s, args.aoi).id, status="succeeded")
        if run is None:
            raise SystemExit(f"AOI {args.aoi!r} has no succeeded run in {home}")
    inputs = load_run_inputs(ctx, run.id)
    folds = load_model_version(ctx, inputs.model_version_id)
    onnx = load_model_version(
        open_context(Settings(home=home, runtime="onnx")), inputs.model_version_id
    )
    shards = []
    for shard_id, ref in sorted(inputs.imagery.shards.items()):
        shard = parse_shard_id(shard_id, inputs.aoi.work_zoom)
        image = read_shard_image(ctx, ref)
        labels = shard_labels(ctx, inputs.aoi.name, inputs.opendata, shard)
        shards.append((shard, image, labels))
    n_tiles = sum((s.size // 256) ** 2 for s, _, _ in shards)

    def fold_set(folds: FoldSet, side: int) -> Callable[[Shard, ShardPixels], np.ndarray]:
        return lambda shard, image: predict_fold_set(
            folds, image.data, shard, valid=image.valid, region_side=side, device=ctx.device
        )

    def sliding(folds: FoldSet) -> Callable[[Shard, ShardPixels], np.ndarray]:
        return lambda shard, image: predict_mosaic(
            folds.models[0], image.data, valid=image.valid, device=ctx.device
        )

    if folds.k == 1:
        variants = {"sliding, onnx": sliding(onnx), "sliding, torch": sliding(folds)}
        audit_path = "sliding, torch"
    else:
        variants = {
            "per tile, onnx": fold_set(onnx, 1),
            "per tile, torch": fold_set(folds, 1),
            "regions, onnx": fold_set(onnx, 4),
            "regions, torch": fold_set(folds, 4),
        }
        audit_path = "per tile, torch"
    print(
        f"{args.aoi} run {run.id}: {len(shards)} shards, {n_tiles} tiles of 256 px, "
        f"model version {inputs.model_version_id} ({folds.k} fold model(s)), "
        f"{args.threads} threads, {ctx.device}"
    )
    for predict in variants.values():  # warm-up: weights to the device, kernels chosen
        predict(*shards[0][:2])
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    iou: dict[str, float] = {}
    for i in range(args.repeats):
        order = list(variants) if i % 2 == 0 else list(reversed(variants))
        for name in order:
            inter = union = 0
            t0 = time.perf_counter()
            for shard, image, labels in shards:
                prob = variants[name](shard, image)
                mask, truth = (prob >= 0.5)[image.valid], (labels > 0)[image.valid]
                inter += int(np.count_nonzero(mask & truth))
                union += int(np.count_nonzero(mask | truth))
            seconds[name].append(time.perf_counter() - t0)
            iou[name] = inter / union if union else 1.0
    print(f"\nmedian of {args.repeats} (tiles/s; pixel IoU against the open data):")
    for name in variants:
        rate = n_tiles / statistics.median(seconds[name])
        print(f"  {name:16s} {rate:7.1f} tiles/s   IoU {iou[name]:.4f}")
    close = [n for n in variants if iou[n] >= iou[audit_path] - 0.01]
    fastest = min(close, key=lambda n: statistics.median(seconds[n]))
    ratio = statistics.median(seconds[audit_path]) / statistics.median(seconds[fastest])
    print(
        f"fastest losing at most 0.01 IoU against the audit path ({audit_path}): {fastest}, "
        f"{ratio:.2f}x the tiles/s, IoU {iou[fastest] - iou[audit_path]:+.4f}"
    )


if __name__ == "__main__":
    main()
