"""Which network to train by default: held-out IoU on real imagery against speed, on 2 cores.

For each candidate network and each real area of ``tests/data`` (OpenAerialMap tiles of
Lalitpur and Virac at z19 with their OSM buildings, the SpaceNet 4 Atlanta GeoTIFF at
z18 with its footprints), train on two thirds of the tiles (spatial blocks of
:func:`pipeline.model.folds.plan_folds`, fold 0 held out) for the same wall-time budget,
and measure the pooled pixel IoU on the held-out third against the open data, the
training steps done in the budget, and prediction tiles/s over the area.

    python bench/model_choice.py [--seconds 150] [--threads 2] [--models default resnet18 ...]

The last lines are the table (mean IoU over the areas) that README's model choice quotes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from verdicts import AREAS  # noqa: E402  (the same real areas)

CANDIDATES = {
    "default": {},
    "mnv3-large": {"encoder": "tu-mobilenetv3_large_100", "decoder_channels": (64, 32, 16, 16)},
    "resnet18": {"encoder": "resnet18", "decoder_channels": (128, 64, 32, 16)},
    "resnet34": {"encoder": "resnet34", "decoder_channels": (128, 64, 32, 16)},
    "effnet-b0": {"encoder": "tu-efficientnet_b0", "decoder_channels": (64, 32, 16, 16)},
    # what an AOI with `model.encoder: tu-tf_efficientnet_lite0` trains: random init, and
    # from the ImageNet weights its package ships (pipeline/model/pretrained.py)
    "lite0": {"encoder": "tu-tf_efficientnet_lite0"},
    "lite0-imagenet": {"encoder": "tu-tf_efficientnet_lite0", "pretrained": True},
    "resnet18-d5": {
        "encoder": "resnet18",
        "encoder_depth": 5,
        "decoder_channels": (128, 64, 32, 16, 16),
    },
}


def area_samples(name: str):
    """Training areas of a real area: (shard, image, labels, valid, tiles) and its tiles."""
    import geopandas as gpd

    from pipeline.aoi import parse_aoi
    from pipeline.rasterize import prepare_footprints, rasterize_shard
    from pipeline.sources import open_imagery
    from pipeline.sources.specs import GeoTiffSpec, XyzSpec

    area = AREAS[name]
    spec = (XyzSpec if area.imagery["kind"] == "xyz" else GeoTiffSpec)(**area.imagery)
    with open_imagery(spec) as source:
        outline = source.footprint()
        config = parse_aoi(
            {
                "name": name,
                "polygon": outline.__geo_interface__,
                "work_zoom": area.work_zoom,
                "shard_zoom": area.shard_zoom,
                "imagery": area.imagery,
                "opendata": {"kind": "vector", "path": str(area.footprints)},
            }
        )
        truth = gpd.read_file(area.footprints)
        truth["feature_id"] = truth[area.id_field].astype(str)
        prepared, _ = prepare_footprints(truth)
        out = []
        for shard, tiles in config.shards().items():
            image = source.read_shard(shard)
            if not image.valid.any():
                continue
            labels = rasterize_shard(prepared, shard).labels
            out.append((shard, image.data, labels, image.valid, tiles))
    return out


def run(
    model_name: str,
    area: str,
    seconds: float,
    steps: int | None,
    device,
    train_overrides: dict,
) -> dict[str, float]:
    import numpy as np
    import torch

    from pipeline.model.dataset import TrainingSample
    from pipeline.model.folds import plan_folds
    from pipeline.model.net import ModelSpec, build_model
    from pipeline.model.predict import predict_mosaic
    from pipeline.model.pretrained import packaged_weights
    from pipeline.model.train import TrainConfig, evaluate_counts, iou_of, train_model
    from pipeline.tiles import TILE_SIZE, block_of

    shards = area_samples(area)
    tiles = [t for *_, ts in shards for t in ts]
    plan = plan_folds(tiles, 3, seed=0)
    train, val = [], []
    for shard, image, labels, valid, ts in shards:
        keep = np.zeros_like(valid)
        for t in ts:
            r, c = block_of(t, shard)
            sl = np.s_[r * TILE_SIZE : (r + 1) * TILE_SIZE, c * TILE_SIZE : (c + 1) * TILE_SIZE]
            if plan.fold_of(t) == 0:
                if valid[sl].mean() > 0.5:
                    val.append(
                        TrainingSample(
                            image[:, sl[0], sl[1]].copy(), labels[sl].copy(), valid[sl].copy()
                        )
                    )
            else:
                keep[sl] = valid[sl]
        if keep.any():
            train.append(TrainingSample(image, labels, keep))
    candidate = dict(CANDIDATES[model_name])
    pretrained = candidate.pop("pretrained", False)
    spec = dataclasses.replace(ModelSpec(), **candidate)
    init = None
    if pretrained:  # as an AOI's training starts (pipeline.training.challenger)
        torch.manual_seed(0)
        init = build_model(spec, encoder_weights=packaged_weights(spec.encoder))
    config = TrainConfig(
        max_steps=steps, max_seconds=None if steps else seconds, val_every=0, **train_overrides
    )
    t0 = time.perf_counter()
    result = train_model(train, [], spec, config, device=device, init_from=init)
    train_s = time.perf_counter() - t0
    iou = iou_of(evaluate_counts(result.model, val, device=device))
    t0 = time.perf_counter()
    n = 0
    for _, image, _, valid, ts in shards:
        predict_mosaic(result.model, image, valid=valid, device=device)
        n += len(ts)
    predict_s = time.perf_counter() - t0
    del torch
    return {
        "iou": iou,
        "steps": result.steps,
        "steps_per_s": result.steps / train_s,
        "tiles_per_s": n / predict_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--areas", nargs="+", default=list(AREAS), choices=list(AREAS))
    parser.add_argument("--seconds", type=float, default=150.0, help="training budget per model")
    parser.add_argument("--steps", type=int, default=None, help="a step budget instead")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chip", type=int, default=None, help="training chip size")
    parser.add_argument("--batch", type=int, default=None, help="training batch size")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument(
        "--geometric",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rotations and flips in training",
    )
    args = parser.parse_args()
    overrides = {
        k: v
        for k, v in {
            "chip_size": args.chip,
            "batch_size": args.batch,
            "lr": args.lr,
            "geometric_augment": args.geometric,
        }.items()
        if v is not None
    }
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    table = {}
    for model in args.models:
        rows = [
            run(model, area, args.seconds, args.steps, device, overrides) for area in args.areas
        ]
        for area, row in zip(args.areas, rows, strict=True):
            print(
                f"{model:<12} {area:<9} IoU {row['iou']:.3f}  steps {row['steps']:5d}  "
                f"predict {row['tiles_per_s']:.1f} tiles/s",
                flush=True,
            )
        table[model] = {
            k: sum(r[k] for r in rows) / len(rows)
            for k in ("iou", "steps", "steps_per_s", "tiles_per_s")
        }
    head = f"{'model':<12} {'held-out IoU':>12} {'steps':>7} {'steps/s':>8} {'tiles/s':>8}"
    budget = f"{args.steps} steps" if args.steps else f"{args.seconds:.0f} s"
    print(f"\n{head}  ({budget} each)")
    for model, row in table.items():
        print(
            f"{model:<12} {row['iou']:12.3f} {row['steps']:7.0f} {row['steps_per_s']:8.2f} "
            f"{row['tiles_per_s']:8.1f}"
        )


if __name__ == "__main__":
    sys.exit(main())
