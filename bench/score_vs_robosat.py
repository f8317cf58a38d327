"""Rasterize + score on a real area, files in to files out: GeoAudit's shard mosaics
against RoboSat.pink's tile per file, side by side.

Both ways start from the same files and end with files:

* in: the area's OSM buildings (GeoJSON, EPSG:4326) and the predictions, as each
  tool's predictor leaves them (GeoAudit: one probability mosaic GeoTIFF per shard, with
  its valid mask; RoboSat.pink: one paletted mask PNG per tile);
* out: the label rasters (GeoAudit: one label mosaic GeoTIFF per shard; RoboSat.pink:
  one paletted label PNG per tile) and a list of every tile's foreground share and QoD.

GeoAudit's way is the audit's: ``prepare_footprints`` once, ``rasterize_shard`` and
``write_mosaic`` per shard, ``read_mosaic`` of the prediction, ``tile_metrics`` by
block reduction. RoboSat.pink's way reproduces what ``rsp rasterize`` and
``rsp compare --mode list`` cost: the GeoJSON parsed with ``json``, each feature's tile
cover (supermercado) and its coordinates reprojected to EPSG:3857 (rasterio), per tile
the features burnt into a 256 px label written as a paletted PNG (``optimize=True``);
then per tile the label and mask PNGs read back and compared with PyTorch the way its
``metrics.qod`` does it (a float division of the two masks, NaN/inf/0/1 counted with
``torch.sum(...).item()``, the foreground ratio from ``torch.max``), in a thread pool of
one worker per core as ``rsp compare`` runs, and one line per tile written. Both ways
must agree on every tile's QoD (checked).

The predictions are the uncorrupted labels shifted by a few pixels (real building
shapes; the cost of either way does not depend on what the model said).

    python bench/score_vs_robosat.py [--area lalitpur] [--zoom 20] [--repeats 5]

Threads: 2 (``--threads``). The last line is the ratio in MP/s (tiles x 256² pixels per
second of the whole files-in-to-files-out run). Data: OpenAerialMap contributors
(CC BY 4.0), © OpenStreetMap contributors (ODbL 1.0); see tests/data.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures as futures
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
AREAS = {"lalitpur": DATA / "oam-lalitpur", "virac": DATA / "oam-virac"}
SHIFT_PX = (3, 2)  # the stand-in prediction: labels moved 3 px east, 2 px south


def imagery_tiles(area: Path, zoom: int) -> list:
    """The area's imagery tiles at ``zoom`` (the XYZ tree's files)."""
    from pipeline.tiles import Tile

    root = area / "tiles" / str(zoom)
    return sorted(
        Tile(int(x.name), int(y.stem), zoom)
        for x in root.iterdir()
        for y in x.iterdir()
        if y.suffix == ".png"
    )


def prepare_inputs(area: Path, zoom: int, work: Path) -> tuple[dict, list, Path]:
    """Write both tools' prediction files (untimed): per shard a probability mosaic with
    its valid mask, per tile a paletted mask PNG. Returns the shards (with their tiles in
    the area), the tiles and the GeoJSON path."""
    import geopandas as gpd
    import numpy as np
    from PIL import Image

    from pipeline.mosaic import write_mosaic
    from pipeline.rasterize import prepare_footprints, rasterize_shard
    from pipeline.tiles import TILE_SIZE, block_of, group_into_shards

    geojson = area / "buildings_osm.geojson"
    tiles = imagery_tiles(area, zoom)
    shards = group_into_shards(tiles, max(zoom - 2, 0))  # 4 x 4 tiles, as the audit's
    prepared, _ = prepare_footprints(gpd.read_file(geojson))
    (work / "masks").mkdir(parents=True)
    for shard, in_area in shards.items():
        labels = rasterize_shard(prepared, shard).labels
        prediction = np.roll(labels, SHIFT_PX[::-1], axis=(0, 1))
        valid = np.zeros(labels.shape, bool)
        for tile in in_area:
            r, c = block_of(tile, shard)
            sl = np.s_[r * TILE_SIZE : (r + 1) * TILE_SIZE, c * TILE_SIZE : (c + 1) * TILE_SIZE]
            valid[sl] = True
            path = work / "masks" / f"{tile.z}/{tile.x}/{tile.y}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            _save_paletted(Image, prediction[sl], path)
        write_mosaic(
            work / f"prob-{shard.id}.tif",
            prediction.astype(np.float32),
            shard,
            kind="prob",
            valid=valid,
        )
    return shards, tiles, geojson


_PALETTE = [0, 0, 0, 255, 255, 255] + [0] * (256 * 3 - 6)


def _save_paletted(image_module, array, path: Path) -> None:
    """A 0/1 raster as RoboSat.pink writes labels and masks: a paletted PNG, optimized."""
    out = image_module.fromarray(array.astype("uint8"), mode="P")
    out.putpalette(_PALETTE)
    out.save(path, optimize=True)


def geoaudit_way(shards: dict, geojson: Path, work: Path, out: Path) -> dict:
    """Files in to files out the audit's way; returns ``{tile: qod}``."""
    import geopandas as gpd

    from pipeline.mosaic import read_mosaic, write_mosaic
    from pipeline.rasterize import prepare_footprints, rasterize_shard
    from pipeline.score.metrics import tile_metrics
    from pipeline.tiles import block_of

    prepared, _ = prepare_footprints(gpd.read_file(geojson))
    lines, qods = [], {}
    for shard, tiles in shards.items():
        labels = rasterize_shard(prepared, shard).labels
        write_mosaic(out / f"label-{shard.id}.tif", labels, shard, kind="label")
        stored, valid = read_mosaic(work / f"prob-{shard.id}.tif")
        metrics = tile_metrics(labels, stored, valid=valid)
        for tile in tiles:
            r, c = block_of(tile, shard)
            fg = 100.0 * max(metrics.fg_label[r, c], metrics.fg_pred[r, c])
            qods[tile] = float(metrics.qod[r, c])
            lines.append(f"{tile.x},{tile.y},{tile.z}\t{fg:.1f}\t{qods[tile]:.1f}")
    (out / "tiles.tsv").write_text("\n".join(lines) + "\n")
    return qods


