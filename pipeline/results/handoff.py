"""Hand findings to the tools where open data gets fixed. Nothing here uploads anything.

* :func:`maproulette_challenge`: a MapRoulette challenge file in its line-by-line
  GeoJSON format (RFC 7464: each task a FeatureCollection on its own line, after a
  record separator); a phantom names its OSM object (``@id``) so MapRoulette shows it.
* :func:`suggested_osm`: an OSM XML file of the missing buildings as new ways
  (negative ids, ``upload="never"``: JOSM opens it as a layer that cannot be uploaded
  by mistake; a mapper copies what the imagery confirms).
* Each finding of the layers carries ``osm_url`` and a JOSM remote-control
  ``josm_url`` (:mod:`pipeline.results.links`).
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import quoteattr

import geopandas as gpd
import shapely

from pipeline.results.layers import RunLayers
from pipeline.results.links import osm_url

RS = "\x1e"  # RFC 7464 record separator
MISSING = "missing_in_opendata"
PHANTOM = "unsupported_by_imagery"
_INSTRUCTIONS = {
    MISSING: "The imagery shows a building that the open data does not have: map it if "
    "the imagery confirms it.",
    PHANTOM: "The open data has a building here that the imagery does not show: check "
    "the imagery's date and delete or fix the footprint if it is really gone.",
}
# a reviewer said the finding is wrong, or that nothing needs fixing
DISMISSED = ("model_wrong", "ok")


def maproulette_challenge(findings: gpd.GeoDataFrame, aoi: str, step: str) -> str:
    """Line-by-line GeoJSON: one task per missing or phantom finding, most evidence first;
    findings a reviewer dismissed (:data:`DISMISSED`) are left out."""
    chosen = _open(findings[findings["kind"].isin([MISSING, PHANTOM])])
    order = chosen["evidence"].fillna(chosen["confidence"]).fillna(0.0)
    chosen = chosen.loc[order.sort_values(ascending=False, kind="stable").index]
    lines = []
    for row in chosen.itertuples():
        properties = {
            "geoaudit_finding": int(row.id),
            "aoi": aoi,
            "step": step,
            "kind": row.kind,
            "instruction": _INSTRUCTIONS[row.kind],
            "area_m2": _number(row.area_m2),
            "confidence": _number(row.confidence),
            "evidence": _number(getattr(row, "evidence", None)),
            "building": "yes",
        }
        if osm_url(row.feature_id) is not None:
            properties["@id"] = str(row.feature_id)
            properties["osm_url"] = osm_url(row.feature_id)
        task = {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "id": f"geoaudit-{aoi}-{step}-{int(row.id)}",
                    "geometry": shapely.geometry.mapping(row.geometry),
                    "properties": properties,
                }
            ],
        }
        lines.append(RS + json.dumps(task, separators=(",", ":")) + "\n")
    return "".join(lines)


def suggested_osm(findings: gpd.GeoDataFrame, aoi: str, step: str) -> str:
    """OSM XML (API 0.6) of the missing buildings' outer rings as new closed ways."""
    missing = _open(findings[findings["kind"] == MISSING])
    nodes: list[str] = []
    ways: list[str] = []
    next_id = -1
    for row in missing.itertuples():
        for polygon in shapely.get_parts(row.geometry):
            ring = list(polygon.exterior.coords)[:-1]
            if len(ring) < 3:
                continue
            refs = []
            for lon, lat in ring:
                nodes.append(f'  <node id="{next_id}" lat="{lat:.7f}" lon="{lon:.7f}"/>')
                refs.append(next_id)
                next_id -= 1
            refs.append(refs[0])
            tags = {
                "building": "yes",
                "note": f"GeoAudit suggestion ({aoi}, {step}, finding {int(row.id)}): "
                "verify against imagery before mapping",
            }
            ways.append(
                f'  <way id="{next_id}">\n'
                + "".join(f'    <nd ref="{r}"/>\n' for r in refs)
                + "".join(
                    f"    <tag k={quoteattr(k)} v={quoteattr(v)}/>\n" for k, v in tags.items()
                )
                + "  </way>"
            )
            next_id -= 1
    body = "\n".join(nodes + ways)
    return (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<osm version="0.6" generator="GeoAudit" upload="never">\n'
        + (body + "\n" if body else "")
        + "</osm>\n"
    )


def write_handoff(layers: RunLayers, out_dir: Path, stem: str) -> dict[str, Path]:
    """Write ``<stem>_maproulette.geojsonl`` and ``<stem>_suggested.osm``."""
    challenge = out_dir / f"{stem}_maproulette.geojsonl"
    challenge.write_text(
        maproulette_challenge(layers.findings, layers.aoi, layers.step), encoding="utf-8"
    )
    osm = out_dir / f"{stem}_suggested.osm"
    osm.write_text(suggested_osm(layers.findings, layers.aoi, layers.step), encoding="utf-8")
    return {"maproulette": challenge, "osm": osm}


def _open(findings: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    if "verdict" not in findings.columns:
        return findings
    return findings[~findings["verdict"].isin(DISMISSED)]


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if number != number else round(number, 4)
