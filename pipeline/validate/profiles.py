"""Profiles: the tables the validation suites run on, one row per feature, shard or tile.

Great Expectations validates tables; these functions turn a snapshot or a run into
small pandas frames whose columns the suites in ``pipeline/validate/suites`` name.
The open-data feature profile is taken at fetch time, from the data *as read*
(before repair and before clipping to the AOI), and stored beside the snapshot, so a
later ``geoaudit validate`` sees what the source really held.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.features import geometry_mask

from pipeline.aoi.config import AoiConfig
from pipeline.tiles import Shard, shard_transform

WEB_MERCATOR = "EPSG:3857"
# shards are read at 1/DECIMATE resolution for colour statistics (plenty for a mean)
DECIMATE = 4


def opendata_feature_profile(frame: gpd.GeoDataFrame, required: list[str]) -> pd.DataFrame:
    """One row per footprint as read (EPSG:4326): id, type, validity, area, vertices, NaN
    coordinates and how many ``required`` attributes are missing."""
    geoms = frame.geometry.to_numpy()
    n = len(frame)
    coords, index = shapely.get_coordinates(geoms, return_index=True)
    nan_rows = np.bincount(index[np.isnan(coords).any(axis=1)], minlength=n).astype(bool)
    with np.errstate(invalid="ignore"):
        merc = frame.geometry.to_crs(WEB_MERCATOR) if n else frame.geometry
        # web-mercator area shrinks by cos²(latitude) to ground m²
        bounds = shapely.bounds(geoms) if n else np.empty((0, 4))
        lat = (bounds[:, 1] + bounds[:, 3]) / 2.0
        area = np.asarray(merc.area, dtype=float) * np.cos(np.radians(lat)) ** 2
    missing = np.zeros(n, dtype=int)
    for name in required:
        if name in frame.columns:
            values = frame[name]
            missing += (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
        else:
            missing += 1
    return pd.DataFrame(
        {
            "feature_id": [None if pd.isna(v) else str(v) for v in frame["feature_id"]],
            "geom_type": frame.geometry.geom_type.fillna("None").to_numpy(),
            "is_valid": np.where(nan_rows, False, shapely.is_valid(geoms)),
            "area_m2": np.where(nan_rows, np.nan, area),
            "n_vertices": shapely.get_num_coordinates(geoms).astype(int),
            "has_nan": nan_rows,
            "n_missing_required": missing,
        }
    )


def opendata_snapshot_profile(
    read_info: Mapping[str, Any],
    repair: Mapping[str, Any],
    feature_count: int,
    previous_count: int | None,
    expected_crs: str | None = None,
) -> pd.DataFrame:
    """One row: declared CRS (and whether it is ``expected_crs``), what the source
    dropped (``read_info``), repairs, and the feature count against the previous step's
    (ratio 1.0 when there is none)."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    source = read_info
    declared = source.get("crs")
    try:
        matches = expected_crs is None or (
            declared is not None and CRS.from_user_input(declared) == CRS(expected_crs)
        )
    except CRSError:
        matches = False
    dropped = source.get("dropped") or {}
    n_read = int(source.get("n_read") or 0)
    ratio = feature_count / previous_count if previous_count else 1.0
    return pd.DataFrame(
        [
            {
                "crs": declared or "",
                "crs_declared": bool(declared),
                "crs_matches": bool(matches),
                "n_read": n_read,
                "n_no_geometry": int(source.get("no_geometry") or 0),
                "n_non_polygon": int(sum(dropped.values())),
                "non_polygon_types": ", ".join(sorted(dropped)) or "",
                "n_repaired": int(repair.get("n_repaired") or 0),
                "feature_count": int(feature_count),
                "previous_count": previous_count if previous_count is not None else -1,
                "count_ratio": float(ratio),
            }
        ]
    )


def _aoi_mask(config: AoiConfig, shard: Shard, size: int) -> np.ndarray:
    """True where the pixel centre lies in the AOI, on a ``size`` grid over ``shard``."""
    from pyproj import Transformer

    to_merc = Transformer.from_crs("EPSG:4326", WEB_MERCATOR, always_xy=True)
    outline = shapely.transform(
        config.geometry, lambda x, y: to_merc.transform(x, y), interleaved=False
    )
    scale = shard.size / size
    transform = shard_transform(shard) * rasterio.Affine.scale(scale)
    return geometry_mask([outline], out_shape=(size, size), transform=transform, invert=True)


