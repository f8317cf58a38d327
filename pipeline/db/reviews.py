"""Reviewer verdicts on tiles and findings; one verdict per target, updatable.

Tiles are :class:`pipeline.tiles.Tile` ``(x, y, z)``. A finding review also
records the finding's tile, so it still counts for that tile after the
finding is replaced by a re-run. Functions take a Session and never commit.
"""

from __future__ import annotations

from typing import NamedTuple

from shapely.geometry.base import BaseGeometry
from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.db.errors import RowError
from pipeline.db.models import REVIEW_TARGETS, VERDICTS, Aoi, Finding, Review, Run
from pipeline.errors import NotFoundError
from pipeline.tiles import Tile


def upsert_review(
    s: Session,
    aoi_id: int,
    target: str,
    verdict: str,
    *,
    tile: Tile | tuple[int, int, int] | None = None,
    finding_id: int | None = None,
    comment: str | None = None,
    reviewer: str | None = None,
) -> Review:
    """Record or change the verdict on a tile (``tile=Tile(x, y, z)``) or a finding.

    Verdicts: ``label_wrong`` (the open data is wrong; retraining skips the tile),
    ``model_wrong``, ``real_change``, ``ok``.
    """
    if target not in REVIEW_TARGETS:
        raise RowError(f"review target must be one of {REVIEW_TARGETS}, got {target!r}")
    if verdict not in VERDICTS:
        raise RowError(f"review verdict must be one of {VERDICTS}, got {verdict!r}")
    if s.get(Aoi, aoi_id) is None:
        raise NotFoundError(f"AOI id {aoi_id} does not exist")
    if target == "tile":
        if tile is None:
            raise RowError("a tile review needs tile=Tile(x, y, z)")
        t = Tile(*(int(v) for v in tile))
        review = s.scalars(
            select(Review).where(
                Review.aoi_id == aoi_id,
                Review.target == "tile",
                Review.tile_z == t.z,
                Review.tile_x == t.x,
                Review.tile_y == t.y,
            )
        ).one_or_none()
        if review is None:
            review = Review(aoi_id=aoi_id, target="tile", tile_x=t.x, tile_y=t.y, tile_z=t.z)
            s.add(review)
    else:
        if finding_id is None:
            raise RowError("a finding review needs finding_id")
        finding = s.get(Finding, finding_id)
        if finding is None:
            raise NotFoundError(f"finding {finding_id} does not exist")
        finding_aoi = s.scalar(select(Run.aoi_id).where(Run.id == finding.run_id))
        if finding_aoi != aoi_id:
            raise RowError(f"finding {finding_id} belongs to AOI id {finding_aoi}, not {aoi_id}")
        review = s.scalars(select(Review).where(Review.finding_id == finding_id)).one_or_none()
        if review is None:
            review = Review(aoi_id=aoi_id, target="finding", finding_id=finding_id)
            s.add(review)
        if tile is not None:
            t = Tile(*(int(v) for v in tile))
            review.tile_x, review.tile_y, review.tile_z = t.x, t.y, t.z
        elif finding.tile_z is not None:
            review.tile_x, review.tile_y, review.tile_z = (
                finding.tile_x,
                finding.tile_y,
                finding.tile_z,
            )
    review.verdict = verdict
    review.comment = comment
    review.reviewer = reviewer
    s.flush()
    return review


def label_wrong_tiles(s: Session, aoi_id: int) -> set[Tile]:
    """Tiles of the AOI whose open data a reviewer marked wrong, as ``Tile(x, y, z)``.

    Includes the tiles of findings marked ``label_wrong``.
    """
    q = (
        select(Review.tile_x, Review.tile_y, Review.tile_z)
        .where(
            Review.aoi_id == aoi_id,
            Review.verdict == "label_wrong",
            Review.tile_z.is_not(None),
        )
        .distinct()
    )
    return {Tile(x, y, z) for x, y, z in s.execute(q)}


class ReviewedFinding(NamedTuple):
    """A finding with a reviewer's verdict: what was found, where, and by which run."""

    verdict: str
    kind: str
    geometry: BaseGeometry
    run_id: int
    tile_z: int
    tile_x: int
    tile_y: int


def reviewed_findings(s: Session, aoi_id: int) -> list[ReviewedFinding]:
    """The AOI's findings that carry a verdict (and still exist), oldest review first."""
    q = (
        select(
            Review.verdict,
            Finding.kind,
            Finding.geometry,
            Finding.run_id,
            Finding.tile_z,
            Finding.tile_x,
            Finding.tile_y,
        )
        .join(Finding, Finding.id == Review.finding_id)
        .where(Review.aoi_id == aoi_id, Finding.tile_z.is_not(None))
        .order_by(Review.id)
    )
    return [ReviewedFinding(*row) for row in s.execute(q)]


def list_reviews(
    s: Session, aoi_id: int, *, verdict: str | None = None, target: str | None = None
) -> list[Review]:
    """The AOI's reviews, most recently changed first."""
    q = select(Review).where(Review.aoi_id == aoi_id)
    if verdict is not None:
        q = q.where(Review.verdict == verdict)
    if target is not None:
        q = q.where(Review.target == target)
    return list(s.scalars(q.order_by(Review.updated_at.desc(), Review.id.desc())))
