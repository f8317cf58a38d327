"""Real servers on loopback for the remote imagery tests, and the data they serve.

* :class:`TileServer`: a threading ``http.server`` over a folder of tiles, with ETags
  (``If-None-Match`` -> 304), a request log and per-path status overrides;
* :func:`mapserver`: MapServer's ``mapserv`` (Debian ``cgi-mapserver``) behind a small
  CGI-calling HTTP server, serving a GeoTIFF as WMS 1.1.1 / 1.3.0;
* :func:`uvicorn`: an ASGI app (titiler, stac-fastapi-pgstac) in a subprocess;
* :func:`write_cog`: a COG (EPSG:3857, RGB + alpha) made from the real XYZ tiles.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import mercantile
import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

TILES = Path(__file__).resolve().parents[1] / "data" / "oam-lalitpur" / "tiles"
# The northern cluster: z19 tiles x 386718-386719, y 220252-220253, all inside the z17
# shard (96679, 55063); with work zoom 19 they are blocks rows 0-1, columns 2-3.
NORTH_Z19 = [(x, y) for y in (220252, 220253) for x in (386718, 386719)]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- static tiles --------------------------------------------------------------------------


@dataclass
class TileServer:
    """Files under ``root`` at ``url``; ``log`` holds ``(path, status, headers)`` per
    request, ``status`` maps a path (without query) to a forced HTTP status, ``bodies`` to
    a body served with 200 as ``text/xml``, ``required_query`` answers 403 to a request
    without those parameters; HEAD answers as GET without the body."""

    root: Path
    url: str = ""
    log: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)
    status: dict[str, int] = field(default_factory=dict)
    bodies: dict[str, bytes] = field(default_factory=dict)
    #: query parameters every request must carry (an API key), else 403
    required_query: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, status: int | None = None) -> list[str]:
        """Paths requested (with that status)."""
        return [p for p, s, _h in self.log if status is None or s == status]


def _tile_handler(server: TileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
            self._answer(head=True)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            with server.lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._answer()
            finally:
                with server.lock:
                    server.in_flight -= 1

        def _answer(self, head: bool = False) -> None:
            if server.delay_s:
                time.sleep(server.delay_s)
            path = urllib.parse.urlsplit(self.path).path
            headers = {k: v for k, v in self.headers.items()}
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            forced = server.status.get(path)
            if any(query.get(k) != v for k, v in server.required_query.items()):
                forced = 403
            file = server.root / urllib.parse.unquote(path).lstrip("/")
            if forced is not None:
                status, body, etag = forced, b"", None
            elif path in server.bodies:
                status, body, etag = 200, server.bodies[path], None
            elif not file.is_file():
                status, body, etag = 404, b"", None
            else:
                body = file.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                status = 304 if self.headers.get("If-None-Match") == etag else 200
            server.log.append((path, status, headers))
            self.send_response(status)
            if etag:
                self.send_header("ETag", etag)
            if status == 200:
                kind = "image/jpeg" if file.suffix == ".jpg" else "image/png"
                self.send_header("Content-Type", "text/xml" if path in server.bodies else kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
            else:
                self.send_header("Content-Length", "0")
                self.end_headers()

    return Handler


@contextmanager
def tile_server(root: Path) -> Iterator[TileServer]:
    """A :class:`TileServer` over ``root`` on a free loopback port, stopped on exit."""
    state = TileServer(root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _tile_handler(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def copy_tiles(dest: Path, zooms: tuple[int, ...] = (19, 20)) -> Path:
    """A copy of the real Lalitpur tile tree (the zooms asked for) under ``dest``."""
    for z in zooms:
        shutil.copytree(TILES / str(z), dest / str(z))
    return dest


def jpeg_tiles(dest: Path, border: int = 32) -> Path:
    """The z19 tiles as JPEGs: transparent pixels and a ``border``-px frame black,
    as a JPEG tile service fills the area outside its image."""
    for png in (TILES / "19").glob("*/*.png"):
        rgba = np.asarray(Image.open(png).convert("RGBA")).copy()
        rgba[rgba[..., 3] == 0, :3] = 0
        for side in (np.s_[:border], np.s_[-border:]):
            rgba[side, :, :3] = 0
            rgba[:, side, :3] = 0
        out = dest / "19" / png.parent.name / f"{png.stem}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba[..., :3]).save(out, quality=90)
    return dest


# --- a COG from the tiles ------------------------------------------------------------------


def mosaic_of(keys: list[tuple[int, int]], z: int = 19) -> tuple[np.ndarray, Affine]:
    """``(rgba (4, H, W) uint8, transform)`` of the tiles ``keys`` at ``z`` (a rectangle)."""
    xs, ys = sorted({x for x, _ in keys}), sorted({y for _, y in keys})
    rgba = np.zeros((4, 256 * len(ys), 256 * len(xs)), np.uint8)
    for x, y in keys:
        tile = np.asarray(Image.open(TILES / str(z) / str(x) / f"{y}.png").convert("RGBA"))
        r, c = ys.index(y), xs.index(x)
        rgba[:, r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = tile.transpose(2, 0, 1)
    b = mercantile.xy_bounds(xs[0], ys[0], z)
    res = (b.right - b.left) / 256
    return rgba, Affine(res, 0, b.left, 0, -res, b.top)


def write_cog(path: Path, rgba: np.ndarray, transform: Affine) -> Path:
    """An EPSG:3857 COG, RGB + alpha band (alpha 0 = no data)."""
    profile = {
        "driver": "COG",
        "width": rgba.shape[2],
        "height": rgba.shape[1],
        "count": 4,
        "dtype": "uint8",
        "crs": "EPSG:3857",
        "transform": transform,
        "blocksize": 256,
        "compress": "deflate",
        "overviews": "NONE",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(rgba)
        dst.colorinterp = [
            rasterio.enums.ColorInterp.red,
            rasterio.enums.ColorInterp.green,
            rasterio.enums.ColorInterp.blue,
            rasterio.enums.ColorInterp.alpha,
        ]
    return path


# --- MapServer WMS ------------------------------------------------------------------------

MAPFILE = """MAP
  NAME "geoaudit"
  EXTENT -20037508.34 -20037508.34 20037508.34 20037508.34
  SIZE 256 256
  MAXSIZE 4096
  PROJECTION "init=epsg:3857" END
  OUTPUTFORMAT NAME "png" DRIVER "AGG/PNG" MIMETYPE "image/png" IMAGEMODE RGBA
    EXTENSION "png" TRANSPARENT ON END
  OUTPUTFORMAT NAME "jpeg" DRIVER "AGG/JPEG" MIMETYPE "image/jpeg" IMAGEMODE RGB
    EXTENSION "jpg" END
  WEB METADATA
    "ows_title" "GeoAudit test"
    "ows_enable_request" "*"
    "ows_srs" "EPSG:3857 EPSG:4326"
    "ows_onlineresource" "{url}/?"
  END END
  LAYER
    NAME "ortho"
    TYPE RASTER
    STATUS ON
    DATA "{data}"
    PROJECTION "init=epsg:3857" END
    METADATA "ows_title" "ortho" END
  END
