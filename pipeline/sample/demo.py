"""``geoaudit demo``: sample town → train → audit step 1 → audit step 2 → summary.

The summary scores what the audit found against the sample's truth file and is
written to ``$GEOAUDIT_HOME/demo/summary.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
from sqlalchemy.orm import Session

from pipeline.aoi.config import AoiConfig, parse_aoi
from pipeline.aoi.registry import register_aoi
from pipeline.context import Context
from pipeline.db import repo
from pipeline.run.local import AuditResult, run_audit
from pipeline.sample import (
    LATER_IMAGERY_STEP,
    SampleInfo,
    add_later_imagery,
    create_sample,
    evaluate_against_truth,
)
from pipeline.training.challenger import train_aoi_model

log = logging.getLogger(__name__)
SAMPLE_AOI = "sample-town"
# The demo trains a fixed number of steps per fold model (3 folds), with no time cap: a
# cap would stop a slower machine earlier and change every figure. ~1200 steps in all
# take ~3.5 minutes on 2 CPU cores.
DEMO_FOLDS = 3
DEMO_TRAIN_STEPS = 400
DEMO_TRAIN_CAP_S: float | None = None
DEMO_THREADS = 2


def sample_aoi_config(
    info: SampleInfo, *, name: str = SAMPLE_AOI, work_zoom: int = 18, shard_zoom: int = 16
) -> AoiConfig:
    """AOI configuration for a generated sample (sources point at its files)."""
    return parse_aoi(
        {
            "name": name,
            "description": (
                "Synthetic sample town with injected open-data defects (geoaudit sample create)."
            ),
            "bbox": list(info.bbox),
            "work_zoom": work_zoom,
            "shard_zoom": shard_zoom,
            "imagery": {"kind": "geotiff", "path": str(info.root / "imagery" / "{step}.tif")},
            "opendata": {
                "kind": "vector",
                "path": str(info.root / "opendata" / "{step}.geojson"),
                "id_field": "id",
            },
            "steps": list(info.steps),
            "schedule": "@weekly",
            "tags": ["sample"],
            "model": {
                # the CPU-fast network: the demo's 6-minute budget on 2 cores and its
                # documented figures are measured with it (AOIs default to a pretrained one)
                "encoder": "tu-mobilenetv3_small_100",
                "train": {
                    "folds": DEMO_FOLDS,
                    "max_steps": DEMO_TRAIN_STEPS,
                    # the synthetic town is lit from one direction and its documented
                    # figures (README, CI bounds) are measured without rotations/flips
                    "geometric_augment": False,
                },
            },
        },
        source=f"sample AOI {name!r}",
    )


def create_sample_aoi(
    ctx: Context,
    root: Path | None = None,
    *,
    size_m: float = 1000.0,
    seed: int = 7,
    name: str = SAMPLE_AOI,
) -> tuple[SampleInfo, AoiConfig]:
    """Generate the sample town below ``root`` (default ``$GEOAUDIT_HOME/sample``); register it."""
    root = root or ctx.settings.home / "sample"
    info = create_sample(root, seed=seed, size_m=size_m, progress=ctx.progress)
    config = register_aoi(ctx, sample_aoi_config(info, name=name))
    return info, config


@dataclass
class DemoResult:
    """The demo's summary and where it was written."""

    summary: dict[str, Any]
    path: Path


def _frames(
    ctx: Context, results: list[AuditResult]
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    findings, changes, hotspots = [], [], []
    with Session(ctx.engine) as s:
        for res in results:
            f = repo.findings_frame(s, res.run_id)
            f["step"] = res.step
            findings.append(f)
            c = repo.changes_frame(s, res.run_id)
            c["step"] = res.step
            changes.append(c)
            h = repo.hotspots_frame(s, res.run_id)
            h["step"] = res.step
            hotspots.append(h)

    def cat(parts: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
        return gpd.GeoDataFrame(
            pd.concat(parts, ignore_index=True), geometry="geometry", crs="EPSG:4326"
        )

    return cat(findings), cat(changes), cat(hotspots)


def run_demo(
    ctx: Context,
    *,
    size_m: float = 1000.0,
    train_steps: int | None = DEMO_TRAIN_STEPS,
    train_seconds: float | None = DEMO_TRAIN_CAP_S,
    out_dir: Path | None = None,
) -> DemoResult:
    """Run the whole demo and write the summary JSON.

    Each fold model trains ``train_steps`` steps (the whole training stops earlier only at
    ``train_seconds``, when given). Threads and kernels are fixed
    (:func:`pipeline.model.device.repeatable`) so the figures repeat on another machine.
    The re-audit of the last step shows the cost of an audit whose inputs did not change.
    """
    from pipeline.model.device import repeatable

    repeatable(DEMO_THREADS)
    t_start = time.perf_counter()
    stages: dict[str, dict[str, float]] = {}

    t0 = time.perf_counter()
    info, config = create_sample_aoi(ctx, size_m=size_m)
    n_tiles = len(config.tiles())
    stages["sample"] = {"seconds": time.perf_counter() - t0, "tiles_per_s": 0.0}

    t0 = time.perf_counter()
    trained = train_aoi_model(
        ctx,
        config.name,
        [info.steps[0]],
        max_seconds=train_seconds,
        max_steps=train_steps,
        promote="always",
    )
    stages["train"] = {"seconds": time.perf_counter() - t0, "tiles_per_s": 0.0}

    audits = [run_audit(ctx, config.name, step) for step in info.steps]
    for res in audits:
        for stage, fig in res.summary.stage_seconds.items():
            agg = stages.setdefault(stage, {"seconds": 0.0, "tiles": 0.0})
            agg["seconds"] += fig["seconds"]
            agg["tiles"] = agg.get("tiles", 0.0) + n_tiles
    for fig in stages.values():
        tiles = fig.pop("tiles", 0.0)
        if tiles:
            fig["tiles_per_s"] = round(tiles / fig["seconds"], 2) if fig["seconds"] else 0.0
        fig["seconds"] = round(fig["seconds"], 3)

    rerun = run_audit(ctx, config.name, info.steps[-1])
    first = audits[-1]
    # a later flight, not audited here: the next scheduled audit finds it new
    later = add_later_imagery(info, size_m=size_m)

    findings, changes, hotspots = _frames(ctx, audits)
    top_k = config.thresholds.hotspot_top_k
    scores = evaluate_against_truth(info.truth, findings, changes, hotspots, top_k=top_k)
    summary: dict[str, Any] = {
        **scores,
        "model": {
            "val_iou": round(trained.val_iou, 4),
            "model_version_id": trained.model_version_id,
            "train_seconds": round(trained.seconds, 1),
            "train_steps": trained.steps,
        },
        "stages": stages,
        "cache": {
            "first_seconds": round(first.seconds, 3),
            "rerun_seconds": round(rerun.seconds, 3),
            "rerun_ratio": round(rerun.seconds / first.seconds, 4) if first.seconds else None,
            "rerun_predicted_shards": rerun.predicted_shards,
            "rerun_cache_hits": rerun.cache_hits,
            "rerun_reused_run": rerun.reused,
            "rerun_run_id": rerun.run_id,
        },
        "runs": [
            {
                "run_id": r.run_id,
                "step": r.step,
                "seconds": round(r.seconds, 3),
                **r.summary.aggregates,
            }
            for r in audits
        ],
        "later_imagery": {"step": LATER_IMAGERY_STEP, "path": str(later)},
        "tiles": n_tiles,
        "total_seconds": round(time.perf_counter() - t_start, 2),
    }
    out_dir = out_dir or ctx.settings.home / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    path.write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
    return DemoResult(summary=summary, path=path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
