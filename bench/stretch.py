"""What the 8-bit stretch of high-bit-depth imagery costs the model, in pixel IoU.

Trains one model on the sample town's 8-bit imagery, audits that imagery, then audits a
12-bit-in-uint16 copy of it (``v16 = 8 * v8 + 100``: linear, so an ideal stretch gives
the 8-bit image back) stretched from the current percentiles (0.5-99.5 %) and from the
old ones (2-98 %). Prints the mean tile IoU of each::

    .venv/bin/python bench/stretch.py [--steps 400] [--size-m 500]

Seeds and threads are fixed (2), so the figures repeat on another machine of the kind.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "2")

OLD_PERCENTILES = (2.0, 98.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="training steps")
    parser.add_argument("--size-m", type=float, default=500.0)
    args = parser.parse_args()

    import numpy as np
    import rasterio
    import torch
    from sqlalchemy.orm import Session

    import pipeline.sources.geotiff as geotiff
    from pipeline.aoi.registry import register_aoi
    from pipeline.context import open_context
    from pipeline.db import repo
    from pipeline.run.local import run_audit
    from pipeline.sample.demo import create_sample_aoi
    from pipeline.settings import Settings
    from pipeline.training.challenger import train_aoi_model

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="geoaudit-stretch-"))
    settings = Settings(home=work / "home", database_url=f"sqlite:///{work}/geoaudit.db")
    ctx = open_context(settings, progress=False)
    info, config = create_sample_aoi(ctx, size_m=args.size_m)
    train = config.model.train.model_copy(update={"folds": 1})
    model = config.model.model_copy(update={"train": train})
    config = register_aoi(ctx, config.model_copy(update={"model": model}))
    source_step = info.steps[0]
    train_aoi_model(ctx, config.name, [source_step], max_steps=args.steps, promote="always")

    def mean_iou(step: str) -> float:
        result = run_audit(ctx, config.name, step, repredict=True)
        with Session(ctx.engine) as s:
            tiles = repo.tile_scores_frame(s, result.run_id)
        return float(tiles.loc[tiles["valid_px"] > 0, "iou"].mean())

    eight_bit = mean_iou(source_step)
    print(f"{'imagery':<40}{'mean IoU':>10}{'vs 8-bit':>10}")
    print(f"{'8-bit (as trained)':<40}{eight_bit:>10.3f}{'':>10}")
    cases = (
        ("2030-01-01", geotiff.STRETCH_PERCENTILES, "uint16, current stretch"),
        ("2030-02-01", OLD_PERCENTILES, "uint16, old stretch"),
    )
    for step, percentiles, label in cases:
        with rasterio.open(info.imagery[source_step]) as src:
            profile, data = src.profile, src.read()
        profile.update(dtype="uint16", nodata=None)
        with rasterio.open(info.root / "imagery" / f"{step}.tif", "w", **profile) as dst:
            dst.write(data.astype(np.uint16) * 8 + 100)
        shutil.copyfile(info.opendata[source_step], info.root / "opendata" / f"{step}.geojson")
        geotiff.STRETCH_PERCENTILES = percentiles
        iou = mean_iou(step)
        name = f"{label} {percentiles[0]}-{percentiles[1]} %"
        print(f"{name:<40}{iou:>10.3f}{iou - eight_bit:>+10.3f}")


if __name__ == "__main__":
    main()
