"""Scoring: per-tile metrics, vectorised predictions, object findings, AOI aggregates, hotspots.

Pure functions on arrays and GeoDataFrames; no database and no model. Matching
(:mod:`~pipeline.score.match`) and changes between time steps
(:mod:`~pipeline.score.changes`) share :mod:`~pipeline.score.geometry`.
"""

from __future__ import annotations

from pipeline.score.aggregate import aoi_aggregates, finding_tiles, flag_tiles
from pipeline.score.hotspots import hotspots, local_gi_star, queen_weights
from pipeline.score.match import (
    FINDING_KINDS,
    MatchConfig,
    MatchResult,
    MatchSummary,
    match,
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
    "flag_tiles",
    "local_gi_star",
    "hotspots",
    "match",
    "merge_across_edges",
    "qod",
    "queen_weights",
    "tile_metrics",
    "vectorize_mask",
]
