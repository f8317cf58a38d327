"""Controls and formatting shared by the pages."""

from __future__ import annotations

import json
from typing import Any

import geopandas as gpd
import pandas as pd
import streamlit as st

from dashboard import data
from pipeline.results.export import csv_bytes, geojson_bytes
from pipeline.tiles import Tile

QOD_HELP = "Quality of Data (RoboSat.pink), 0-100: how well open data and imagery agree."


def pick_aoi(*, key: str = "aoi") -> pd.Series | None:
    """AOI selector (default: ``?aoi=`` in the URL, then the last one picked); its overview row.

    Shows a hint and returns None when no AOI has been registered yet.
    """
    overview = data.q("aoi_overview")
    if overview.empty:
        st.info(
            "No AOI yet. Run `make demo` (or `geoaudit aoi add` and `geoaudit audit`) first; "
            f"this dashboard reads `{_shown_url()}`."
        )
        return None
    names = list(overview["aoi"])
    wanted = st.query_params.get("aoi") or st.session_state.get("aoi_name")
    index = names.index(wanted) if wanted in names else 0
    name = st.sidebar.selectbox("AOI", names, index=index, key=key)
    st.session_state["aoi_name"] = name
    if st.query_params.get("aoi") != name:
        st.query_params["aoi"] = name
    return overview.set_index("aoi").loc[name].rename(name)


def pick_step(
    aoi_id: int, *, label: str = "Time step", key: str = "step"
) -> tuple[str, int] | None:
    """Audited step of an AOI (newest first) and the run that stands for it."""
    steps = data.q("audited_steps", aoi_id=aoi_id)
    if steps.empty:
        st.info("This AOI has no finished audit yet.")
        return None
    options = list(steps["step"])
    wanted = st.query_params.get("step")
    index = options.index(wanted) if wanted in options else 0
    step = st.sidebar.selectbox(label, options, index=index, key=key)
    run_id = int(steps.loc[steps["step"] == step, "run_id"].iloc[0])
    return step, run_id


def downloads(frame: gpd.GeoDataFrame, name: str, *, key: str) -> None:
    """GeoJSON and CSV download buttons for a frame of findings or changes."""
    formats = (
        ("GeoJSON", "geojson", geojson_bytes, "application/geo+json"),
        ("CSV", "csv", csv_bytes, "text/csv"),
    )
    for column, (label, suffix, encode, mime) in zip(st.columns(2), formats, strict=True):
        column.download_button(
            f"Download {label}",
            encode(frame),
            file_name=f"{name}.{suffix}",
            mime=mime,
            key=f"{key}-{suffix}",
            help=f"{name}.{suffix}",
            icon=":material/download:",
            disabled=frame.empty,
        )


def pick_audited_step() -> tuple[pd.Series, str, int]:
    """AOI and audited step pickers for a page about one run: (AOI row, step, run id).

    Stops the page with a hint when there is no AOI or no finished audit yet.
    """
    aoi = pick_aoi()
    if aoi is None:
        st.stop()
    picked = pick_step(int(aoi["aoi_id"]))
    if picked is None:
        st.stop()
    step, run_id = picked
    return aoi, step, run_id


def tile_label(t: Tile) -> str:
    """``z/x/y`` text of a tile."""
    return f"{t.z}/{t.x}/{t.y}"


def parse_tile(text: str) -> Tile:
    """``z/x/y`` back to a Tile."""
    z, x, y = (int(v) for v in text.split("/"))
    return Tile(x, y, z)


def duration(started: pd.Series, finished: pd.Series) -> pd.Series:
    """Seconds between two timestamp columns (NaN while running)."""
    return (
        pd.to_datetime(finished, utc=True) - pd.to_datetime(started, utc=True)
    ).dt.total_seconds()


def _shown_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(data.settings().resolved_database_url).render_as_string(hide_password=True)


def json_value(value: Any) -> Any:
    """A JSON column's value as Python (SQLite returns text, PostgreSQL parsed JSON)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict | list) else None


def rounded(value: Any, digits: int = 3) -> Any:
    """``value`` (JSON-like) with every float rounded for reading (242.619100159 s is
    242.619 s); other values as they are."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value