def _to_mercator(feature: dict) -> dict:
    """A feature's coordinates reprojected to EPSG:3857 (rasterio.warp, per ring)."""
    from rasterio.warp import transform as warp_transform

    geometry = feature["geometry"]
    polygons = (
        [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    )

    def ring_3857(ring: list) -> list:
        xs, ys = warp_transform("EPSG:4326", "EPSG:3857", *zip(*ring, strict=True))
        return list(zip(xs, ys, strict=True))

    projected = [[ring_3857(ring) for ring in polygon] for polygon in polygons]
    coordinates = projected[0] if geometry["type"] == "Polygon" else projected
    return {**feature, "geometry": {"type": geometry["type"], "coordinates": coordinates}}


def _torch_qod(label, mask) -> tuple[float, float]:
    """Foreground ratio and QoD of one tile the way RoboSat.pink's ``metrics.qod``
    computes them: the label divided by the mask as floats, NaN (0/0) = true negative,
    inf = false negative, 0 = false positive, 1 = true positive."""
    import torch

    confusion = label.view(-1).float() / mask.view(-1).float()
    fn = torch.sum(confusion == float("inf")).item()
    fp = torch.sum(confusion == 0).item()
    tp = torch.sum(confusion == 1).item()
    torch.sum(torch.isnan(confusion)).item()  # true negatives, counted as it does
    iou = tp / (tp + fn + fp) if tp + fn + fp else float("nan")
    width, height = mask.size()
    ratio = float(100 * torch.max(torch.sum(mask != 0), torch.sum(label != 0)) / (width * height))
    dist = 0.0 if iou != iou else 1.0 - iou
    qod = 100 - (dist * (math.log(ratio + 1.0) + 1e-7) * (100 / math.log(100)))
    return ratio, max(qod, 0.0)


def robosat_way(tiles: list, geojson: Path, work: Path, out: Path, workers: int) -> dict:
    """Files in to files out the RoboSat.pink way; returns ``{tile: qod}``."""
    import numpy as np
    import rasterio.features
    import rasterio.transform
    import torch
    from PIL import Image
    from supermercado import burntiles

    from pipeline.tiles import TILE_SIZE, Tile, xy_bounds

    # rsp rasterize
    zoom = tiles[0].z
    features = json.loads(geojson.read_text())["features"]
    by_tile: dict = collections.defaultdict(list)
    for feature in features:
        for x, y, z in burntiles.burn([feature], zoom):
            by_tile[Tile(int(x), int(y), int(z))].append(_to_mercator(feature))
    for tile in tiles:
        transform = rasterio.transform.from_bounds(*xy_bounds(tile), TILE_SIZE, TILE_SIZE)
        shapes = [(f["geometry"], 1) for f in by_tile.get(tile, [])]
        label = (
            rasterio.features.rasterize(
                shapes, out_shape=(TILE_SIZE, TILE_SIZE), transform=transform, dtype="uint8"
            )
            if shapes
            else np.zeros((TILE_SIZE, TILE_SIZE), np.uint8)
        )
        path = out / "labels" / f"{tile.z}/{tile.x}/{tile.y}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        _save_paletted(Image, label, path)

    # rsp compare --mode list
    def compare(tile) -> tuple:
        rel = f"{tile.z}/{tile.x}/{tile.y}.png"
        label = np.array(Image.open(out / "labels" / rel))
        mask = np.array(Image.open(work / "masks" / rel))
        ratio, qod = _torch_qod(torch.as_tensor(label), torch.as_tensor(mask))
        return tile, ratio, qod

    with futures.ThreadPoolExecutor(workers) as pool:
        rows = list(pool.map(compare, tiles))
    with open(out / "tiles.tsv", "w") as listing:
        for tile, ratio, qod in rows:
            listing.write(f"{tile.x},{tile.y},{tile.z}\t{ratio:.1f}\t{qod:.1f}{os.linesep}")
    return {tile: qod for tile, _, qod in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--area", choices=list(AREAS), default="lalitpur")
    parser.add_argument("--zoom", type=int, default=20, help="tile zoom (the samples: 19, 20)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GDAL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="geoaudit-score-bench-"))
    shards, tiles, geojson = prepare_inputs(AREAS[args.area], args.zoom, work)
    megapixels = len(tiles) * 256 * 256 / 1e6
    print(
        f"{args.area} z{args.zoom}: {len(tiles)} tiles ({megapixels:.2f} MP) in "
        f"{len(shards)} shards, {args.threads} threads, median of {args.repeats}"
    )

    times: dict[str, list[float]] = {"GeoAudit": [], "RoboSat.pink": []}
    results: dict[str, dict] = {}
    for i in range(args.repeats + 1):  # the first round warms caches and imports
        order = ["GeoAudit", "RoboSat.pink"] if i % 2 == 0 else ["RoboSat.pink", "GeoAudit"]
        for name in order:
            out = Path(tempfile.mkdtemp(dir=work))
            t0 = time.perf_counter()
            if name == "GeoAudit":
                results[name] = geoaudit_way(shards, geojson, work, out)
            else:
                results[name] = robosat_way(tiles, geojson, work, out, args.threads)
            if i:
                times[name].append(time.perf_counter() - t0)
    worst = max(abs(results["GeoAudit"][t] - results["RoboSat.pink"][t]) for t in tiles)
    if worst > 0.1:
        sys.exit(f"the two ways disagree: QoD differs by up to {worst:.2f} on a tile")
    rates = {}
    for name, values in times.items():
        median = statistics.median(values)
        rates[name] = megapixels / median
        print(
            f"  {name:13s} {median * 1000:8.1f} ms  {rates[name]:7.1f} MP/s  "
            f"({len(tiles) / median:.0f} tiles/s)"
        )
    print(f"  every tile's QoD agrees within {worst:.2f}")
    ratio = rates["GeoAudit"] / rates["RoboSat.pink"]
    print(
        f"rasterize + score, files in to files out: GeoAudit {rates['GeoAudit']:.1f} MP/s, "
        f"RoboSat.pink {rates['RoboSat.pink']:.1f} MP/s: {ratio:.1f}x"
    )


if __name__ == "__main__":
    main()
