"""kind: overpass against a loopback Overpass stand-in.

A real Overpass server cannot be set up here (it needs an OSM planet or extract with
history loaded from the internet), so the handler below answers Overpass-format JSON
(``out meta geom``) built from the real OSM buildings of Lalitpur (their real way ids),
with a small invented history: one building added later, one deleted later, one
modified, plus a multipolygon relation with a hole and an open building way. It parses
the query it receives (bbox, ``[date:]``, the building filters, extra tag filters) and
answers as of that date, so what is asserted is what the source asks and makes of it.
"""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Iterator

import pytest
import shapely
import shapely.affinity
from opendata_servers import RecordingHandler, osm_buildings, serve

from pipeline.errors import VectorDataError
from pipeline.sources import open_vector
from pipeline.sources.base import latest_step
from pipeline.sources.specs import OverpassSpec

BBOX = (85.535, 27.62, 85.54, 27.63)
CREATED, CHANGED = "2019-06-01T00:00:00Z", "2021-06-01T00:00:00Z"

BUILDINGS = osm_buildings()
WITH_ID = BUILDINGS[BUILDINGS.osm_id.notna()].reset_index(drop=True)
ADDED, DELETED, MODIFIED = (int(v) for v in WITH_ID.osm_id[:3])
RELATION, OPEN_WAY = 900001, 900100
SHIFT = 2e-5  # degrees east, the modification of MODIFIED


def _way(wid: int, version: int, ts: str, coords: list, tags: dict, visible: bool = True) -> dict:
    return {"id": wid, "version": version, "timestamp": ts, "visible": visible,
            "coords": coords, "tags": tags}  # fmt: skip


def history() -> dict[tuple[str, int], list[dict]]:
    """Versions per element: the real buildings (v1, 2019) and the invented changes."""
    out: dict[tuple[str, int], list[dict]] = {}
    for wid, geom in zip(WITH_ID.osm_id.astype(int), WITH_ID.geometry, strict=True):
        coords = list(geom.exterior.coords)
        if wid == ADDED:
            out["way", wid] = [_way(wid, 1, CHANGED, coords, {"building": "yes"})]
        elif wid == DELETED:
            out["way", wid] = [
                _way(wid, 1, CREATED, coords, {"building": "yes"}),
                _way(wid, 2, CHANGED, [], {}, visible=False),
            ]
        elif wid == MODIFIED:
            moved = [(x + SHIFT, y) for x, y in coords]
            out["way", wid] = [
                _way(wid, 1, CREATED, coords, {"building": "yes"}),
                _way(wid, 2, CHANGED, moved, {"building": "house", "name": "Ghar"}),
            ]
        else:
            out["way", wid] = [_way(wid, 1, CREATED, coords, {"building": "yes"})]
    # a multipolygon: the outer ring of a real building in two pieces, a hole inside
    outer = list(BUILDINGS[BUILDINGS.osm_id.isna()].geometry.iloc[0].exterior.coords)
    half = len(outer) // 2
    inner = list(shapely.affinity.scale(shapely.Polygon(outer), 0.3, 0.3).exterior.coords)
    members = [("outer", outer[: half + 1]), ("outer", outer[half:]), ("inner", inner)]
    out["relation", RELATION] = [
        {
            "id": RELATION,
            "version": 3,
            "timestamp": CREATED,
            "visible": True,
            "members": members,
            "tags": {"type": "multipolygon", "building": "yes"},
        }  # fmt: skip
    ]
    line = list(WITH_ID.geometry.iloc[5].exterior.coords)[:-1]  # an unclosed building
    out["way", OPEN_WAY] = [_way(OPEN_WAY, 1, CREATED, line, {"building": "yes"})]
    return out


def _geometry(coords: list) -> list[dict]:
    return [{"lat": y, "lon": x} for x, y in coords]


def _element(kind: str, v: dict) -> dict:
    el = {"type": kind, "id": v["id"], "version": v["version"], "timestamp": v["timestamp"],
          "changeset": 1, "user": "mapper", "uid": 1, "tags": v["tags"]}  # fmt: skip
    if kind == "way":
        n = len(v["coords"])
        closed = v["coords"][0] == v["coords"][-1]
        el["nodes"] = [v["id"] * 100 + (i % (n - 1) if closed else i) for i in range(n)]
        el["geometry"] = _geometry(v["coords"])
    else:
        el["members"] = [
            {"type": "way", "ref": 800000 + i, "role": role, "geometry": _geometry(c)}
            for i, (role, c) in enumerate(v["members"])
        ]
    return el


