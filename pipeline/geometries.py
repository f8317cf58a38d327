"""Geometry rules shared by the store and the scores."""

from __future__ import annotations

import shapely
from shapely.geometry.base import BaseGeometry


def as_multipolygon(geom: BaseGeometry) -> BaseGeometry:
    """``geom`` as a MultiPolygon when it has area.

    A Polygon becomes a one-part MultiPolygon; a collection (an intersection's result,
    say) keeps its polygon parts and drops the lines and points where shapes only
    touch. Anything without a polygon part is returned as is (a MultiPolygon column
    then refuses it).
    """
    if isinstance(geom, shapely.Polygon):
        return shapely.MultiPolygon([geom]) if not geom.is_empty else shapely.MultiPolygon()
    if isinstance(geom, shapely.GeometryCollection):
        polygons = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon)]
        if polygons:
            return shapely.MultiPolygon(polygons)
    return geom
