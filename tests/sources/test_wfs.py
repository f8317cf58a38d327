"""kind: wfs against a real WFS: MapServer's mapserv (Debian cgi-mapserver) on loopback,
serving the real OSM buildings of Lalitpur from a GeoJSON file."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
import shapely.affinity
from opendata_servers import MapServerWfs, osm_buildings, serve

from pipeline.errors import VectorDataError
from pipeline.sources import open_vector
from pipeline.sources.specs import WfsSpec

BBOX = (85.535, 27.62, 85.54, 27.63)

if shutil.which("mapserv") is None:
    if os.environ.get("GEOAUDIT_REQUIRE_MAPSERVER") == "1":
        pytest.fail("mapserv not installed (apt-get install cgi-mapserver)", pytrace=False)
    pytest.skip("mapserv not installed (apt-get install cgi-mapserver)", allow_module_level=True)


@pytest.fixture(scope="module")
def wfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, type, gpd.GeoDataFrame]]:
    """``(base_url, handler, buildings)``: /wfs (GeoJSON + GML) and /wfs-gml (GML only),
    30 features per GetFeature at most; buildings carry a unique ``bid``."""
    root = tmp_path_factory.mktemp("wfs")
    gdf = osm_buildings()
    gdf.insert(
        0,
        "bid",
        [f"osm{int(v)}" if v == v else f"x{i}" for i, v in enumerate(gdf.osm_id)],
    )
    data = root / "buildings.geojson"
    gdf.to_file(data, driver="GeoJSON")
    gdf.attrs["served"] = str(data)
    server = MapServerWfs(root, data, max_features=30)
    handler = server.handler()
    with serve(handler) as url:
        server.write_maps(url)
        yield url, handler, gdf


def read(spec: WfsSpec, bbox=None) -> gpd.GeoDataFrame:  # noqa: ANN001
    with open_vector(spec) as src:
        return src.read(bbox)


def getfeatures(handler: type) -> list[dict[str, str]]:
    return [p for _, _, p in handler.requests if p.get("REQUEST") == "GetFeature"]


def same_geometries(got: gpd.GeoDataFrame, want: gpd.GeoDataFrame, tol: float) -> bool:
    """Geometries of ``got`` (by feature_id) equal ``want`` (indexed by id) within ``tol``."""
    got = got.set_index("feature_id").loc[want.index]
    return bool(
        (shapely.hausdorff_distance(got.geometry.values, want.geometry.values) <= tol).all()
    )


def test_geojson_is_chosen_and_pages_follow_the_count_default(wfs) -> None:  # noqa: ANN001
    url, handler, gdf = wfs
    handler.requests.clear()
    got = read(WfsSpec(url=f"{url}/wfs", type_name="buildings", id_field="bid"))
    assert len(got) == 80 and got.crs.to_epsg() == 4326
    assert set(got.feature_id) == set(gdf.bid)
    assert same_geometries(got, gdf.set_index("bid"), 1e-9)
    pages = getfeatures(handler)
    assert all("json" in p["OUTPUTFORMAT"] for p in pages)
    assert [(p["STARTINDEX"], p["COUNT"]) for p in pages] == [
        ("0", "30"),
        ("30", "30"),
        ("60", "30"),  # 20 come back and numberMatched (80) is reached
    ]
    assert pages[0]["TYPENAMES"] == "ms:buildings"  # the qualified name from capabilities


def test_gml_only_server_is_read_with_gdal_with_gml_ids(wfs) -> None:  # noqa: ANN001
    url, handler, gdf = wfs
    handler.requests.clear()
    got = read(WfsSpec(url=f"{url}/wfs-gml", type_name="buildings"))
    assert len(got) == 80
    assert set(got.feature_id) == {f"buildings.{b}" for b in gdf.bid}  # gml:id
    want = gdf.assign(fid="buildings." + gdf.bid).set_index("fid")
    assert same_geometries(got, want, 1e-6)  # MapServer writes GML with 6 decimals
    pages = getfeatures(handler)
    assert all(p["OUTPUTFORMAT"] == "application/gml+xml; version=3.2" for p in pages)
    assert [p["STARTINDEX"] for p in pages] == ["0", "30", "60"]  # numberMatched followed


def test_bbox_is_sent_lat_first_and_filters(wfs) -> None:  # noqa: ANN001
    url, handler, gdf = wfs
    handler.requests.clear()
    got = read(WfsSpec(url=f"{url}/wfs", type_name="buildings", id_field="bid"), BBOX)
    want = gdf[gdf.intersects(shapely.box(*BBOX))]
    assert 0 < len(got) < 80 and set(got.feature_id) == set(want.bid)
    sent = getfeatures(handler)[0]
    assert sent["BBOX"] == "27.62,85.535,27.63,85.54,urn:ogc:def:crs:EPSG::4326"
    assert sent["SRSNAME"] == "urn:ogc:def:crs:EPSG::4326"


def test_wfs_1_1_0_reads_past_a_silent_server_cap(wfs) -> None:  # noqa: ANN001
    url, handler, gdf = wfs
    handler.requests.clear()
    got = read(WfsSpec(url=f"{url}/wfs-gml", type_name="buildings", version="1.1.0"))
    assert set(got.feature_id) == {f"buildings.{b}" for b in gdf.bid}
    want = gdf.assign(fid="buildings." + gdf.bid).set_index("fid")
    assert same_geometries(got, want, 1e-6)  # lon/lat order after GDAL's axis handling
    pages = getfeatures(handler)
    assert pages[0]["VERSION"] == "1.1.0" and pages[0]["TYPENAME"] == "buildings"
    # no CountDefault in 1.1.0: 1000 asked, 30 given, no numberMatched: on to an empty page
    assert [(p["STARTINDEX"], p["MAXFEATURES"]) for p in pages] == [
        ("0", "1000"),
        ("30", "1000"),
        ("60", "1000"),
        ("80", "1000"),
    ]


def test_fingerprint_is_stable_and_follows_the_data(wfs) -> None:  # noqa: ANN001
    url, _, gdf = wfs
    spec = WfsSpec(url=f"{url}/wfs", type_name="buildings", id_field="bid")
    with open_vector(spec, bbox=BBOX) as src:
        first = src.fingerprint()
        assert len(src.read(BBOX)) > 0
    with open_vector(spec, bbox=BBOX) as src:
        assert src.fingerprint() == first
    served = Path(gdf.attrs["served"])
    original = served.read_bytes()
    try:
        changed = gdf.copy()
        inside = int(changed.intersects(shapely.box(*BBOX)).to_numpy().nonzero()[0][0])
        moved = shapely.affinity.translate(changed.geometry.iloc[inside], 1e-5, 0)
        changed.loc[changed.index[inside], "geometry"] = moved
        changed.to_file(served, driver="GeoJSON")
        with open_vector(spec, bbox=BBOX) as src:
            assert src.fingerprint() != first
    finally:
        served.write_bytes(original)


def test_errors_name_the_service_with_the_query_string_masked(wfs) -> None:  # noqa: ANN001
    url, _, _ = wfs
    with pytest.raises(VectorDataError, match=r"no feature type 'roads'; types: ms:buildings") as e:
        read(WfsSpec(url=f"{url}/wfs?key=SECRET", type_name="roads"))
    assert f"WFS {url}/wfs?***#roads" in str(e.value) and "SECRET" not in str(e.value)
    with pytest.raises(VectorDataError, match=r"GetCapabilities failed \(HTTP Error 404") as e:
        read(WfsSpec(url=f"{url}/nope?key=SECRET", type_name="buildings"))
    assert f"{url}/nope?***" in str(e.value) and "SECRET" not in str(e.value)
    with pytest.raises(
        VectorDataError, match=r"GetFeature failed \(HTTP Error 400.*Invalid SRS"
    ) as e:
        read(WfsSpec(url=f"{url}/wfs?key=SECRET", type_name="buildings", srs_name="EPSG:32645"))
    assert "SECRET" not in str(e.value)