def _shape(kind: str, v: dict) -> shapely.Geometry:
    if kind == "way":
        return shapely.LineString(v["coords"])
    return shapely.MultiLineString([c for _, c in v["members"]])


_FILTER = re.compile(r'\["([^"]+)"(?:(!?=)"((?:[^"\\]|\\.)*)")?\]')


def _passes(filters: str, tags: dict) -> bool:
    for key, op, value in _FILTER.findall(filters):
        value = value.replace('\\"', '"').replace("\\\\", "\\")
        if not op and key not in tags:
            return False
        if op == "=" and tags.get(key) != value:
            return False
        if op == "!=" and tags.get(key) == value:
            return False
    return True


class Overpass(RecordingHandler):
    """POST /api/interpreter with ``data=<query>``: Overpass JSON as of the query's date."""

    requests: list = []
    data: dict = {}
    fail_first = 0
    remark = ""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        path, params = self.params()
        if path != "/api/interpreter":
            self.reply(400, "<html><body><p>Error: no such endpoint</p></body></html>", "text/html")
            return
        if Overpass.fail_first > 0:
            Overpass.fail_first -= 1
            self.reply(429, "Too Many Requests", "text/plain")
            return
        query = params.get("data", "")
        statements = re.findall(r"^\s*(way|relation)((?:\[[^\]]*\])+)\(([^)]*)\);", query, re.M)
        if (
            not query.startswith("[out:json]")
            or "out meta geom;" not in query
            or [s[0] for s in statements] != ["way", "relation"]
            or len({s[2] for s in statements}) != 1
        ):
            self.reply(400, f"<p>Error: line 1: parse error: {query!r}</p>", "text/html")
            return
        south, west, north, east = (float(v) for v in statements[0][2].split(","))
        area = shapely.box(west, south, east, north)
        date = re.search(r'\[date:"([^"]+)"\]', query)
        as_of = date.group(1) if date else "9999-12-31T00:00:00Z"
        elements = []
        for (kind, _), versions in sorted(self.data.items()):
            seen = [v for v in versions if v["timestamp"] <= as_of]
            if not seen or not seen[-1]["visible"]:
                continue
            v = seen[-1]
            filters = statements[0 if kind == "way" else 1][1]
            if _passes(filters, v["tags"]) and _shape(kind, v).intersects(area):
                elements.append(_element(kind, v))
        answer = {"version": 0.6, "generator": "test stand-in", "elements": elements}
        if Overpass.remark:
            answer["remark"] = Overpass.remark
        self.reply(200, answer)


