"""The dashboard in a real headless Chromium (Debian's ``chromium``): every page opens
with no error on screen and shows what it waits for while it loads; screenshots go to
a folder the test prints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from basemap_server import basemap_server

REPO = Path(__file__).resolve().parents[2]

CHROMIUM = Path(os.environ.get("GEOAUDIT_CHROMIUM", "/usr/bin/chromium"))
PAGES = {
    "": "GeoAudit: open data against imagery",  # the root opens /overview
    "overview": "GeoAudit: open data against imagery",
    "trends": "Trends",
    "hotspots": "Hotspots map",
    "tile-inspector": "Tile inspector",
    "changes": "Changes",
    "review": "Review queue",
    "runs": "Runs",
    "models": "Models",
}
ERRORS = "[data-testid=stException], [data-testid=stAlertContentError]"
# every loading message the page showed, recorded as it appears
RECORD_SPINNERS = """
window.__spinners = [];
new MutationObserver(() => {
  for (const el of document.querySelectorAll("[data-testid=stSpinner]")) {
    const text = el.innerText.trim();
    if (text && !window.__spinners.includes(text)) window.__spinners.push(text);
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slow_basemap(monkeypatch):
    """A basemap server that answers each tile after 0.1 s: the hotspots map waits for
    it a few seconds, as it would for a distant server."""
    with basemap_server(delay_s=0.1) as (url, requested):
        monkeypatch.setenv("GEOAUDIT_BASEMAP_URL", url)
        yield requested


@pytest.fixture
def dashboard_url(app_env, slow_basemap, tmp_path):
    """``streamlit run dashboard/app.py`` on the audited town, with a slow basemap; its URL."""
    port = _free_port()
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(REPO / "dashboard" / "app.py"),
            "--server.headless",
            "true",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ],
        env=os.environ.copy(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"streamlit did not start: {(tmp_path / 'streamlit.log').read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _settle(page) -> None:
    """Wait until the page has a title and the app has stopped running for 1 s."""
    page.wait_for_selector("h1", timeout=60_000)
    quiet = 0
    while quiet < 4:
        page.wait_for_timeout(250)
        running = page.locator("[data-testid=stStatusWidget]").count() > 0
        quiet = 0 if running else quiet + 1


@pytest.mark.parametrize("audited", ["sqlite"], indirect=True)
def test_every_page_in_headless_chromium(dashboard_url, slow_basemap, tmp_path_factory, capsys):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    shots = tmp_path_factory.mktemp("dashboard-screenshots")
    with capsys.disabled():
        print(f"\ndashboard screenshots: {shots}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.add_init_script(RECORD_SPINNERS)
            console_errors: list[str] = []
            page.on("pageerror", lambda exc: console_errors.append(str(exc)))
            for path, title in PAGES.items():
                page.goto(f"{dashboard_url}/{path}")
                _settle(page)
                page.screenshot(path=str(shots / f"{path or 'root'}.png"), full_page=True)
                # the path only: pages add their selection as ?aoi=... to the URL
                assert urlparse(page.url).path.rstrip("/").endswith(f"/{path or 'overview'}")
                assert page.locator("h1").first.inner_text() == title
                errors = page.locator(ERRORS)
                assert errors.count() == 0, f"/{path}: {errors.first.inner_text()}"
                assert "Traceback" not in page.inner_text("body"), f"/{path} shows a traceback"
                # .streamlit/config.toml: a viewer's toolbar, no Deploy button
                assert page.locator("[data-testid=stAppDeployButton]").count() == 0
                assert page.get_by_role("button", name="Deploy").count() == 0
                # without an identified reviewer, no write path is open over HTTP
                if path == "runs":
                    trigger = page.get_by_role("button", name="Trigger audit")
                    assert trigger.count() == 1 and trigger.is_disabled()
                if path == "review":
                    for label in ("Save verdict", "Done reviewing: ask Airflow to retrain"):
                        assert page.get_by_role("button", name=label).count() == 0, label
                if path == "hotspots":  # the deck.gl map drew on its canvas
                    assert page.locator("canvas").count() >= 1
                    # what a reviewer reads is on; tile errors and changes a click away
                    toggles = {
                        name: page.get_by_role("switch", name=name).is_checked()
                        for name in (
                            "Imagery",
                            "Tiles by error",
                            "Findings",
                            "Changes",
                            "Hotspot cells",
                        )
                    }
                    assert toggles == {
                        "Imagery": True,
                        "Tiles by error": False,
                        "Findings": True,
                        "Changes": False,
                        "Hotspot cells": True,
                    }
                    # while the basemap server is slow, the page says what it waits for
                    assert "Fetching the basemap…" in page.evaluate("window.__spinners")
                    assert slow_basemap, "the basemap was not requested"
                    body = page.inner_text("body")
                    assert "one tile ≈" in body and "° N" in body  # scale and place
                    assert "significant cell (Gi*, false discovery rate 5%)" in body
                if path == "tile-inspector":  # four pictures that really loaded
                    widths = page.eval_on_selector_all(
                        "[data-testid=stImage] img", "imgs => imgs.map(i => i.naturalWidth)"
                    )
                    assert len(widths) == 4 and min(widths) == 256
            assert not console_errors, console_errors
        finally:
            browser.close()
    assert sorted(f.name for f in shots.iterdir()) == sorted(f"{p or 'root'}.png" for p in PAGES)
