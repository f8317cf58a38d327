"""Scoring: per-tile metrics, vectorised predictions, object findings, AOI aggregates, hotspots.

Pure functions on arrays and GeoDataFrames; no database and no model.
Changes between time steps live in :mod:`pipeline.changes`.
"""

from __future__ import annotations

from pipeline.score.aggregate import aoi_aggregates, finding_tiles
from pipeline.score.hotspots import gi_star, hotspots, queen_weights
from pipeline.score.match import (
    FINDING_KINDS,
    MatchConfig,
    MatchResult,
    MatchSummary,
    match,
    match_buildings,
    match_summary,
)
from pipeline.score.metrics import TileMetrics, binarize, qod, tile_metrics
from pipeline.score.vectorize import merge_across_edges, vectorize_mask

__all__ = [
    "FINDING_KINDS",
    "MatchConfig",
    "MatchResult",
    "MatchSummary",
    "TileMetrics",
    "aoi_aggregates",
    "binarize",
    "finding_tiles",
    "gi_star",
    "hotspots",
    "match",
    "match_buildings",
    "match_summary",
    "merge_across_edges",
    "qod",
    "queen_weights",
    "tile_metrics",
    "vectorize_mask",
]
