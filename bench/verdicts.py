"""Verdicts on real imagery: plant known errors into real OpenStreetMap footprints, audit
as a user would, and measure what the audit finds.

For each real area of ``tests/data`` (OpenAerialMap tiles of Lalitpur and Virac with
their OSM buildings, the SpaceNet 4 Atlanta GeoTIFF with its footprints), with a seed:
delete 15% of the buildings on the imagery, add 10% phantom footprints where the
imagery shows no building, shift 10% by 2-4 m (:mod:`pipeline.sample.plant`); register
the AOI over the imagery with the corrupted open data, train its model
(``geoaudit train``), audit it (``geoaudit audit``), and print per area and overall:

* recall of deleted buildings among the first 2N ``missing_in_opendata`` findings of the
  review queue (IoU > 0.3, and by point), the same for phantoms
  (``unsupported_by_imagery``) and shifted buildings (``misaligned``);
* precision of those findings;
* pixel IoU of the predictions against the uncorrupted footprints.

    python bench/verdicts.py [--areas lalitpur virac atlanta] [--seed 0] [--steps N]
                             [--folds K] [--base] [--no-geometric] [--encoder NAME]

Threads are fixed (``--threads``, default 2) and seeds fixed, so the figures repeat on
another machine of the same kind. Data: OpenAerialMap contributors (CC BY 4.0),
© OpenStreetMap contributors (ODbL 1.0), SpaceNet 4 (CC BY-SA 4.0); see tests/data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
STEP = "2025-06-01"


@dataclass(frozen=True)
class Area:
    """A real area: its imagery source, footprints and tiling."""

    imagery: dict[str, Any]
    footprints: Path
    id_field: str
    work_zoom: int
    shard_zoom: int


AREAS = {
    "lalitpur": Area(
        {"kind": "xyz", "path": str(DATA / "oam-lalitpur" / "tiles"), "zoom": 19},
        DATA / "oam-lalitpur" / "buildings_osm.geojson",
        "osm_id",
        19,
        17,
    ),
    "virac": Area(
        {"kind": "xyz", "path": str(DATA / "oam-virac" / "tiles"), "zoom": 19},
        DATA / "oam-virac" / "buildings_osm.geojson",
        "osm_id",
        19,
        17,
    ),
    "atlanta": Area(
        {
            "kind": "geotiff",
            "path": str(DATA / "spacenet4-atlanta" / "pan_0.5m_epsg32616.tif"),
            "bands": [1],
        },
        DATA / "spacenet4-atlanta" / "buildings.geojson",
        "osm_id",
        18,
        16,
    ),
}


@dataclass
class Registered:
    """An area registered as an AOI over its imagery, with its planted errors."""

    name: str
    config: Any
    planted: Any
    truth: Any


def register_area(ctx: Any, name: str, area: Area, args: argparse.Namespace) -> Registered:
    """Plant errors into the area's footprints and register it as an AOI."""
    from shapely.geometry import mapping

    from pipeline.aoi import parse_aoi
    from pipeline.aoi.registry import register_aoi
    from pipeline.sample.plant import PlantConfig, plant_errors
    from pipeline.sources import open_imagery, open_vector
    from pipeline.sources.specs import GeoTiffSpec, VectorSpec, XyzSpec

    spec = (XyzSpec if area.imagery["kind"] == "xyz" else GeoTiffSpec)(**area.imagery)
    with open_imagery(spec) as source:
        outline = source.footprint()
    # ids as an audit reads them (footprints without an id get geometry ids)
    with open_vector(VectorSpec(path=str(area.footprints), id_field=area.id_field)) as src:
        truth = src.read()
    planted = plant_errors(truth, outline, PlantConfig(seed=args.seed))
    corrupted = ctx.settings.home / f"{name}-opendata.geojson"
    planted.opendata.to_file(corrupted, driver="GeoJSON")
    config = register_aoi(
        ctx,
        parse_aoi(
            {
                "name": name,
                "polygon": mapping(outline),
                "work_zoom": area.work_zoom,
                "shard_zoom": area.shard_zoom,
                "imagery": area.imagery,
                "opendata": {"kind": "vector", "path": str(corrupted), "id_field": "feature_id"},
                "steps": [STEP],
                "model": {
                    "encoder": args.encoder,
                    "train": {"folds": args.folds, "geometric_augment": args.geometric},
                },
            }
        ),
    )
    return Registered(name, config, planted, truth)