@pytest.fixture
def overpass(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("GEOAUDIT_SOURCE_ATTEMPTS", "3")
    monkeypatch.setenv("GEOAUDIT_SOURCE_MAX_WAIT_S", "0.05")
    Overpass.requests, Overpass.data = [], history()
    Overpass.fail_first, Overpass.remark = 0, ""
    with serve(Overpass) as url:
        yield f"{url}/api/interpreter"


def read(url: str, step: str | None, bbox=BBOX, **spec):  # noqa: ANN001, ANN201
    with open_vector(OverpassSpec(url=url, **spec), step=step) as src:
        return src.read(bbox), src.read_info()


def sent_query() -> str:
    return Overpass.requests[-1][2]["data"]


def expected_ids(as_of: str) -> set[str]:
    """The ways/relations of the stand-in alive at ``as_of`` and inside BBOX."""
    ids = set()
    for (kind, eid), versions in history().items():
        seen = [v for v in versions if v["timestamp"] <= as_of]
        if seen and seen[-1]["visible"] and _shape(kind, seen[-1]).intersects(shapely.box(*BBOX)):
            ids.add(f"{kind}/{eid}")
    return ids - {f"way/{OPEN_WAY}"}


def test_today_reads_the_current_data_with_osm_ids(overpass: str) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    got, info = read(overpass, today)
    assert "[date:" not in sent_query()  # today: the current data
    assert set(got.feature_id) == expected_ids("9999")
    assert info["dropped"] == {"LineString": 1} and info["crs"] == "EPSG:4326"
    assert f"way/{DELETED}" not in set(got.feature_id)
    by_id = got.set_index("feature_id")
    for wid, geom in zip(WITH_ID.osm_id.astype(int), WITH_ID.geometry, strict=True):
        if f"way/{wid}" in by_id.index and wid != MODIFIED:
            assert by_id.geometry[f"way/{wid}"].equals_exact(geom, 0)  # the real footprint
    modified = by_id.loc[f"way/{MODIFIED}"]
    assert (modified.building, modified["name"], modified.osm_version) == ("house", "Ghar", 2)
    assert modified.osm_timestamp == CHANGED and modified.osm_type == "way"
    relation = by_id.geometry[f"relation/{RELATION}"]
    outer = BUILDINGS[BUILDINGS.osm_id.isna()].geometry.iloc[0]
    assert relation.geom_type == "Polygon" and len(relation.interiors) == 1
    assert relation.area == pytest.approx(outer.area * (1 - 0.09))  # the hole is 0.3 x 0.3


def test_a_past_step_reads_osm_as_it_was(overpass: str) -> None:
    got, _ = read(overpass, "2020-01-01")
    assert '[date:"2020-01-01T00:00:00Z"]' in sent_query()
    assert set(got.feature_id) == expected_ids("2020-01-01T00:00:00Z")
    ids = set(got.feature_id)
    assert f"way/{DELETED}" in ids and f"way/{ADDED}" not in ids
    old = got.set_index("feature_id").loc[f"way/{MODIFIED}"]
    assert old.building == "yes" and old.osm_version == 1
    original = WITH_ID.geometry[WITH_ID.osm_id == MODIFIED].iloc[0]
    assert old.geometry.equals_exact(original, 0)


def test_the_bbox_goes_into_the_query_south_west_north_east(overpass: str) -> None:
    got, info = read(overpass, "2022-01-01")
    query = sent_query()
    assert query.count("(27.6200000,85.5350000,27.6300000,85.5400000);") == 2
    assert 'way["building"]["building"!="no"](' in query
    assert 'relation["building"]["building"!="no"]["type"="multipolygon"](' in query
    assert got.intersects(shapely.box(*BBOX)).all() and info["n_read"] == len(got) + 1
    everything = len([k for k in history() if k != ("way", OPEN_WAY)])
    assert 0 < len(got) < everything


def test_extra_tag_filter(overpass: str) -> None:
    got, _ = read(overpass, None, tags={"building": "house", "name": None})
    assert '["building"="house"]["name"]' in sent_query()
    assert got.feature_id.tolist() == [f"way/{MODIFIED}"]


def test_fingerprint_follows_the_elements(overpass: str) -> None:
    def fingerprint(step: str | None) -> str:
        with open_vector(OverpassSpec(url=overpass), step=step, bbox=BBOX) as src:
            return src.fingerprint()

    now = fingerprint(None)
    assert fingerprint(None) == now
    assert fingerprint("2022-01-01") == now  # nothing changed since 2021-06-01
    assert fingerprint("2020-01-01") != now
    versions = Overpass.data["way", ADDED]
    versions.append({**versions[-1], "version": 2, "timestamp": "2023-01-01T00:00:00Z"})
    assert fingerprint(None) != now  # a new version, even with the same geometry
    assert fingerprint("2022-01-01") == now


def test_retries_a_busy_server(overpass: str) -> None:
    Overpass.fail_first = 2
    got, _ = read(overpass, None)
    assert len(got) > 0 and len(Overpass.requests) == 3


def test_a_runtime_error_remark_is_an_error(overpass: str) -> None:
    Overpass.remark = 'runtime error: Query timed out in "query" at line 3 after 26 seconds.'
    with pytest.raises(VectorDataError, match=r"stopped the query \(runtime error: Query timed"):
        read(overpass, None)


def test_errors_name_the_service_with_the_query_string_masked(overpass: str) -> None:
    base = overpass.rsplit("/api/", 1)[0]
    with pytest.raises(VectorDataError) as e:
        read(f"{base}/wrong?key=SECRET", None)
    text = str(e.value)
    assert text.startswith(f"overpass {base}/wrong?***: query failed (HTTP Error 400")
    assert "no such endpoint" in text and "SECRET" not in text
    with pytest.raises(VectorDataError, match="cannot read everything"):
        read(overpass, None, bbox=None)


def test_latest_step_is_until() -> None:
    spec = OverpassSpec()
    assert latest_step(spec, until="2024-05-01", imagery=False) == "2024-05-01"
    assert urllib.parse.urlsplit(spec.path).netloc == "overpass-api.de"
