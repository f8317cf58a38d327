"""OSM buildings from an extract (``.osm.pbf``) or a history file (``.osh.pbf``), read
with pyosmium (``pip install osmium``).

Rules:
- ``preset: buildings``: closed ways and multipolygon relations tagged ``building=*``
  (not ``building=no``), narrowed by ``tags``; polygons are assembled by osmium's area
  handler (``FileProcessor.with_areas``). Building nodes and open building ways are
  read as points / lines, then dropped and counted like any non-polygon.
- A history file is read as it was at ``<step>T00:00:00Z`` (the instant Overpass's
  ``[date:]`` uses): the versions are walked in file order (type, id, version) and each
  object's newest version with a timestamp at or before it is kept; objects whose kept
  version is deleted are gone. That snapshot is written to a temporary ``.osm.pbf`` and
  read like an extract, so nodes, ways and relations are all as of the date.
- ``feature_id`` = ``way/<id>`` or ``relation/<id>``; attributes ``osm_type``,
  ``osm_id``, ``osm_version``, ``osm_timestamp`` (ISO, UTC) and every tag.
- Fingerprint: sha256 of the file bytes; for a history file of the bytes, the instant
  and the tag filter (the same file gives another snapshot per date).
- ``latest_step``: a history file holds every date, so ``until``; an extract resolves a
  ``{step}`` path to its newest existing date.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import geopandas as gpd
import shapely

from pipeline.errors import ConfigError, VectorDataError
from pipeline.sources.base import is_remote, register_vector, resolve_path, sha256_files
from pipeline.sources.frames import Bbox
from pipeline.sources.service import ServiceSource
from pipeline.sources.specs import OsmPbfSpec, OsmTags
from pipeline.sources.urls import mask_url
from pipeline.sources.vector_http import stream_to_file

log = logging.getLogger(__name__)

HISTORY_SUFFIXES = (".osh", ".osh.pbf", ".osh.xml", ".osh.bz2", ".osh.gz", ".osh.xml.bz2")


def _osmium() -> Any:
    try:
        import osmium
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise VectorDataError(
            f"kind osm_pbf needs pyosmium ({exc}); install it with 'pip install osmium'"
        ) from exc
    return osmium


def cutoff_of(step: str | None, name: str) -> dt.datetime:
    """The instant a history file is read at: ``<step>T00:00:00Z``."""
    if step is None:
        raise ConfigError(f"{name}: a history file is read as of a time step; none was given")
    try:
        day = dt.date.fromisoformat(step)
    except ValueError:
        raise ConfigError(
            f"{name}: time step must be an ISO date YYYY-MM-DD, got {step!r}"
        ) from None
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def is_history_file(path: str) -> bool:
    """True for a ``.osh...`` name, or a file whose header says it has several versions."""
    if path.lower().endswith(HISTORY_SUFFIXES):
        return True
    osmium = _osmium()
    reader = osmium.io.Reader(path, osmium.osm.NOTHING)
    try:
        return bool(reader.header().has_multiple_object_versions)
    finally:
        reader.close()


def write_snapshot(history: str, dest: Path, cutoff: dt.datetime) -> int:
    """Write to ``dest`` each object of ``history`` as it was at ``cutoff``: its newest
    version with ``timestamp <= cutoff``, left out when that version is deleted. Streams
    (one object's versions in memory at a time); returns the number of objects written."""
    osmium = _osmium()
    mutable = osmium.osm.mutable
    written = 0
    pending: tuple[str, dict[str, Any]] | None = None
    current: tuple[str, int] | None = None

    def flush(writer: Any) -> None:
        nonlocal written
        if pending is None or not pending[1]["visible"]:
            return
        kind, attrs = pending
        if kind == "n":
            writer.add_node(mutable.Node(**attrs))
        elif kind == "w":
            writer.add_way(mutable.Way(**attrs))
        else:
            writer.add_relation(mutable.Relation(**attrs))
        written += 1

    writer = osmium.SimpleWriter(str(dest), overwrite=True)
    try:
        for obj in osmium.FileProcessor(history):
            key = (obj.type_str(), obj.id)
            if key != current:
                flush(writer)
                pending, current = None, key
            if obj.timestamp > cutoff:
                continue  # a later version (versions come in order)
            pending = (key[0], _plain(obj))
        flush(writer)
    finally:
        writer.close()
    return written


def _plain(obj: Any) -> dict[str, Any]:
    """An object's attributes as plain values (osmium's objects die with their buffer)."""
    attrs: dict[str, Any] = {
        "id": obj.id,
        "version": obj.version,
        "visible": obj.visible,
        "timestamp": obj.timestamp,
        "changeset": obj.changeset,
        "uid": obj.uid,
        "user": obj.user,
        "tags": {t.k: t.v for t in obj.tags},
    }
    kind = obj.type_str()
    if kind == "n":
        attrs["location"] = (obj.location.lon, obj.location.lat) if obj.visible else None
    elif kind == "w":
        attrs["nodes"] = [n.ref for n in obj.nodes]
    else:
        attrs["members"] = [(m.type, m.ref, m.role) for m in obj.members]
    return attrs


def _matches(tags: Any, extra: OsmTags) -> bool:
    building = tags.get("building")
    if building is None or building == "no":
        return False
    return all(
        (tags.get(k) is not None) if v is None else tags.get(k) == v for k, v in extra.items()
    )


def buildings_frame(path: str, extra: OsmTags) -> gpd.GeoDataFrame:
    """The ``buildings`` preset of an extract as an EPSG:4326 frame (areas as polygons,
    building nodes and open ways as points / lines for the dropped count)."""
    osmium = _osmium()
    wkb = osmium.geom.WKBFactory()
    processor = (
        osmium.FileProcessor(path)
        .with_areas(osmium.filter.KeyFilter("building"))
        .with_filter(osmium.filter.KeyFilter("building"))
    )
    rows: list[dict[str, Any]] = []
    geoms: list[shapely.Geometry | None] = []
    for obj in processor:
        kind = obj.type_str()
        if kind == "r" or not _matches(obj.tags, extra):
            continue  # relations come back as areas
        if kind == "w" and obj.is_closed():
            continue  # closed ways come back as areas too
        try:
            geom = _geometry(obj, kind, wkb)
        except (osmium.InvalidLocationError, RuntimeError) as exc:
            log.debug("%s: %s %d has no geometry (%s)", path, kind, obj.id, exc)
            geom = None
        if kind == "a":
            osm_type, osm_id = ("way" if obj.from_way() else "relation"), obj.orig_id()
        else:
            osm_type, osm_id = ("node" if kind == "n" else "way"), obj.id
        row = {
            "feature_id": f"{osm_type}/{osm_id}",
            "osm_type": osm_type,
            "osm_id": int(osm_id),
            "osm_version": int(obj.version),
            "osm_timestamp": obj.timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        for tag in obj.tags:
            if tag.k not in row and tag.k != "geometry":
                row[tag.k] = tag.v
        rows.append(row)
        geoms.append(geom)
    return gpd.GeoDataFrame(rows, geometry=geoms, crs="EPSG:4326")


def _geometry(obj: Any, kind: str, wkb: Any) -> shapely.Geometry:
    if kind == "a":
        geom = shapely.from_wkb(wkb.create_multipolygon(obj))
        return geom.geoms[0] if len(geom.geoms) == 1 else geom
    if kind == "n":
        return shapely.Point(obj.location.lon, obj.location.lat)
    return shapely.LineString([(n.lon, n.lat) for n in obj.nodes])


@register_vector("osm_pbf")
class OsmPbfSource(ServiceSource):
    """Buildings of an OSM extract or history file (module docstring for the rules)."""

    def __init__(
        self, spec: OsmPbfSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        super().__init__(spec, step=step, base_dir=base_dir)
        self.spec: OsmPbfSpec = spec
        self._location = resolve_path(spec.path, step=step, base_dir=base_dir)
        self.path = mask_url(self._location) if is_remote(self._location) else self._location
        self._remote = is_remote(self._location)
        if self._location.startswith("/vsi"):
            raise ConfigError(
                f"{self.path}: osm_pbf reads local files or URLs, not GDAL /vsi paths"
            )
        if not self._remote and not Path(self._location).is_file():
            raise VectorDataError(f"{self.path}: file not found")
        self._tmp = tempfile.TemporaryDirectory(prefix="geoaudit-osm-")
        self._file: str | None = None if self._remote else self._location
        self._file_sha: str | None = None
        self._history: bool | None = spec.history

    @classmethod
    def latest_step(
        cls, spec: OsmPbfSpec, *, until: str, base_dir: Path | None = None
    ) -> str | None:
        """``until`` for a history file (it holds every date); else as any file."""
        if spec.history or (spec.history is None and spec.path.lower().endswith(HISTORY_SUFFIXES)):
            return until
        return super(ServiceSource, cls).latest_step(spec, until=until, base_dir=base_dir)

    def close(self) -> None:
        self._tmp.cleanup()

    def _local(self) -> str:
        """The file on disk (a URL streamed once to a temporary file)."""
        if self._file is None:
            name = Path(urllib.parse.urlsplit(self._location).path).name or "extract.osm.pbf"
            dest = Path(self._tmp.name) / name
            self._file_sha = stream_to_file(self._location, dest, what=self.path)
            self._file = str(dest)
        return self._file

    def is_history(self) -> bool:
        """``spec.history``, else by the file's name or header."""
        if self._history is None:
            self._history = is_history_file(self._local())
        return self._history

    def _fetch(self, bbox: Bbox | None) -> gpd.GeoDataFrame:
        """Everything (osmium streams the whole file); ``finish`` cuts the bbox."""
        if None in self._raw:
            return self._raw[None]
        source = self._local()
        try:
            if self.is_history():
                cutoff = cutoff_of(self.step, self.path)
                snapshot = Path(self._tmp.name) / "snapshot.osm.pbf"
                n = write_snapshot(source, snapshot, cutoff)
                log.debug("%s: %d objects as of %s", self.path, n, cutoff.isoformat())
                source = str(snapshot)
            frame = buildings_frame(source, self.spec.tags)
        except (RuntimeError, OSError, ValueError) as exc:
            if isinstance(exc, ConfigError | VectorDataError):
                raise
            raise VectorDataError(f"{self.path}: cannot read OSM data ({exc})") from exc
        self._raw[None] = frame
        return frame

    def fingerprint(self) -> str:
        """sha256 of the file bytes; for a history file also of the instant and tag filter."""
        if self._file_sha is None:
            self._file_sha = sha256_files([Path(self._local())])
        if not self.is_history():
            return self._file_sha
        cutoff = cutoff_of(self.step, self.path).isoformat()
        text = f"{self._file_sha}|{cutoff}|{json.dumps(self.spec.tags, sort_keys=True)}"
        return hashlib.sha256(text.encode()).hexdigest()


__all__ = ["OsmPbfSource", "buildings_frame", "write_snapshot"]
