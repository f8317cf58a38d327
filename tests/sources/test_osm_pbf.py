"""kind: osm_pbf on OSM files written here with pyosmium's SimpleWriter from the real
Lalitpur buildings: a history file (.osh.pbf) with buildings at two timestamps (one
added later, one deleted later, one modified) and an extract (.osm.pbf)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import osmium
import pytest
import shapely
import shapely.affinity
from opendata_servers import osm_buildings
from osmium.osm import mutable

from pipeline.errors import ConfigError
from pipeline.sources import open_vector
from pipeline.sources.base import latest_step
from pipeline.sources.specs import OsmPbfSpec

T0 = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
T1 = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
SHIFT = 2e-5
REAL = osm_buildings()
WAYS = REAL[REAL.osm_id.notna()].head(10).reset_index(drop=True)  # ten real buildings
ADDED, DELETED, MODIFIED = (int(v) for v in WAYS.osm_id[:3])
RELATION, POINT_NODE, OPEN_WAY = 77, 5_000_000, 6_000_000


def _meta(version: int, when: dt.datetime, visible: bool = True) -> dict:
    return {"version": version, "timestamp": when, "visible": visible, "changeset": version,
            "uid": 1, "user": "mapper"}  # fmt: skip


def write_osm(path: Path, *, history: bool) -> None:
    """The test data; without ``history`` only the state at T1 (an extract)."""
    nodes: list[tuple[int, int, dt.datetime, tuple[float, float] | None, dict]] = []
    ways: list[tuple[int, int, dt.datetime, list[int], dict, bool]] = []
    nid = 1_000
    refs_of: dict[int, list[int]] = {}
    for wid, geom in zip(WAYS.osm_id.astype(int), WAYS.geometry, strict=True):
        coords = list(geom.exterior.coords)[:-1]
        refs = refs_of[wid] = list(range(nid, nid + len(coords)))
        nid += len(coords)
        born = T1 if wid == ADDED else T0
        for ref, xy in zip(refs, coords, strict=True):
            nodes.append((ref, 1, born, xy, {}))
            if wid == MODIFIED:  # every node moved at T1
                nodes.append((ref, 2, T1, (xy[0] + SHIFT, xy[1]), {}))
        ways.append((wid, 1, born, [*refs, refs[0]], {"building": "yes"}, True))
        if wid == DELETED:
            ways.append((wid, 2, T1, [], {}, False))
        if wid == MODIFIED:
            ways.append((wid, 2, T1, [*refs, refs[0]], {"building": "house", "name": "Ghar"}, True))
    # a multipolygon relation: outer = a real building without osm id, a 0.3 hole inside
    outer_poly = REAL[REAL.osm_id.isna()].geometry.iloc[0]
    inner_poly = shapely.affinity.scale(outer_poly, 0.3, 0.3)
    member_ways = []
    for k, poly in enumerate((outer_poly, inner_poly)):
        coords = list(poly.exterior.coords)[:-1]
        refs = list(range(nid, nid + len(coords)))
        nid += len(coords)
        nodes += [(ref, 1, T0, xy, {}) for ref, xy in zip(refs, coords, strict=True)]
        ways.append((700 + k, 1, T0, [*refs, refs[0]], {}, True))
        member_ways.append(700 + k)
    # a building node and an open building way: read, then dropped
    nodes.append(
        (POINT_NODE, 1, T0, tuple(WAYS.geometry[5].centroid.coords[0]), {"building": "yes"})
    )
    open_refs = refs_of[int(WAYS.osm_id[5])][:3]  # nodes of a building there since T0
    ways.append((OPEN_WAY, 1, T0, open_refs, {"building": "yes"}, True))

    def keep(versions: list, key=lambda v: v[0]) -> list:  # noqa: ANN001
        """History: every version; extract: the last version of each visible object."""
        if history:
            return sorted(versions, key=lambda v: (key(v), v[1]))
        last: dict = {}
        for v in sorted(versions, key=lambda v: (key(v), v[1])):
            last[key(v)] = v
        return [v for v in last.values() if not (len(v) > 5 and not v[5])]

    header = osmium.io.Header()
    header.has_multiple_object_versions = history
    writer = osmium.SimpleWriter(str(path), header=header, overwrite=True)
    try:
        for ref, version, when, xy, tags in keep(nodes):
            writer.add_node(mutable.Node(id=ref, location=xy, tags=tags, **_meta(version, when)))
        for wid, version, when, refs, tags, visible in keep(ways):
            meta = _meta(version, when, visible)
            writer.add_way(mutable.Way(id=wid, nodes=refs, tags=tags, **meta))
        members = [("w", member_ways[0], "outer"), ("w", member_ways[1], "inner")]
        tags = {"type": "multipolygon", "building": "yes"}
        writer.add_relation(
            mutable.Relation(id=RELATION, members=members, tags=tags, **_meta(1, T0))
        )
    finally:
        writer.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("osm")
    write_osm(root / "lalitpur.osh.pbf", history=True)
    write_osm(root / "lalitpur.osm.pbf", history=False)
    return root / "lalitpur.osh.pbf", root / "lalitpur.osm.pbf"


def read(path: Path, step: str | None, **spec):  # noqa: ANN001, ANN201
    with open_vector(OsmPbfSpec(path=str(path), **spec), step=step) as src:
        return src.read(), src.read_info()


def real(wid: int) -> shapely.Geometry:
    return WAYS.geometry[WAYS.osm_id == wid].iloc[0]


ALL = {f"way/{int(v)}" for v in WAYS.osm_id} | {f"relation/{RELATION}"}


def test_history_as_of_each_date(files: tuple[Path, Path]) -> None:
    history, _ = files
    before, info = read(history, "2021-01-01")
    assert set(before.feature_id) == ALL - {f"way/{ADDED}"}
    assert info["dropped"] == {"LineString": 1, "Point": 1} and info["n_read"] == len(before) + 2
    old = before.set_index("feature_id").loc[f"way/{MODIFIED}"]
    assert (old.building, old.osm_version, old.osm_timestamp) == ("yes", 1, "2020-01-01T00:00:00Z")
    assert old.geometry.equals_exact(real(MODIFIED), 1e-7)  # OSM stores 7 decimals

    after, _ = read(history, "2023-01-01")
    assert set(after.feature_id) == ALL - {f"way/{DELETED}"}
    new = after.set_index("feature_id").loc[f"way/{MODIFIED}"]
    assert (new.building, new["name"], new.osm_version) == ("house", "Ghar", 2)
    moved = shapely.affinity.translate(real(MODIFIED), SHIFT, 0)
    assert new.geometry.equals_exact(moved, 1e-7)  # the nodes as of the date, too
    assert after.set_index("feature_id").geometry[f"way/{ADDED}"].equals_exact(real(ADDED), 1e-7)

    on_the_day, _ = read(history, "2022-01-01")  # T1 is 2022-01-01T00:00:00Z: included
    assert set(on_the_day.feature_id) == set(after.feature_id)
    nothing, _ = read(history, "2019-12-31")
    assert len(nothing) == 0


def test_relation_is_assembled_with_its_hole(files: tuple[Path, Path]) -> None:
    got, _ = read(files[0], "2023-01-01")
    relation = got.set_index("feature_id").geometry[f"relation/{RELATION}"]
    outer = REAL[REAL.osm_id.isna()].geometry.iloc[0]
    assert relation.geom_type == "Polygon" and len(relation.interiors) == 1
    assert relation.area == pytest.approx(outer.area * 0.91, rel=1e-3)


def test_extract_reads_the_current_state(files: tuple[Path, Path]) -> None:
    history, extract = files
    got, _ = read(extract, None)
    as_of, _ = read(history, "2023-01-01")
    assert set(got.feature_id) == set(as_of.feature_id)
    got, as_of = got.set_index("feature_id"), as_of.set_index("feature_id")
    assert shapely.equals_exact(
        got.geometry.loc[as_of.index].values, as_of.geometry.values, 0
    ).all()
    houses, _ = read(extract, None, tags={"building": "house"})
    assert houses.feature_id.tolist() == [f"way/{MODIFIED}"]


def test_fingerprints(files: tuple[Path, Path], tmp_path: Path) -> None:
    history, extract = files

    def fingerprint(path: Path, step: str | None) -> str:
        with open_vector(OsmPbfSpec(path=str(path)), step=step) as src:
            return src.fingerprint()

    assert fingerprint(extract, None) == hashlib.sha256(extract.read_bytes()).hexdigest()
    assert fingerprint(history, "2021-01-01") == fingerprint(history, "2021-01-01")
    assert fingerprint(history, "2021-01-01") != fingerprint(history, "2023-01-01")
    changed = tmp_path / "changed.osh.pbf"
    changed.write_bytes(history.read_bytes() + b"\0")
    assert fingerprint(changed, "2021-01-01") != fingerprint(history, "2021-01-01")


def test_latest_step(files: tuple[Path, Path], tmp_path: Path) -> None:
    history, extract = files
    spec = OsmPbfSpec(path=str(history))
    assert latest_step(spec, until="2024-05-01", imagery=False) == "2024-05-01"
    for day in ("2024-01-01", "2024-03-01", "2024-09-01"):
        (tmp_path / f"{day}.osm.pbf").write_bytes(extract.read_bytes())
    templated = OsmPbfSpec(path="{step}.osm.pbf")
    assert latest_step(templated, until="2024-05-01", base_dir=tmp_path, imagery=False) == (
        "2024-03-01"
    )


def test_a_history_file_needs_a_step(files: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match=r"lalitpur\.osh\.pbf: a history file is read as of"):
        read(files[0], None)
