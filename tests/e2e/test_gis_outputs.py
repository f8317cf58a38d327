"""What GIS users and mappers open, opened by GDAL's own tools (Debian's gdal-bin: GDAL
3.6, what QGIS on Debian 12 uses): the embedded store, the PostGIS tables and views,
every export of a run, the rasters, and the hand-off files for mapping tools."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from sqlalchemy.orm import Session

from pipeline.db import repo
from pipeline.results.export import export_run
from pipeline.results.handoff import DISMISSED, RS
from pipeline.results.layers import run_layers
from pipeline.results.rasters import NODATA
from pipeline.results.report import run_for_step
from pipeline.sample.demo import SAMPLE_AOI

pytestmark = pytest.mark.slow

LAYERS = ("aoi", "tile_scores", "findings", "changes", "hotspots")
STORE_LAYERS = {
    "aoi": "Multi Polygon",
    "tile_score": "Polygon",
    "finding": "Multi Polygon",
    "change": "Multi Polygon",
    "hotspot": "Multi Polygon",
    "latest_tile_score": "Polygon",
    "latest_finding": "Multi Polygon",
    "latest_change": "Multi Polygon",
    "latest_hotspot": "Multi Polygon",
}


def gdal(tool: str, *args: str) -> str:
    """Run a GDAL command-line tool; its output, after checking it printed no warning."""
    path = shutil.which(tool)
    assert path, f"{tool} not found: install Debian's gdal-bin (make test does)"
    done = subprocess.run([path, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{tool} {' '.join(args)}: {done.stderr}"
    noise = [line for line in done.stderr.splitlines() if line.strip()]
    assert not noise, f"{tool} {' '.join(args)} warned: {noise}"
    return done.stdout


def layer_types(ogrinfo_output: str) -> dict[str, str]:
    """``{layer: geometry type}`` from ``ogrinfo -so`` without a layer name."""
    found = re.findall(r"^\d+: (\S+) \(([^)]+)\)", ogrinfo_output, flags=re.MULTILINE)
    return dict(found)


@pytest.fixture(scope="module")
def latest(audited):
    return run_for_step(audited.ctx, SAMPLE_AOI, None)


@pytest.fixture(scope="module")
def exported(audited, latest, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"export-{audited.dialect}")
    return export_run(audited.ctx, latest, out, fmt="gpkg", composites=False)


def test_the_store_is_what_gis_clients_open(audited, latest):
    """SQLite: a GeoPackage; PostGIS: typed geometry columns. Either way ogrinfo lists
    every table and view with its geometry type and EPSG:4326, and the views hold the
    latest audit with its step and the review verdicts."""
    if audited.dialect == "sqlite":
        source = str(audited.ctx.settings.resolved_database_url).removeprefix("sqlite:///")
        assert Path(source).is_file()
    else:
        url = audited.ctx.engine.url
        source = f"PG:host={url.host} port={url.port} user={url.username} dbname={url.database}"
    listing = gdal("ogrinfo", "-ro", "-so", source)
    types = layer_types(listing)
    assert {k: types.get(k) for k in STORE_LAYERS} == STORE_LAYERS
    summary = gdal("ogrinfo", "-ro", "-so", source, "latest_finding")
    assert 'ID["EPSG",4326]' in summary
    with Session(audited.ctx.engine) as s:
        run = repo.get_run(s, latest)
        n_findings = len(repo.findings_frame(s, latest))
    assert f"Feature Count: {n_findings}" in summary
    assert re.search(r"^verdict: String", summary, flags=re.MULTILINE)
    rows = gdal(
        "ogrinfo",
        "-ro",
        "-q",
        source,
        "-sql",
        "SELECT aoi, step, COUNT(*) AS n FROM latest_finding GROUP BY aoi, step",
    )
    assert f"aoi (String) = {SAMPLE_AOI}" in rows and f"step (String) = {run.step}" in rows
    assert f"n (Integer) = {n_findings}" in rows or f"n (Integer64) = {n_findings}" in rows
    # a spatial filter reads through the spatial index (R*Tree / GiST)
    with Session(audited.ctx.engine) as s:
        one = repo.findings_frame(s, latest).geometry.iloc[0]
    west, south, east, north = one.bounds
    hit = gdal(
        "ogrinfo",
        "-ro",
        "-q",
        source,
        "finding",
        "-spat",
        str(west),
        str(south),
        str(east),
        str(north),
    )
    assert hit.count("OGRFeature(finding)") >= 1


def test_one_geopackage_with_every_layer_opens_without_a_warning(exported, audited, latest):
    path = exported.layers["findings"]
    assert set(exported.layers) == set(LAYERS)
    assert {p for p in exported.layers.values()} == {path}  # one file
    listing = gdal("ogrinfo", "-ro", "-so", str(path))
    types = layer_types(listing)
    assert types == {
        "aoi": "Multi Polygon",
        "tile_scores": "Polygon",
        "findings": "Multi Polygon",
        "changes": "Multi Polygon",
        "hotspots": "Multi Polygon",
    }
    layers = run_layers(audited.ctx, latest)
    for name, frame in layers.items():
        info = gdal("ogrinfo", "-ro", "-so", str(path), name)
        assert f"Feature Count: {len(frame)}" in info, name
        assert 'ID["EPSG",4326]' in info, name
    findings = gdal("ogrinfo", "-ro", "-so", str(path), "findings")
    for column in ("step", "evidence", "verdict", "osm_url", "josm_url"):
        assert re.search(rf"^{column}: ", findings, flags=re.MULTILINE), column
    # every feature reads back (ogrinfo -al parses every row and geometry)
    gdal("ogrinfo", "-ro", "-al", "-q", str(path))


def test_geojson_and_geoparquet_exports(audited, latest, tmp_path):
    for fmt in ("geojson", "parquet"):
        result = export_run(
            audited.ctx,
            latest,
            tmp_path / fmt,
            fmt=fmt,
            with_rasters=False,
            with_handoff=False,
            composites=False,
        )
        assert set(result.layers) == set(LAYERS)
        assert len(set(result.layers.values())) == len(LAYERS)  # one file per layer
        layers = dict(run_layers(audited.ctx, latest).items())
        for name, path in result.layers.items():
            if fmt == "geojson":
                info = gdal("ogrinfo", "-ro", "-so", str(path), path.stem)
                assert f"Feature Count: {len(layers[name])}" in info
                continue
            # GDAL 3.6 has no Parquet driver: the GeoParquet metadata is checked instead
            table = pq.read_table(path)
            geo = json.loads(table.schema.metadata[b"geo"])
            assert geo["primary_column"] == "geometry"
            column = geo["columns"]["geometry"]
            assert column["encoding"] == "WKB" and column["crs"]["id"]["code"] == 4326
            assert table.num_rows == len(layers[name])
            if len(layers[name]):
                back = shapely.from_wkb(table.column("geometry").to_pylist())
                assert shapely.equals_exact(back, layers[name].geometry.values, 1e-9).all()


def test_rasters_are_cogs_that_agree_with_the_tile_scores(exported, audited, latest):
    prob, errors = exported.rasters["probability"], exported.rasters["errors"]
    for path in (prob, errors):
        info = json.loads(gdal("gdalinfo", "-json", str(path)))
        assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
        assert 'ID["EPSG",3857]' in info["coordinateSystem"]["wkt"]
        assert info["bands"][0]["noDataValue"] == NODATA
        assert info["bands"][0].get("overviews"), path
    assert "colorTable" in json.loads(gdal("gdalinfo", "-json", str(errors)))["bands"][0]
    with rasterio.open(errors) as src:
        classes = src.read(1)
    with rasterio.open(prob) as src:
        percent = src.read(1)
    assert set(np.unique(classes)) <= {0, 1, 2, 3, NODATA}
    assert ((percent <= 100) | (percent == NODATA)).all()
    assert ((classes == NODATA) == (percent == NODATA)).all()
    # the pixel classes are the tile scores' confusion counts, pixel for pixel
    with Session(audited.ctx.engine) as s:
        tiles = repo.tile_scores_frame(s, latest)
    assert int((classes == 1).sum()) == int(tiles["tp"].sum())
    assert int((classes == 2).sum()) == int(tiles["fp"].sum())
    assert int((classes == 3).sum()) == int(tiles["fn"].sum())


def test_maproulette_challenge_and_suggested_osm_file(exported, audited, latest):
    layers = run_layers(audited.ctx, latest)
    findings = layers.findings
    open_ = findings[~findings["verdict"].isin(DISMISSED)]
    wanted = open_[open_["kind"].isin(["missing_in_opendata", "unsupported_by_imagery"])]
    text = exported.handoff["maproulette"].read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # (str.splitlines would also split at the separator)
    assert len(lines) == len(wanted) > 0
    tasks = []
    for line in lines:
        assert line.startswith(RS)  # RFC 7464, as MapRoulette asks
        task = json.loads(line[1:])
        assert task["type"] == "FeatureCollection" and len(task["features"]) == 1
        tasks.append(task["features"][0])
    read = gdal("ogrinfo", "-ro", "-so", str(exported.handoff["maproulette"]))
    assert f"Feature Count: {len(tasks)}" in gdal(
        "ogrinfo",
        "-ro",
        "-so",
        str(exported.handoff["maproulette"]),
        exported.handoff["maproulette"].stem,
    ), read
    ids = [t["properties"]["geoaudit_finding"] for t in tasks]
    assert sorted(ids) == sorted(int(i) for i in wanted["id"])
    evidence = [t["properties"]["evidence"] or 0 for t in tasks]
    assert evidence == sorted(evidence, reverse=True)  # most evidence first
    assert {t["properties"]["kind"] for t in tasks} <= {
        "missing_in_opendata",
        "unsupported_by_imagery",
    }
    for t in tasks:
        assert shapely.geometry.shape(t["geometry"]).is_valid
    # the sample's open data ids are not OSM ids: no object is named
    assert all("@id" not in t["properties"] for t in tasks)

    osm = exported.handoff["osm"]
    missing = wanted[wanted["kind"] == "missing_in_opendata"]
    parts = sum(len(shapely.get_parts(g)) for g in missing.geometry)
    assert 'upload="never"' in osm.read_text(encoding="utf-8")
    # new objects have negative ids (JOSM's convention), which GDAL reads with this option
    info = gdal(
        "ogrinfo",
        "--config",
        "OSM_USE_CUSTOM_INDEXING",
        "NO",
        "-ro",
        "-q",
        str(osm),
        "multipolygons",
    )
    assert info.count("OGRFeature(multipolygons)") == parts
    assert info.count("building (String) = yes") == parts


def test_hotspots_are_significant_cells_clipped_to_the_aoi(audited, latest):
    layers = run_layers(audited.ctx, latest)
    hot = layers.hotspots
    outline = layers.outline.geometry.iloc[0]
    assert (hot["gi_star"] > 0).all() and (hot["q_value"] <= 0.05).all()
    assert all(outline.buffer(1e-9).contains(g) for g in hot.geometry)
    assert (hot["p_value"] <= hot["q_value"]).all() and (
        hot["rank"] == range(1, len(hot) + 1)
    ).all()
