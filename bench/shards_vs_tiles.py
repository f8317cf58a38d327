"""Per-stage throughput on the sample AOI, and shard mosaics vs one PNG per tile.

Prints tiles/s for rasterize, predict and score the way the engine does them
(footprints prepared once, one label mosaic GeoTIFF per shard, per-tile figures
by block reduction), then the same rasterize + score work done the per-tile-file
way RoboSat.pink's ``rsp rasterize`` + ``rsp compare`` do it (each feature's tile
cover and reprojection, one paletted label PNG per tile, label and mask PNGs read
back and compared tile by tile), and the ratio of the two. Both ways start from
the same EPSG:4326 features; the mask PNGs of the per-tile way are written
beforehand (untimed), as a per-tile predictor would have left them.

    make bench     # or: .venv/bin/python bench/shards_vs_tiles.py [--size-m 1000] [--repeat 3]

Uses a temporary GEOAUDIT_HOME; the model is a freshly initialised default
U-Net (inference speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio.features
from PIL import Image
from rasterio.warp import transform as warp_transform
from shapely.geometry import mapping
from supermercado import burntiles


def _to_mercator(feature: dict) -> dict:
    """RoboSat.pink's per-feature reprojection of GeoJSON coordinates to EPSG:3857."""
    geometry = feature["geometry"]

    def ring(coords: list) -> list:
        xs, ys = warp_transform("EPSG:4326", "EPSG:3857", *zip(*coords, strict=True))
        return list(zip(xs, ys, strict=True))

    if geometry["type"] == "Polygon":
        rings = [[ring(r) for r in geometry["coordinates"]]]
    else:
        rings = [[ring(r) for r in poly] for poly in geometry["coordinates"]]
    coords = rings[0] if geometry["type"] == "Polygon" else rings
    return {**feature, "geometry": {"type": geometry["type"], "coordinates": coords}}


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
    from pipeline.model.net import ModelSpec, build_model
    from pipeline.model.predict import predict_mosaic
    from pipeline.mosaic import write_mosaic
    from pipeline.rasterize import prepare_footprints, rasterize_shard
    from pipeline.run.fetch import fetch_imagery, fetch_opendata
    from pipeline.run.inputs import read_opendata, read_shard_image
    from pipeline.run.snapshots import imagery_snapshot, opendata_snapshot
    from pipeline.sample.demo import create_sample_aoi
    from pipeline.score.metrics import qod, tile_metrics
    from pipeline.tiles import TILE_SIZE, Tile, block_of, xy_bounds

    torch.set_num_threads(os.cpu_count() or 1)
    ctx = open_context()
    info, config = create_sample_aoi(ctx, size_m=args.size_m)
    step = info.steps[0]
    img_ref = fetch_imagery(ctx, config, step)
    od_ref = fetch_opendata(ctx, config, step)
    with Session(ctx.engine) as s:
        imagery = imagery_snapshot(s, img_ref.snapshot_id)
        opendata = opendata_snapshot(s, od_ref.snapshot_id)
    footprints = read_opendata(ctx, opendata)
    shards = {sh: tiles for sh, tiles in config.shards().items() if sh.id in imagery.shards}
    images = {shard: read_shard_image(ctx, imagery.shards[shard.id]) for shard in shards}
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
    # Both ways start from the snapshot's features in EPSG:4326, as a GeoJSON file holds them.
    features_4326 = footprints.to_crs("EPSG:4326")
    geojson = [
        {"type": "Feature", "properties": {}, "geometry": mapping(g)}
        for g in features_4326.geometry
    ]

    def shard_way() -> tuple[float, float]:
        """The engine: prepare once, one label mosaic per shard, block-reduced metrics."""
        t0 = time.perf_counter()
        prepared, _ = prepare_footprints(features_4326)
        labels = {}
        for shard in shards:
            labels[shard] = rasterize_shard(prepared, shard).labels
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
    palette = [0, 0, 0, 255, 255, 255] + [0] * (256 * 3 - 6)
    cover = {tile for tiles in shards.values() for tile in tiles}

    def tile_way() -> tuple[float, float]:
        """RoboSat.pink's ``rsp rasterize`` then ``rsp compare``, one PNG per tile.

        rasterize: each feature's tile cover (supermercado burntiles) and its coordinates
        reprojected to EPSG:3857 (rasterio.warp.transform), then per tile of the cover the
        features burnt into a 256 px label written as a paletted PNG; compare: label and
        mask PNGs read back per tile, IoU and QoD (numpy here, torch in RoboSat.pink).
        """
        t0 = time.perf_counter()
        feature_map: dict = collections.defaultdict(list)
        for feature in geojson:
            for x, y, z in burntiles.burn([feature], config.work_zoom):
                feature_map[Tile(int(x), int(y), int(z))].append(_to_mercator(feature))
        for tile in cover:
            bounds = xy_bounds(tile)
            transform = rasterio.transform.from_bounds(*bounds, TILE_SIZE, TILE_SIZE)
            shapes = [(f["geometry"], 1) for f in feature_map.get(tile, [])]
            label = (
                rasterio.features.rasterize(
                    shapes, out_shape=(TILE_SIZE, TILE_SIZE), transform=transform, dtype="uint8"
                )
                if shapes
                else np.zeros((TILE_SIZE, TILE_SIZE), np.uint8)
            )
            path = tiles_dir / "labels" / f"{tile.z}/{tile.x}/{tile.y}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            out = Image.fromarray(label, mode="P")
            out.putpalette(palette)
            out.save(path, optimize=True)
        t1 = time.perf_counter()
        for tile in cover:
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
    shard_rate, tile_rate = n_tiles / (s_r + s_s), n_tiles / (t_r + t_s)
    print(f"{'rasterize+score':<22}{shard_rate:>16.1f}{tile_rate:>16.1f}{both:>7.1f}x")
    if not args.skip_predict:
        print(
            f"{'predict tiles/s':<22}{n_tiles / predict_s:>16.1f}{'':>16}{'':>8}"
            f"  (CPU threads: {torch.get_num_threads()})"
        )
    print(f"median of {args.repeat} runs; work files under {work}")


if __name__ == "__main__":
    main()