def audit_area(ctx: Any, area: Registered, others: list[str], args: argparse.Namespace) -> dict:
    """Train (from a base model of the other areas with ``--base``), audit and score."""
    from sqlalchemy.orm import Session

    from pipeline.aoi.registry import register_aoi
    from pipeline.db import repo
    from pipeline.run.local import run_audit
    from pipeline.sample.verdicts import pixel_iou_against, score_planted
    from pipeline.training.challenger import train_aoi_model, train_base_model

    config = area.config
    t0 = time.perf_counter()
    base_iou = None
    if args.base and others:
        base = train_base_model(ctx, others, name=f"base-{area.name}", max_steps=args.base_steps)
        base_iou = base.val_iou
        model = config.model.model_copy(update={"base": f"base-{area.name}"})
        config = register_aoi(ctx, config.model_copy(update={"model": model}))
    trained = train_aoi_model(
        ctx, config.name, [STEP], max_steps=args.steps, max_seconds=1e6, promote="always"
    )
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = run_audit(ctx, config.name, STEP)
    audit_s = time.perf_counter() - t0
    with Session(ctx.engine) as s:
        findings = repo.findings_frame(s, result.run_id)
    return {
        "area": area.name,
        "tiles": len(config.tiles()),
        "on_imagery": len(area.planted.on_imagery),
        "val_iou": trained.val_iou,
        "base_val_iou": base_iou,
        "folds": args.folds,
        "pixel_iou": pixel_iou_against(ctx, result.run_id, area.truth),
        "train_s": round(train_s, 1),
        "audit_s": round(audit_s, 1),
        **score_planted(area.planted, findings),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--areas", nargs="+", default=list(AREAS), choices=list(AREAS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the planted errors")
    parser.add_argument("--steps", type=int, default=None, help="training steps per fold model")
    parser.add_argument("--folds", type=int, default=3, help="fold models (1: one model)")
    parser.add_argument(
        "--base", action="store_true", help="start from a base model of the other areas"
    )
    parser.add_argument(
        "--geometric",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rotations and flips of the training chips (the AOI default: on)",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="the AOI's model.encoder (e.g. tu-tf_efficientnet_lite0: from packaged ImageNet "
        "weights); default: the AOI default",
    )
    parser.add_argument("--base-steps", type=int, default=1500, help="base model steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from pipeline.context import open_context
    from pipeline.settings import Settings

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="geoaudit-verdicts-") as tmp:
        ctx = open_context(Settings(home=Path(tmp)))
        areas = [register_area(ctx, name, AREAS[name], args) for name in AREAS]
        for area in areas:
            if area.name not in args.areas:
                continue
            others = [a.name for a in areas if a.name != area.name]
            rows.append(audit_area(ctx, area, others, args))
            print(_line(rows[-1]), flush=True)
    overall = _overall(rows)
    print(_line(overall))
    if args.out:
        args.out.write_text(json.dumps({"areas": rows, "overall": overall}, indent=2))


def _overall(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall pooled over areas (weighted by planted errors), IoU and precision averaged."""
    out: dict[str, Any] = {"area": "overall"}
    for kind in ("deleted", "phantoms", "shifted"):
        n = sum(r[kind]["planted"] for r in rows)
        out[kind] = {
            "planted": n,
            "findings": sum(r[kind]["findings"] for r in rows),
            "recall_top2n": sum(r[kind]["recall_top2n"] * r[kind]["planted"] for r in rows) / n,
            "recall_top2n_by_point": sum(
                r[kind]["recall_top2n_by_point"] * r[kind]["planted"] for r in rows
            )
            / n,
            "precision": sum(r[kind]["precision"] for r in rows) / len(rows),
        }
    out["pixel_iou"] = sum(r["pixel_iou"] for r in rows) / len(rows)
    out["val_iou"] = sum(r["val_iou"] for r in rows) / len(rows)
    return out


def _line(r: dict[str, Any]) -> str:
    def k(kind: str) -> str:
        d = r[kind]
        return (
            f"{kind} {d['recall_top2n']:.2f}/{d['recall_top2n_by_point']:.2f} "
            f"p{d['precision']:.2f} (n{d['planted']}, f{d['findings']})"
        )

    return (
        f"{r['area']:<9} pixel IoU {r['pixel_iou']:.3f}  val {r['val_iou']:.3f}  "
        f"{k('deleted')}  {k('phantoms')}  {k('shifted')}"
    )


if __name__ == "__main__":
    sys.exit(main())
