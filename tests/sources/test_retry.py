"""An unreachable or flaky remote source: retried with backoff, then a clear failure."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.errors import VectorDataError
from pipeline.sources import VectorFileSource, VectorSpec

OSM = Path(__file__).parents[1] / "data" / "oam-lalitpur" / "buildings_osm.geojson"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEOAUDIT_SOURCE_ATTEMPTS", "3")
    monkeypatch.setenv("GEOAUDIT_SOURCE_MAX_WAIT_S", "0.05")


class Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first ``failures`` requests, then serves the OSM file."""

    failures = 0
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        Flaky.seen.append(self.path)
        if len(Flaky.seen) <= Flaky.failures:
            self.send_error(503, "busy")
            return
        body = OSM.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/geo+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # quiet
        pass


@pytest.fixture
def flaky_server() -> Iterator[str]:
    Flaky.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read(url: str):  # noqa: ANN201
    with VectorFileSource(VectorSpec(path=url)) as source:
        return source.read()


def test_a_flaky_server_is_retried_until_it_answers(flaky_server: str) -> None:
    Flaky.failures = 2
    frame = read(f"{flaky_server}/buildings.geojson")
    assert len(frame) == 80
    assert len(Flaky.seen) == 3  # two 503s, then the file


def test_a_server_that_keeps_failing_gives_up_after_the_attempts(flaky_server: str) -> None:
    Flaky.failures = 10
    url = f"{flaky_server}/buildings.geojson"
    with pytest.raises(VectorDataError, match=rf"{url}: cannot download after 3 attempts.*503"):
        read(url)
    assert len(Flaky.seen) == 3


def test_an_unreachable_source_is_retried_then_named(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}/buildings.geojson"
    with pytest.raises(VectorDataError, match=rf"{url}: cannot download after 3 attempts"):
        read(url)
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2


def test_a_missing_file_is_not_retried() -> None:
    Flaky.seen = []

    class NotFound(Flaky):
        def do_GET(self) -> None:  # noqa: N802
            Flaky.seen.append(self.path)
            self.send_error(404, "no such file")

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/gone.geojson"
    try:
        with pytest.raises(VectorDataError, match=r"cannot download \(HTTP Error 404"):
            read(url)
    finally:
        server.shutdown()
        server.server_close()
    assert Flaky.seen == ["/gone.geojson"]  # asked once: a 404 is not transient
