"""How far a model agrees with the AOI's reviewers: for every finding with a verdict,
would the model make that finding again (:func:`pipeline.training.promotion.agrees`)?

The model predicts the finding's work tile (with the fold model that did not train on
it, and ``margin`` px of context) on the imagery of the run the finding came from; its
predicted share is the share of the finding's pixels with probability >= 0.5.
"""

from __future__ import annotations

from collections import defaultdict

import geopandas as gpd
import numpy as np
from rasterio.features import geometry_mask
from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig
from pipeline.context import Context
from pipeline.db import repo
from pipeline.model.folds import FoldSet
from pipeline.run.inputs import load_run_inputs, read_shard_image
from pipeline.tiles import Tile, block_of, shard_of, shard_transform
from pipeline.training.promotion import agrees


def reviewer_agreement(ctx: Context, config: AoiConfig, folds: FoldSet) -> tuple[int, int]:
    """``(agreed, reviewed)`` over the AOI's reviewed findings that test a model."""
    from pipeline.model.predict import predict_tiles

    with Session(ctx.engine) as s:
        reviewed = repo.reviewed_findings(s, repo.get_aoi(s, config.name).id)
    if not reviewed:
        return 0, 0
    by_run: dict[int, list] = defaultdict(list)
    for r in reviewed:
        by_run[r.run_id].append(r)
    agreed = counted = 0
    for run_id, rows in by_run.items():
        inputs = load_run_inputs(ctx, run_id)
        for row in rows:
            tile = Tile(row.tile_x, row.tile_y, row.tile_z)
            shard = shard_of(tile, inputs.aoi.shard_zoom)
            ref = inputs.imagery.shards.get(shard.id)
            if ref is None:
                continue
            image = read_shard_image(ctx, ref)
            r, q = block_of(tile, shard)
            prob = predict_tiles(folds.model_for(tile), image.data, [(r, q)], device=ctx.device)
            geom = gpd.GeoSeries([row.geometry], crs="EPSG:4326").to_crs("EPSG:3857").iloc[0]
            inside = geometry_mask(
                [geom], out_shape=prob.shape, transform=shard_transform(shard), invert=True
            )
            inside &= image.valid
            if not inside.any():
                continue
            share = float(np.mean(prob[inside] >= 0.5))
            verdict = agrees(row.kind, row.verdict, share)
            if verdict is not None:
                counted += 1
                agreed += int(verdict)
    return agreed, counted
