"""Score an audit of the sample town against its ``truth.json``.

Matching rule (all categories): a finding *hits* a truth item of the same step
when their intersection covers at least ``min_overlap`` (0.3) of the smaller
of the two areas (intersection over the smaller area, IoS; a point finding
hits the polygons it lies in). Findings and truth items are paired one to one,
greedily by decreasing IoU, so a truth item is matched at most once and a
second finding on the same building (a split prediction, a duplicate) counts
as a false positive. Areas are computed in the sample's UTM CRS.

Per category::

    recall    = truth items (of the recall set) matched / truth items
    precision = findings matched to an item of the precision set / findings

Categories (finding kind → recall set; precision set), all per step:

* **omitted** (``missing_in_opendata``) → omitted buildings; omitted + stale
  ``new_missing`` buildings (both are really absent from the open data).
* **phantom** (``unsupported_by_imagery``) → phantom polygons; phantoms +
  stale ``demolished_still_mapped`` (both really lack a building in the imagery).
* **misaligned** (``misaligned``) → misaligned buildings, each as the union of
  its true footprint and its displaced open-data polygon; same.
* **changes** (change kinds ``appeared`` / ``disappeared``) → truth changes of
  the same sign; same.
* **stale** (change kind ``stale_opendata``) → changes not reflected in the
  open data; same.

Change findings carry the later step, as truth changes do. Other finding and
change kinds (``added``, ``removed``, ``modified``: exact open-data diffs) are
not scored. Hotspots: an injected hotspot is *found* (``in_top``) when any stored
hotspot cell (they are the significant ones; with ``top_k``, only those with
``rank <= top_k``) of any evaluated step overlaps it with positive area.

Empty cases: no truth items ⇒ recall 1.0 (nothing to find); no findings ⇒
precision 1.0 (no false claim), so an empty audit scores recall 0 wherever
there was something to find. Inputs may be ``None`` or empty GeoDataFrames;
a frame without a CRS is taken as EPSG:4326; a step given as a date or
timestamp is compared by its ISO date (first 10 characters).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from shapely.geometry import shape

from pipeline.errors import SourceError, VectorDataError

FINDING_KINDS = ("missing_in_opendata", "unsupported_by_imagery", "misaligned")
CHANGE_KINDS = ("appeared", "disappeared", "added", "removed", "modified", "stale_opendata")


@dataclass(frozen=True)
class _Item:
    step: str
    geometry: object  # shapely geometry in the truth CRS
    for_recall: bool


def _step_text(value) -> str:
    text = str(value)
    return text[:10] if len(text) >= 10 and text[4:5] == "-" and text[7:8] == "-" else text


def _load_truth(path: Path) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            truth = json.load(f)
    except FileNotFoundError as e:
        raise SourceError(f"{path}: truth file not found; generate it with create_sample()") from e
    except (OSError, json.JSONDecodeError) as e:
        raise SourceError(f"{path}: truth file is not readable JSON ({e})") from e
    for key in ("crs", "steps", "defects", "changes", "hotspots"):
        if key not in truth:
            raise SourceError(
                f"{path}: truth file has no '{key}'; it was not written by create_sample()"
            )
    return truth


def _to_crs(geoms: list[dict], crs: str) -> np.ndarray:
    if not geoms:
        return np.empty(0, dtype=object)
    return gpd.GeoSeries([shape(g) for g in geoms], crs="EPSG:4326").to_crs(crs).to_numpy()


def _frame(
    gdf: gpd.GeoDataFrame | None, name: str, columns: Sequence[str], crs: str
) -> gpd.GeoDataFrame:
    """Input rows with ``columns`` and geometries in the truth CRS (empty frame if none)."""
    if gdf is None or len(gdf) == 0:
        return gpd.GeoDataFrame({c: [] for c in columns}, geometry=[], crs=crs)
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise VectorDataError(f"{name}: expected a GeoDataFrame, got {type(gdf).__name__}")
    missing = [c for c in columns if c not in gdf.columns]
    if missing:
        raise VectorDataError(
            f"{name}: missing column(s) {missing}; required are {list(columns)} and geometry"
        )
    out = gdf[list(columns)].copy()
    out = gpd.GeoDataFrame(out, geometry=gdf.geometry.values, crs=gdf.crs or "EPSG:4326").to_crs(
        crs
    )
    geoms = out.geometry.to_numpy()
    empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    fixed = np.where(empty, None, shapely.make_valid(np.where(empty, shapely.Point(), geoms)))
    out = out.set_geometry(gpd.GeoSeries(fixed, crs=crs, index=out.index))
    if "step" in out.columns:
        out["step"] = [_step_text(v) for v in out["step"]]
    return out


def _match(found: np.ndarray, truth: np.ndarray, min_overlap: float) -> list[tuple[int, int]]:
    """One-to-one (finding, truth) pairs with IoS >= ``min_overlap``, greedy by IoU."""
    ok_f = np.flatnonzero([g is not None for g in found])
    if not len(ok_f) or not len(truth):
        return []
    tree = shapely.STRtree(truth)
    qi, ti = tree.query(found[ok_f], predicate="intersects")
    if not len(qi):
        return []
    fi = ok_f[qi]
    fg, tg = found[fi], truth[ti]
    inter = shapely.area(shapely.intersection(fg, tg))
    af, at = shapely.area(fg), shapely.area(tg)
    smaller = np.minimum(af, at)
    ios = np.where(smaller > 0, inter / np.where(smaller > 0, smaller, 1.0), 1.0)
    union = af + at - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    keep = ios >= min_overlap
    fi, ti, iou = fi[keep], ti[keep], iou[keep]
    pairs: list[tuple[int, int]] = []
    used_f: set[int] = set()
    used_t: set[int] = set()
    for k in np.lexsort((ti, fi, -iou)):
        f, t = int(fi[k]), int(ti[k])
        if f in used_f or t in used_t:
            continue
        used_f.add(f)
        used_t.add(t)
        pairs.append((f, t))
    return pairs


def _score(
    found: gpd.GeoDataFrame, items: list[_Item], steps: Iterable[str], min_overlap: float
) -> dict[str, float | int]:
    """Recall / precision of ``found`` (rows with ``step``) against ``items``, step by step."""
    n_truth = sum(1 for it in items if it.for_recall)
    n_found = len(found)
    n_matched = n_hit = 0
    for step in steps:
        f_geoms = (
            found.geometry[found["step"] == step].to_numpy() if n_found else np.empty(0, object)
        )
        step_items = [it for it in items if it.step == step]
        t_geoms = np.asarray([it.geometry for it in step_items], dtype=object)
        pairs = _match(f_geoms, t_geoms, min_overlap)
        n_matched += len(pairs)
        n_hit += sum(1 for _, t in pairs if step_items[t].for_recall)
    return {
        "recall": n_hit / n_truth if n_truth else 1.0,
        "precision": n_matched / n_found if n_found else 1.0,
        "n_truth": n_truth,
        "n_found": n_found,
        "n_hit": n_hit,
        "n_matched": n_matched,
    }


def evaluate_against_truth(
    truth_path: Path,
    findings: gpd.GeoDataFrame | None,
    changes: gpd.GeoDataFrame | None,
    hotspots: gpd.GeoDataFrame | None,
    *,
    top_k: int | None = None,
    steps: Sequence[str] | None = None,
    min_overlap: float = 0.3,
) -> dict:
    """Recall and precision of an audit of the sample town, per defect kind.

    ``findings``: columns ``step``, ``kind`` (see :data:`FINDING_KINDS`), geometry;
    ``changes``: ``step`` (the later step), ``kind`` (:data:`CHANGE_KINDS`), geometry;
    ``hotspots``: ``rank`` (1 = worst), optional ``step``, cell geometry; all
    EPSG:4326. ``steps`` limits the evaluation (default: every step of the
    truth); rows of other steps are ignored. The rules are in the module
    docstring. Returns ``{"omitted", "phantom", "misaligned", "changes",
    "stale": {"recall", "precision", "n_truth", "n_found", "n_hit",
    "n_matched"}, "hotspots": {"injected", "in_top", "top_k", "recall"}}``
    (``changes`` also per sign under ``"appeared"`` / ``"disappeared"``).
    """
    truth = _load_truth(truth_path)
    crs = truth["crs"]
    steps = [_step_text(s) for s in (steps if steps is not None else truth["steps"])]
    fnd = _frame(findings, "findings", ("step", "kind"), crs)
    chg = _frame(changes, "changes", ("step", "kind"), crs)
    hs_cols = ("rank", "step") if hotspots is not None and "step" in hotspots.columns else ("rank",)
    hsp = _frame(hotspots, "hotspots", hs_cols, crs)
    fnd = fnd[fnd["step"].isin(steps)]
    chg = chg[chg["step"].isin(steps)]
    if "step" in hsp.columns:
        hsp = hsp[hsp["step"].isin(steps)]

    defects = [d for d in truth["defects"] if d["step"] in steps]
    geoms = _to_crs([d["geometry"] for d in defects], crs)
    mis_geoms = _to_crs(
        [d["detail"]["opendata_geometry"] for d in defects if d["kind"] == "misaligned"], crs
    )
    mis_iter = iter(mis_geoms)
    omitted: list[_Item] = []
    phantom: list[_Item] = []
    misaligned: list[_Item] = []
    for d, g in zip(defects, geoms, strict=True):
        kind, sub = d["kind"], (d.get("detail") or {}).get("subkind")
        if kind == "omitted":
            omitted.append(_Item(d["step"], g, True))
        elif kind == "phantom":
            phantom.append(_Item(d["step"], g, True))
        elif kind == "misaligned":
            misaligned.append(_Item(d["step"], shapely.union(g, next(mis_iter)), True))
        elif kind == "stale" and sub == "new_missing":
            omitted.append(_Item(d["step"], g, False))
        elif kind == "stale" and sub == "demolished_still_mapped":
            phantom.append(_Item(d["step"], g, False))

    tchanges = [c for c in truth["changes"] if c["step"] in steps]
    cgeoms = _to_crs([c["geometry"] for c in tchanges], crs)
    by_sign = {
        sign: [
            _Item(c["step"], g, True)
            for c, g in zip(tchanges, cgeoms, strict=True)
            if c["kind"] == sign
        ]
        for sign in ("appeared", "disappeared")
    }
    stale = [
        _Item(c["step"], g, True)
        for c, g in zip(tchanges, cgeoms, strict=True)
        if not c["reflected_in_opendata"]
    ]

    def kind_rows(frame: gpd.GeoDataFrame, kind: str) -> gpd.GeoDataFrame:
        return frame[frame["kind"] == kind]

    result: dict = {
        "omitted": _score(kind_rows(fnd, "missing_in_opendata"), omitted, steps, min_overlap),
        "phantom": _score(kind_rows(fnd, "unsupported_by_imagery"), phantom, steps, min_overlap),
        "misaligned": _score(kind_rows(fnd, "misaligned"), misaligned, steps, min_overlap),
    }
    per_sign = {s: _score(kind_rows(chg, s), by_sign[s], steps, min_overlap) for s in by_sign}
    n_truth = sum(p["n_truth"] for p in per_sign.values())
    n_found = sum(p["n_found"] for p in per_sign.values())
    n_hit = sum(p["n_hit"] for p in per_sign.values())
    n_matched = sum(p["n_matched"] for p in per_sign.values())
    result["changes"] = {
        "recall": n_hit / n_truth if n_truth else 1.0,
        "precision": n_matched / n_found if n_found else 1.0,
        "n_truth": n_truth,
        "n_found": n_found,
        "n_hit": n_hit,
        "n_matched": n_matched,
        **per_sign,
    }
    result["stale"] = _score(kind_rows(chg, "stale_opendata"), stale, steps, min_overlap)

    injected = _to_crs([h["geometry"] for h in truth["hotspots"]], crs)
    top = (
        (hsp if top_k is None else hsp[hsp["rank"].astype(float) <= top_k]).geometry.to_numpy()
        if len(hsp)
        else np.empty(0, object)
    )
    top = np.asarray([g for g in top if g is not None], dtype=object)
    in_top = 0
    for h in injected:
        if len(top) and bool(np.any(shapely.area(shapely.intersection(top, h)) > 0)):
            in_top += 1
    result["hotspots"] = {
        "injected": len(injected),
        "in_top": in_top,
        "top_k": top_k,
        "recall": in_top / len(injected) if len(injected) else 1.0,
    }
    return result
