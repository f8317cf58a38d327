"""Per-stage throughput on the sample AOI, and shard mosaics vs one PNG per tile.

Prints tiles/s for rasterize, predict and score the way the engine does them
(one mosaic per shard, per-tile figures by block reduction), then the same
rasterize + score work done the per-tile-file way RoboSat.pink does it (one
label PNG per tile written by rasterizing that tile alone, label and mask PNGs
read back and compared tile by tile), and the ratio of the two.

    .venv/bin/python bench/shards_vs_tiles.py [--size-m 1000] [--repeat 3]

Uses a temporary GEOAUDIT_HOME; the model is a freshly initialised default
U-Net (inference speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio.features
from PIL import Image
from shapely.geometry import box


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-m", type=float, default=1000.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-predict", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="geoaudit-bench-"))
    os.environ["GEOAUDIT_HOME"] = str(home)
    import torch
    from sqlalchemy.orm import Session

    from pipeline.context import open_context
    from pipeline.db import repo
    from pipeline.demo import create_sample_aoi
    from pipeline.fetch import fetch_imagery, fetch_opendata, read_opendata
    from pipeline.model.net import ModelSpec, build_model
    from pipeline.model.predict import predict_mosaic
    from pipeline.mosaic import read_mosaic, write_mosaic
    from pipeline.rasterize import rasterize_shard
    from pipeline.score.metrics import qod, tile_metrics
    from pipeline.tiles import TILE_SIZE, block_of, xy_bounds

    torch.set_num_threads(os.cpu_count() or 1)
    ctx = open_context()
    info, config = create_sample_aoi(ctx, size_m=args.size_m)
    step = info.steps[0]
    img_ref = fetch_imagery(ctx, config, step)
    od_ref = fetch_opendata(ctx, config, step)
    with Session(ctx.engine) as s:
        img_meta = dict(repo.get_snapshot(s, img_ref.id).meta)["shards"]
        od_meta = dict(repo.get_snapshot(s, od_ref.id).meta)
    footprints = read_opendata(ctx, od_meta)
    shards = {sh: tiles for sh, tiles in config.shards().items() if sh.id in img_meta}
    images = {}
    for shard in shards:
        with ctx.store.readable_path(img_meta[shard.id]["key"]) as p:
            images[shard] = read_mosaic(p)
    n_tiles = sum(len(t) for t in shards.values())
    print(
        f"sample: {args.size_m:.0f} m, {len(shards)} shards, {n_tiles} tiles at z{config.work_zoom}"
    )

    # Predictions (the input both ways compare against): a real model forward pass.
    model = build_model(ModelSpec()).eval()
    preds = {}
    t0 = time.perf_counter()
    for shard, (image, valid) in images.items():
        if args.skip_predict:
            preds[shard] = (image.mean(axis=0) > 140).astype(np.float32)
        else:
            preds[shard] = predict_mosaic(model, image, valid=valid, device=torch.device("cpu"))
    predict_s = time.perf_counter() - t0
    masks = {sh: p >= 0.5 for sh, p in preds.items()}

    work = Path(tempfile.mkdtemp(prefix="geoaudit-bench-work-"))

    def shard_way() -> tuple[float, float]:
        t0 = time.perf_counter()
        labels = {}
        for shard in shards:
            labels[shard] = rasterize_shard(footprints, shard).labels
            write_mosaic(work / f"label-{shard.id}.tif", labels[shard], shard, kind="label")
        t1 = time.perf_counter()
        for shard in shards:
            tile_metrics(labels[shard], masks[shard], valid=images[shard][1])
        return t1 - t0, time.perf_counter() - t1

    # Per-tile-file way: the mask PNGs exist beforehand (a per-tile predictor writes them).
    tiles_dir = work / "tiles"
    for shard, tiles in shards.items():
        for tile in tiles:
            r, c = block_of(tile, shard)
            sl = np.s_[r * TILE_SIZE : (r + 1) * TILE_SIZE, c * TILE_SIZE : (c + 1) * TILE_SIZE]
            path = tiles_dir / "masks" / f"{tile.z}/{tile.x}/{tile.y}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(masks[shard][sl].astype(np.uint8)).save(path)
    merc = footprints.to_crs("EPSG:3857")
    sindex = merc.sindex

    def tile_way() -> tuple[float, float]:
        t0 = time.perf_counter()
        for tiles in shards.values():
            for tile in tiles:
                bounds = xy_bounds(tile)
                hits = merc.geometry.iloc[sindex.query(box(*bounds), predicate="intersects")]
                transform = rasterio.transform.from_bounds(*bounds, TILE_SIZE, TILE_SIZE)
                label = (
                    rasterio.features.rasterize(
                        list(hits),
                        out_shape=(TILE_SIZE, TILE_SIZE),
                        transform=transform,
                        dtype="uint8",
                    )
                    if len(hits)
                    else np.zeros((TILE_SIZE, TILE_SIZE), np.uint8)
                )
                path = tiles_dir / "labels" / f"{tile.z}/{tile.x}/{tile.y}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(label).save(path)
        t1 = time.perf_counter()
        for tiles in shards.values():
            for tile in tiles:
                rel = f"{tile.z}/{tile.x}/{tile.y}.png"
                label = np.asarray(Image.open(tiles_dir / "labels" / rel)) > 0
                mask = np.asarray(Image.open(tiles_dir / "masks" / rel)) > 0
                inter = np.logical_and(label, mask).sum()
                union = np.logical_or(label, mask).sum()
                iou = inter / union if union else 1.0
                fg = 100.0 * max(label.sum(), mask.sum()) / label.size
                qod(iou, fg)
        return t1 - t0, time.perf_counter() - t1

    shard_runs = [shard_way() for _ in range(args.repeat)]
    tile_runs = [tile_way() for _ in range(args.repeat)]
    s_r, s_s = (statistics.median(x) for x in zip(*shard_runs, strict=True))
    t_r, t_s = (statistics.median(x) for x in zip(*tile_runs, strict=True))

    print(f"{'stage':<22}{'shard mosaics':>16}{'tile per file':>16}{'ratio':>8}")
    print(
        f"{'rasterize tiles/s':<22}{n_tiles / s_r:>16.1f}{n_tiles / t_r:>16.1f}{t_r / s_r:>7.1f}x"
    )
    print(f"{'score tiles/s':<22}{n_tiles / s_s:>16.1f}{n_tiles / t_s:>16.1f}{t_s / s_s:>7.1f}x")
    both = (t_r + t_s) / (s_r + s_s)
    print(
        f"{'rasterize+score':<22}{n_tiles / (s_r + s_s):>16.1f}{n_tiles / (t_r + t_s):>16.1f}{both:>7.1f}x"
    )
    if not args.skip_predict:
        print(
            f"{'predict tiles/s':<22}{n_tiles / predict_s:>16.1f}{'':>16}{'':>8}  (CPU threads: {torch.get_num_threads()})"
        )
    print(f"median of {args.repeat} runs; work files under {work}")


if __name__ == "__main__":
    main()