def imagery_shard_profile(
    config: AoiConfig, read_shard: Callable[[str, int], tuple[np.ndarray, np.ndarray] | None]
) -> pd.DataFrame:
    """One row per AOI shard: pixels in the AOI, the share without imagery there, and the
    mean brightness and colour shares of the imagery in the AOI.

    ``read_shard(shard_id, size)`` gives a shard's imagery ``(bands, size, size)`` and
    valid mask, decimated to ``size`` px, or None when the snapshot has no imagery there.
    """
    rows = []
    for shard in config.shards():
        size = max(shard.size // DECIMATE, 1)
        in_aoi = _aoi_mask(config, shard, size)
        row: dict[str, Any] = {
            "shard_id": shard.id,
            "aoi_px": int(in_aoi.sum()),
            "valid_px": 0,
            "brightness": np.nan,
            "red_share": np.nan,
            "green_share": np.nan,
            "blue_share": np.nan,
        }
        pixels = read_shard(shard.id, size)
        if pixels is not None:
            data, valid = pixels
            use = valid & in_aoi
            row["valid_px"] = int(use.sum())
            if use.any():
                means = data[:, use].astype(np.float64).mean(axis=1)
                if len(means) == 1:
                    means = np.repeat(means, 3)
                row["brightness"] = float(means.mean())
                total = float(means.sum()) or 1.0
                row["red_share"], row["green_share"], row["blue_share"] = (
                    float(v / total) for v in means
                )
        row["nodata_share"] = 1.0 - row["valid_px"] / row["aoi_px"] if row["aoi_px"] else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def imagery_snapshot_profile(
    shards: pd.DataFrame, source: dict[str, Any], history: list[dict[str, float]]
) -> tuple[pd.DataFrame, dict[str, float]]:
    """One row: band count and dtype of the source, AOI coverage, and brightness and
    colour against the AOI's history (earlier steps' summaries); also this step's summary
    for the history of later steps."""
    aoi_px = float(shards["aoi_px"].sum())
    valid = shards["valid_px"].astype(float)
    coverage = float(valid.sum() / aoi_px) if aoi_px else 0.0
    weights = valid.where(shards["brightness"].notna(), 0.0)
    summary: dict[str, float] = {}
    for column in ("brightness", "red_share", "green_share", "blue_share"):
        w = float(weights.sum())
        summary[column] = float((shards[column].fillna(0.0) * weights).sum() / w) if w else math.nan
    if history:
        past = pd.DataFrame(history)
        ref = {c: float(past[c].median()) for c in summary if c in past}
    else:
        ref = {}
    brightness_ratio = (
        summary["brightness"] / ref["brightness"]
        if ref.get("brightness") and not math.isnan(summary["brightness"])
        else 1.0
    )
    colour_shift = max(
        (
            abs(summary[c] - ref[c])
            for c in ("red_share", "green_share", "blue_share")
            if c in ref and not math.isnan(summary[c])
        ),
        default=0.0,
    )
    row = {
        "band_count": int(source.get("band_count") or 0),
        "dtype": str(source.get("dtype") or ""),
        "coverage": coverage,
        "brightness": summary["brightness"],
        "brightness_ratio": float(brightness_ratio),
        "colour_shift": float(colour_shift),
        "history_steps": len(history),
    }
    return pd.DataFrame([row]), summary


def output_tile_profile(tiles: pd.DataFrame, expected: set[tuple[int, int, int]]) -> pd.DataFrame:
    """One row per stored tile score: its scores, whether it is one of the run's expected
    tiles, and how often its ``(z, x, y)`` occurs."""
    keys = list(zip(tiles["z"], tiles["x"], tiles["y"], strict=True))
    counts = pd.Series(keys, dtype=object).value_counts()
    out = tiles[["z", "x", "y", "iou", "precision", "recall", "f1", "qod"]].copy()
    out["expected"] = [k in expected for k in keys]
    out["occurrences"] = [int(counts[k]) for k in keys]
    return out.reset_index(drop=True)


def output_run_profile(
    tiles: pd.DataFrame, findings: pd.DataFrame, expected: set[tuple[int, int, int]]
) -> pd.DataFrame:
    """One row: expected vs stored tiles, and findings that touch no scored tile (orphans:
    a finding must lie on the audited area; one on an edge building may reach past it).

    ``findings``: EPSG:4326 geometries in ``geometry``.
    """
    from pipeline.tiles import Tile, lnglat_bounds

    stored = set(zip(tiles["z"], tiles["x"], tiles["y"], strict=True))
    orphans = 0
    if len(findings):
        boxes = [shapely.box(*lnglat_bounds(Tile(int(x), int(y), int(z)))) for z, x, y in stored]
        tree = shapely.STRtree(boxes)
        geoms = np.asarray(findings["geometry"].to_numpy(), dtype=object)
        touching = np.unique(tree.query(geoms, predicate="intersects")[0])
        orphans = len(geoms) - len(touching)
    return pd.DataFrame(
        [
            {
                "n_expected_tiles": len(expected),
                "n_missing_tiles": len(expected - stored),
                "n_tiles": len(tiles),
                "n_findings": len(findings),
                "n_orphan_findings": int(orphans),
            }
        ]
    )