END
"""


@contextmanager
def mapserver(data: Path, workdir: Path) -> Iterator[str]:
    """MapServer WMS of the raster ``data`` at the returned base URL.

    Each request runs ``mapserv -conf <conf> QUERY_STRING=...`` (MapServer 8's
    command-line CGI mode) and relays its CGI headers and body.
    """
    mapserv = shutil.which("mapserv")
    if mapserv is None:
        pytest.fail(
            "MapServer's mapserv is not installed: apt-get install -y cgi-mapserver mapserver-bin",
            pytrace=False,
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mapfile = workdir / "wms.map"
    mapfile.write_text(MAPFILE.replace("{url}", url).replace("{data}", str(data)))
    conf = workdir / "mapserver.conf"
    conf.write_text(f'CONFIG\n  MAPS\n    GEOAUDIT "{mapfile}"\n  END\nEND\n')

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            query = urllib.parse.urlsplit(self.path).query
            done = subprocess.run(  # noqa: S603 (our test binary)
                [mapserv, "-conf", str(conf), f"QUERY_STRING=map=GEOAUDIT&{query}"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            head, _, body = done.stdout.partition(b"\r\n\r\n")
            self.send_response(200)
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() in ("content-type",):
                    self.send_header(name, value.strip())
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- ASGI apps with uvicorn -----------------------------------------------------------------


@contextmanager
def uvicorn(
    app: str, *, env: dict[str, str] | None = None, cwd: Path | None = None, ready: str = "/"
) -> Iterator[str]:
    """``uvicorn app`` on a free loopback port in a subprocess; yields its URL once
    ``ready`` answers 200, stops it on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (cwd or Path.cwd()) / f"uvicorn-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(  # noqa: S603 (our test server)
            [
                str(VENV_BIN / "python"),
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--log-level",
                "warning",
            ],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{app} exited at start: {log.read_text()[-2000:]}", pytrace=False)
            try:
                if httpx.get(url + ready, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{app} did not answer {ready} in 60 s: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
