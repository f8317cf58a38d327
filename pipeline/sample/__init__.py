"""Synthetic sample AOI: a small town over two time steps, with known open-data errors.

``create_sample(root)`` writes a deterministic (same seed ⇒ same bytes) test
area that the whole pipeline can run on without any download, and
``evaluate_against_truth`` scores an audit's findings against what was injected.

What is generated (``size_m`` = 1000, the default, gives ~1 km²)
-----------------------------------------------------------------
* ``imagery/<step>.tif`` — RGB uint8 GeoTIFF in UTM 32N (EPSG:32632), centred
  near lon 8.55 / lat 47.37, ``resolution_m`` per pixel (0.4 m: 2500 x 2500 px),
  tiled 256 x 256, deflate, overviews 2/4/8. The town: a rotated street grid
  with a diagonal avenue and a curved road (asphalt, sidewalks, lane markings),
  a dense centre, housing around it, an industrial corner with warehouses and
  paved yards, parks with paths, crop fields at the fringe; 520-600 buildings
  per km² (rectangles, L and T shapes, 6-40 m, street-aligned with some at
  random angles; gable / hip roofs shaded per face with a ridge line, flat
  roofs with parapets and rooftop units; terracotta, grey, slate, brown,
  light, metal), shadows cast in a fixed sun direction, ~2-3k textured trees
  (some over roofs), parking lots, driveways, grass with dry and bare patches.
  Step 2 has a slightly different sun and colour balance.
* Changes between the steps (all outside the hotspots): 4.5-5.5 % of the
  step-1 count built on lots that were empty (with a ring of construction
  soil), 3.5-4.5 % demolished (rubble where they stood).
* ``truth/buildings_<step>.geojson`` — true footprints (EPSG:4326, ``truth_id``).
* ``opendata/<step>.geojson`` — the "open data" (EPSG:4326, ``id``, ``building``)
  with injected, recorded defects:

  - **omitted**: 3 hotspots (discs 100-150 m across in a 1 km town, scaled with
    ``size_m``, never below 60 m) where 62-78 % of the buildings are left out,
    plus 0.4-0.8 % of the buildings scattered elsewhere;
  - **phantom**: 2.8-3.2 % extra house-sized polygons on open grass/soil
    (>= 3 m from any true building of either step, off roads, paved areas,
    tree trunks);
  - **misaligned**: 3.8-4.2 % of the mapped polygons shifted 3-5 m, or (30 %
    of those >= 14 m long) rotated 10-15 degrees about their centroid;
  - **stale** (step 2 only): 40 % of the new buildings are missing
    (``new_missing``) and 40 % of the demolished ones still mapped
    (``demolished_still_mapped``); the other changes are reflected (new ids
    for added buildings, removed features gone).

  Step-2 open data keeps the step-1 defects; unchanged features keep their ids.
* ``truth.json`` — seed, CRS, steps, bbox, hotspots (polygons), every defect
  per step it is present in (``kind``, ``truth_id``, ``opendata_id``, geometry
  in EPSG:4326, ``detail``), every change (``appeared`` / ``disappeared``,
  ``reflected_in_opendata``) and counts.

Seed 7 at 1000 m (0.4 m, 2500 x 2500 px): 542 buildings at step 1 and 545
at step 2 (27 built, 24 demolished), 2177 trees; defects per step: 42
omitted (38 in hotspots 110-137 m across holding 14-21 buildings each, 4
scattered), 16 phantoms, 19 misaligned (4 rotated), and at step 2 21 stale
(11 new missing, 10 demolished still mapped). Generation takes ~9 s of CPU
(~2 s layout, ~1 s textures, ~2.5 s rendering + 0.6 s writing per step),
peak memory ~0.7 GB; 34 MB of imagery.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.progress import progress_bar
from pipeline.sample.evaluate import evaluate_against_truth
from pipeline.sample.opendata import (
    lonlat_converter,
    opendata_collection,
    snapshots,
    town_bbox,
    truth_collection,
    truth_record,
    write_feature_collection,
)
from pipeline.sample.render import render_step, world_textures, write_geotiff
from pipeline.sample.town import build_town, plan_defects

__all__ = [
    "LATER_IMAGERY_STEP",
    "STEPS",
    "SampleInfo",
    "add_later_imagery",
    "create_sample",
    "evaluate_against_truth",
]

log = logging.getLogger(__name__)

STEPS: tuple[str, str] = ("2025-06-01", "2026-06-01")
#: A later flight over the town as it is at the last step, with no open data of its
#: own: what a scheduled audit finds new after the demo's two audited steps.
LATER_IMAGERY_STEP = "2026-09-01"
MAX_WIDTH_PX = 6000  # rendering holds a few float32 copies of the raster in memory


@dataclass(frozen=True)
class SampleInfo:
    """Where a generated sample lives and what it covers."""

    root: Path
    steps: tuple[str, ...]  # ISO dates
    imagery: dict[str, Path]  # step -> GeoTIFF
    opendata: dict[str, Path]  # step -> GeoJSON (EPSG:4326)
    truth: Path  # truth.json
    bbox: tuple[float, float, float, float]  # WGS84 west, south, east, north
    crs: str  # CRS of the imagery, e.g. "EPSG:32632"


def _truth_json(record: dict) -> str:
    """JSON with one top-level key per line and one list item (hotspot, defect, change) per line."""

    def compact(v) -> str:
        return json.dumps(v, separators=(", ", ": "))

    lines = []
    for key, value in record.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join("  " + compact(v) for v in value)
            lines.append(f"{json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f"{json.dumps(key)}: {compact(value)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"


def create_sample(
    root: Path,
    *,
    seed: int = 7,
    size_m: float = 1000.0,
    resolution_m: float = 0.4,
    progress: bool = False,
) -> SampleInfo:
    """Generate the sample town below ``root`` (files overwritten) and describe it.

    The raster is ``round(size_m / resolution_m)`` px per side; the same
    ``(seed, size_m, resolution_m)`` always gives byte-identical files.
    """
    if not 250.0 <= float(size_m) <= 3000.0:
        raise ConfigError(f"size_m={size_m}: the sample town must be 250-3000 m across")
    if not 0.1 <= float(resolution_m) <= 2.0:
        raise ConfigError(f"resolution_m={resolution_m}: must be 0.1-2.0 m per pixel")
    if size_m / resolution_m > MAX_WIDTH_PX:
        raise ConfigError(
            f"size_m={size_m}, resolution_m={resolution_m}: the raster would be "
            f"{size_m / resolution_m:.0f} px across, more than {MAX_WIDTH_PX}; "
            "make the town smaller or the pixels larger"
        )
    root = Path(root)
    town = build_town(int(seed), float(size_m), float(resolution_m))
    plan = plan_defects(town)
    to_lonlat = lonlat_converter(town)
    od = snapshots(town, plan)
    log.debug(
        "sample town seed=%s: %d buildings, %d trees", seed, len(town.buildings), len(town.trees)
    )

    world = world_textures(town)
    imagery: dict[str, Path] = {}
    opendata: dict[str, Path] = {}
    for s, step in enumerate(progress_bar(STEPS, desc="sample steps", enabled=progress)):
        imagery[step] = root / "imagery" / f"{step}.tif"
        write_geotiff(imagery[step], render_step(town, s, world), town, step_name=step)
        opendata[step] = root / "opendata" / f"{step}.geojson"
        write_feature_collection(
            opendata[step], f"opendata_{step}", opendata_collection(od[s], to_lonlat)
        )
        write_feature_collection(
            root / "truth" / f"buildings_{step}.geojson",
            f"buildings_{step}",
            truth_collection(town, s, to_lonlat),
        )

    bbox = town_bbox(town)
    record = {
        "seed": int(seed),
        "crs": town.crs,
        "steps": list(STEPS),
        "bbox": list(bbox),
        "size_m": town.size_m,
        "resolution_m": town.resolution_m,
        "origin_utm": list(town.origin),
        **truth_record(town, plan, STEPS, od, to_lonlat),
    }
    truth = root / "truth.json"
    with open(truth, "w", encoding="utf-8", newline="\n") as f:
        f.write(_truth_json(record))
    return SampleInfo(
        root=root,
        steps=STEPS,
        imagery=imagery,
        opendata=opendata,
        truth=truth,
        bbox=bbox,
        crs=town.crs,
    )


def add_later_imagery(
    info: SampleInfo,
    *,
    seed: int = 7,
    size_m: float = 1000.0,
    resolution_m: float = 0.4,
    step: str = LATER_IMAGERY_STEP,
) -> Path:
    """Write the imagery of a later flight (``step``) beside the sample's: the town as at
    its last step, seen again with other sensor noise. Same arguments as
    :func:`create_sample` give byte-identical files. Its path."""
    town = build_town(int(seed), float(size_m), float(resolution_m))
    last = len(STEPS) - 1
    path = info.root / "imagery" / f"{step}.tif"
    write_geotiff(
        path, render_step(town, last, world_textures(town), flight=1), town, step_name=step
    )
    return path
