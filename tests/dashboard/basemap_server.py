"""A basemap (XYZ tile) server on loopback for the dashboard tests."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


@contextmanager
def basemap_server(delay_s: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    """A real XYZ tile server on loopback that serves one PNG for every z/x/y, each
    after ``delay_s`` seconds; its URL template and the paths requested."""
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 180, 120)).save(buffer, format="PNG")
    png = buffer.getvalue()
    requested: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            time.sleep(delay_s)
            requested.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(png)))
            self.end_headers()
            self.wfile.write(png)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{{z}}/{{x}}/{{y}}.png", requested
    finally:
        server.shutdown()
        server.server_close()
