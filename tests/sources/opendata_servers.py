"""Loopback servers for the open-data source tests, and the real OSM buildings they serve.

* :func:`serve` — a ``ThreadingHTTPServer`` on a free 127.0.0.1 port in a thread, with a
  handler class; the handler's ``requests`` list records what it was asked. (The
  sources talk urllib, which releases the GIL, so a thread is enough.)
* :class:`MapServerWfs` — MapServer's ``mapserv`` CGI (Debian ``cgi-mapserver``) behind
  a tiny Python CGI gateway: a real WFS 2.0 / 1.1.0 server over a GeoJSON file.
* :func:`osm_buildings` — the 80 real OSM buildings of Lalitpur (57 with ``osm_id``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import geopandas as gpd

DATA = Path(__file__).resolve().parents[1] / "data"
OSM = DATA / "oam-lalitpur" / "buildings_osm.geojson"


def osm_buildings() -> gpd.GeoDataFrame:
    """The real OSM buildings (EPSG:4326, ``osm_id`` float with 23 NaN)."""
    return gpd.read_file(OSM)


class RecordingHandler(BaseHTTPRequestHandler):
    """Base handler: quiet, records ``(method, path, params)``; subclasses answer."""

    requests: list[tuple[str, str, dict[str, str]]] = []

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def params(self) -> tuple[str, dict[str, str]]:
        """``(path, parameters)`` of a GET query string or a form-encoded POST body."""
        parts = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
        if self.command == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            params |= dict(urllib.parse.parse_qsl(body, keep_blank_values=True))
        type(self).requests.append((self.command, parts.path, params))
        return parts.path, params

    def reply(self, status: int, body: bytes | str | dict, content_type: str = "") -> None:
        if isinstance(body, dict):
            body, content_type = json.dumps(body), content_type or "application/json"
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type or "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Run ``handler`` on a free loopback port; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- MapServer WFS --------------------------------------------------------------------

MAPFILE = """MAP
  NAME "geoaudit"
  EXTENT 85.5 27.6 85.6 27.7
  PROJECTION "init=epsg:4326" END
  WEB
    METADATA
      "wfs_title" "GeoAudit test WFS"
      "wfs_onlineresource" "{url}?"
      "wfs_srs" "EPSG:4326 EPSG:3857"
      "wfs_enable_request" "*"
      "wfs_maxfeatures" "{max_features}"
      {formats}
    END
  END
  OUTPUTFORMAT
    NAME "geojson"
    DRIVER "OGR/GEOJSON"
    MIMETYPE "application/json; subtype=geojson"
    FORMATOPTION "STORAGE=stream"
    FORMATOPTION "FORM=SIMPLE"
  END
  LAYER
    NAME "buildings"
    TYPE POLYGON
    STATUS ON
    CONNECTIONTYPE OGR
    CONNECTION "{data}"
    PROJECTION "init=epsg:4326" END
    METADATA
      "wfs_title" "buildings"
      "gml_include_items" "all"
      "gml_featureid" "bid"
      "gml_types" "auto"
      "wfs_enable_request" "*"
    END
  END
END
"""


class MapServerWfs:
    """``mapserv`` as a WFS over ``data`` (GeoJSON): ``/wfs`` offers GeoJSON output,
    ``/wfs-gml`` only GML; at most ``max_features`` per GetFeature (CountDefault)."""

    def __init__(self, root: Path, data: Path, *, max_features: int = 30) -> None:
        self.root, self.data, self.max_features = root, data, max_features
        self.config = root / "mapserver.conf"
        self.config.write_text(f'CONFIG\n  ENV\n    MS_MAP_PATTERN "^{root}/"\n  END\nEND\n')

    def write_maps(self, url: str) -> None:
        for name, formats in (
            ("wfs", '"wfs_getfeature_formatlist" "geojson"'),
            ("wfs-gml", ""),
        ):
            text = MAPFILE.format(
                url=f"{url}/{name}", max_features=self.max_features, formats=formats, data=self.data
            )
            (self.root / f"{name}.map").write_text(text)

    def handler(self) -> type[RecordingHandler]:
        wfs = self

        class Cgi(RecordingHandler):
            requests: list = []

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path, _ = self.params()
                mapfile = wfs.root / f"{path.strip('/')}.map"
                if not mapfile.exists():
                    self.reply(404, "no such service", "text/plain")
                    return
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "REQUEST_METHOD": "GET",
                    "QUERY_STRING": urllib.parse.urlsplit(self.path).query,
                    "MAPSERVER_CONFIG_FILE": str(wfs.config),
                    "MS_MAPFILE": str(mapfile),
                    "SERVER_NAME": "127.0.0.1",
                }
                out = subprocess.run(  # noqa: S603 (the test's own CGI)
                    [shutil.which("mapserv") or "mapserv"],
                    env=env,
                    capture_output=True,
                    timeout=30,
                    check=False,
                ).stdout
                ends = [
                    (i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := out.find(sep)) >= 0
                ]
                end, size = min(ends) if ends else (0, 0)
                head, body = out[:end], out[end + size :]
                headers = dict(
                    line.split(": ", 1) for line in head.decode().splitlines() if ": " in line
                )
                status = int(headers.pop("Status", "200").split()[0])
                self.reply(status, body, headers.get("Content-Type", "text/xml"))

        return Cgi
