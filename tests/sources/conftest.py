"""Helpers for the source tests: tiny GeoTIFFs and a local HTTP server with Range support."""

from __future__ import annotations

import functools
import multiprocessing
import os
import re
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine


def write_tif(
    path: Path,
    array: np.ndarray,
    *,
    crs: str | None,
    transform: Affine,
    nodata: float | None = None,
    **extra: object,
) -> Path:
    """Write a (bands, H, W) array as a GeoTIFF (crs None: no georeferencing CRS)."""
    profile = {
        "driver": "GTiff",
        "count": array.shape[0],
        "height": array.shape[1],
        "width": array.shape[2],
        "dtype": array.dtype,
        "transform": transform,
        "nodata": nodata,
        **extra,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


@pytest.fixture
def make_tif():  # noqa: ANN201
    """The :func:`write_tif` helper, as a fixture (test modules here are not a package)."""
    return write_tif


class _RangeHandler(SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (GDAL's /vsicurl/ reads byte ranges)."""

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def send_head(self):  # type: ignore[override]
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if not match or not os.path.isfile(path):
            return super().send_head()
        data = Path(path).read_bytes()
        start = int(match.group(1))
        end = min(int(match.group(2) or len(data) - 1), len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        import io

        return io.BytesIO(data[start : end + 1])


def _serve(root: str, ports: multiprocessing.Queue) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=root))
    ports.put(server.server_address[1])
    server.serve_forever()


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``(folder, base_url)``: files put in ``folder`` are served at ``base_url/<name>``.

    The server runs in another process: GDAL holds the GIL while it waits for the reply.
    """
    root = tmp_path / "www"
    root.mkdir()
    ports: multiprocessing.Queue = multiprocessing.Queue()
    proc = multiprocessing.get_context("fork").Process(
        target=_serve, args=(str(root), ports), daemon=True
    )
    proc.start()
    try:
        yield root, f"http://127.0.0.1:{ports.get(timeout=10)}"
    finally:
        proc.terminate()
        proc.join(5)
