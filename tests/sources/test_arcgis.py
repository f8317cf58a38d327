"""kind: arcgis against a loopback stand-in of an ArcGIS FeatureServer layer.

The handler implements the parts of the REST API the source uses, over the real OSM
buildings of Lalitpur (OBJECTID 1..80): the layer description, and ``query`` with
``where`` (``1=1`` or ``<field> <op> <number>``), the envelope filter, ``orderByFields``,
``resultOffset``/``resultRecordCount`` capped at maxRecordCount = 3 with
``exceededTransferLimit``, ``returnIdsOnly``/``objectIds``, ``f=geojson``; and a
token in the query string, as ArcGIS Online wants.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterator

import pytest
import shapely
import shapely.geometry
from opendata_servers import RecordingHandler, osm_buildings, serve

from pipeline.errors import VectorDataError
from pipeline.sources import open_vector
from pipeline.sources.specs import ArcGisSpec

BBOX = (85.535, 27.62, 85.54, 27.63)
LAYER = "/arcgis/rest/services/Buildings/FeatureServer/0"
TOKEN = "s3cret-token"
OPS = {">": operator.gt, "<": operator.lt, "=": operator.eq, ">=": operator.ge, "<=": operator.le}


class FeatureServer(RecordingHandler):
    requests: list = []
    features: list[dict] = []
    max_records = 3
    paging = True

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.answer()

    def do_POST(self) -> None:  # noqa: N802
        self.answer()

    def error(self, code: int, message: str, details: list[str] | None = None) -> None:
        self.reply(200, {"error": {"code": code, "message": message, "details": details or []}})

    def answer(self) -> None:
        path, params = self.params()
        if params.get("token") != TOKEN:
            self.error(499, "Token Required")
        elif path == LAYER:
            self.reply(200, self.layer())
        elif path == f"{LAYER}/query":
            self.query(params)
        else:
            self.error(400, "Invalid URL")

    def layer(self) -> dict:
        return {
            "id": 0,
            "name": "Buildings",
            "type": "Feature Layer",
            "geometryType": "esriGeometryPolygon",
            "objectIdField": "OBJECTID",
            "maxRecordCount": self.max_records,
            "supportedQueryFormats": "JSON, geoJSON",
            "advancedQueryCapabilities": {"supportsPagination": self.paging},
            "fields": [
                {"name": "OBJECTID", "type": "esriFieldTypeOID"},
                {"name": "osm_id", "type": "esriFieldTypeDouble"},
            ],
        }

    def query(self, p: dict[str, str]) -> None:
        rows = list(self.features)
        where = p.get("where", "1=1").strip()
        if where != "1=1":
            m = re.fullmatch(r"(\w+)\s*(>=|<=|=|>|<)\s*(-?[\d.]+)", where)
            if not m:
                self.error(400, "Unable to complete operation.", ["'where' parameter is invalid"])
                return
            field, op, value = m.groups()
            rows = [
                r
                for r in rows
                if r["properties"].get(field) is not None
                and OPS[op](r["properties"][field], float(value))
            ]
        if "geometry" in p:
            env = shapely.box(*(float(v) for v in p["geometry"].split(",")))
            rows = [r for r in rows if shapely.geometry.shape(r["geometry"]).intersects(env)]
        if "objectIds" in p:
            wanted = {int(v) for v in p["objectIds"].split(",")}
            rows = [r for r in rows if r["id"] in wanted]
        rows.sort(key=lambda r: r["id"])
        if p.get("returnIdsOnly") == "true":
            self.reply(200, {"objectIdFieldName": "OBJECTID", "objectIds": [r["id"] for r in rows]})
            return
        if "resultOffset" in p and not self.paging:
            self.error(400, "Pagination is not supported.")
            return
        offset = int(p.get("resultOffset", 0))
        count = min(int(p.get("resultRecordCount", self.max_records)), self.max_records)
        page = rows[offset : offset + count]
        answer = {"type": "FeatureCollection", "features": page}
        if offset + count < len(rows):
            answer["properties"] = {"exceededTransferLimit": True}
        self.reply(200, answer)


@pytest.fixture
def arcgis() -> Iterator[str]:
    gdf = osm_buildings()
    FeatureServer.requests, FeatureServer.paging = [], True
    FeatureServer.features = [
        {
            "type": "Feature",
            "id": i + 1,
            "geometry": json.loads(shapely.to_geojson(geom)),
            "properties": {"OBJECTID": i + 1, "osm_id": None if osm != osm else osm},
        }
        for i, (osm, geom) in enumerate(zip(gdf.osm_id, gdf.geometry, strict=True))
    ]
    with serve(FeatureServer) as url:
        yield f"{url}{LAYER}?token={TOKEN}"


def read(url: str, bbox=None, **spec):  # noqa: ANN001, ANN201
    with open_vector(ArcGisSpec(url=url, **spec)) as src:
        return src.read(bbox)


def queries() -> list[dict[str, str]]:
    return [p for _, path, p in FeatureServer.requests if path.endswith("/query")]


def test_pages_of_max_record_count_until_the_limit_is_no_longer_exceeded(arcgis: str) -> None:
    got = read(arcgis)
    gdf = osm_buildings()
    assert len(got) == 80 and got.feature_id.tolist() == [str(i) for i in range(1, 81)]
    assert shapely.equals_exact(got.geometry.values, gdf.geometry.values, 1e-12).all()
    pages = queries()
    assert len(pages) == 27  # 26 pages of 3, one of 2
    assert [int(p["resultOffset"]) for p in pages] == list(range(0, 80, 3))
    assert {p["resultRecordCount"] for p in pages} == {"3"}
    first = pages[0]
    assert (first["f"], first["outFields"], first["orderByFields"]) == (
        "geojson",
        "*",
        "OBJECTID ASC",
    )
    assert all(p["token"] == TOKEN for p in pages)  # the URL's own parameters are kept


def test_envelope_where_and_id_field(arcgis: str) -> None:
    gdf = osm_buildings()
    got = read(arcgis, BBOX, where="osm_id > 1000000000", id_field="osm_id")
    want = gdf[gdf.intersects(shapely.box(*BBOX)) & (gdf.osm_id > 1e9)]
    assert 0 < len(got) < 80 and set(got.feature_id) == {str(int(v)) for v in want.osm_id}
    sent = queries()[0]
    assert sent["geometryType"] == "esriGeometryEnvelope" and sent["inSR"] == "4326"
    assert [float(v) for v in sent["geometry"].split(",")] == list(BBOX)


def test_a_page_size_below_the_cap(arcgis: str) -> None:
    FeatureServer.max_records = 1000
    try:
        got = read(arcgis, page_size=25)
    finally:
        FeatureServer.max_records = 3
    assert len(got) == 80 and [p["resultRecordCount"] for p in queries()] == ["25"] * 4


def test_a_layer_without_pagination_is_read_by_object_ids(arcgis: str) -> None:
    FeatureServer.paging = False
    got = read(arcgis, BBOX)
    gdf = osm_buildings()
    want = {str(i + 1) for i in range(80) if gdf.geometry[i].intersects(shapely.box(*BBOX))}
    assert set(got.feature_id) == want
    sent = queries()
    assert sent[0]["returnIdsOnly"] == "true" and "resultOffset" not in sent[1]
    assert all(len(p["objectIds"].split(",")) <= 3 for p in sent[1:])


def test_fingerprint_is_stable_and_follows_the_features(arcgis: str) -> None:
    def fingerprint() -> str:
        with open_vector(ArcGisSpec(url=arcgis), bbox=BBOX) as src:
            return src.fingerprint()

    first = fingerprint()
    assert fingerprint() == first
    inside = next(
        f
        for f in FeatureServer.features
        if shapely.geometry.shape(f["geometry"]).intersects(shapely.box(*BBOX))
    )
    inside["properties"]["osm_id"] = 1.0
    assert fingerprint() != first


def test_errors_name_the_layer_with_the_token_masked(arcgis: str) -> None:
    base = arcgis.split("?")[0]
    with pytest.raises(VectorDataError, match=r"layer description failed: 499 Token Required") as e:
        read(f"{base}?token=wrong-{TOKEN}")
    assert str(e.value).startswith(f"ArcGIS {base}?***: ") and TOKEN not in str(e.value)
    with pytest.raises(VectorDataError, match=r"query failed: 400 .*'where' parameter is invalid"):
        read(arcgis, where="name LIKE 'x%'")
    with pytest.raises(ValueError, match="FeatureServer or MapServer"):
        ArcGisSpec(url=base.rsplit("/", 1)[0])
