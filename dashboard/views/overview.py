"""Overview: every AOI with its latest quality, trend, last run and open findings."""

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.widgets import QOD_HELP

st.title("GeoAudit: open data against imagery")

overview = data.q("aoi_overview")
if overview.empty:
    st.info("No AOI yet. Run `make demo` (or `geoaudit aoi add` and `geoaudit audit`) first.")
    st.stop()

trend = data.q("aoi_trend", aoi_id=None)
sparks = trend.groupby("aoi")["mean_qod"].apply(lambda v: [round(float(x), 2) for x in v])

table = pd.DataFrame(
    {
        "link": "trends?aoi=" + overview["aoi"],
        "latest_step": overview["latest_step"],
        "qod": overview["qod"],
        "qod_change": overview["qod_change"],
        "trend": overview["aoi"].map(sparks).map(lambda v: v if isinstance(v, list) else []),
        "completeness": overview["completeness"],
        "correctness": overview["correctness"],
        "flagged_tile_share": overview["flagged_tile_share"],
        "model": overview["model_trusted"].map({True: "trusted", False: "NOT TRUSTED"}),
        "open_findings": overview["open_findings"].astype(int),
        "last_status": overview["last_status"],
        "last_started_at": overview["last_started_at"],
    }
)

audited = overview.dropna(subset=["qod"])
untrusted = overview[overview["model_trusted"].isin([False, 0])]
if not untrusted.empty:
    st.warning(
        "Findings of "
        + ", ".join(untrusted["aoi"])
        + " come from a model below the AOI's out-of-sample quality floor: they are marked "
        "low-confidence. Review with care, or retrain with more imagery.",
        icon="⚠️",
    )
c1, c2, c3, c4 = st.columns(4)
c1.metric("AOIs", len(overview))
c2.metric("Mean QoD", f"{audited['qod'].mean():.1f}" if not audited.empty else "–", help=QOD_HELP)
c3.metric("Open findings", int(overview["open_findings"].sum()))
c4.metric("Last run failed", int((overview["last_status"] == "failed").sum()))

event = st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    on_select="rerun",
    selection_mode="single-row",
    key="overview_table",
    column_config={
        "link": st.column_config.LinkColumn(
            "AOI", display_text=r"trends\?aoi=(.*)", help="Open the AOI's trends"
        ),
        "latest_step": st.column_config.TextColumn("Latest step", width="small"),
        "qod": st.column_config.NumberColumn("QoD", format="%.1f", help=QOD_HELP, width="small"),
        "qod_change": st.column_config.NumberColumn(
            "Δ QoD", format="%+.1f", help="Change since the previous audited step", width="small"
        ),
        # one scale for every AOI (0-100): a small drop is not drawn as a fall
        "trend": st.column_config.LineChartColumn(
            "QoD trend", y_min=0, y_max=100, help="QoD per audited step, on a 0-100 scale"
        ),
        "completeness": st.column_config.ProgressColumn(
            "Completeness", min_value=0.0, max_value=1.0, format="%.2f"
        ),
        "correctness": st.column_config.ProgressColumn(
            "Correctness", min_value=0.0, max_value=1.0, format="%.2f"
        ),
        "flagged_tile_share": st.column_config.NumberColumn(
            "Flagged", format="percent", help="Share of flagged tiles", width="small"
        ),
        "model": st.column_config.TextColumn(
            "Model",
            help="Whether the model's out-of-sample quality reaches the AOI's floor",
            width="small",
        ),
        "open_findings": st.column_config.NumberColumn(
            "Open", help="Findings not yet reviewed", width="small"
        ),
        "last_status": st.column_config.TextColumn("Last run", width="small"),
        "last_started_at": st.column_config.DatetimeColumn(
            "Last run at", format="YYYY-MM-DD HH:mm"
        ),
    },
)
st.caption("Sort by any column header; select a row (or click the AOI) to open its trends.")

rows = event.selection.rows if event is not None else []
if rows:
    chosen = str(overview["aoi"].iloc[rows[0]])
    st.session_state["aoi_name"] = chosen
    st.switch_page("views/trends.py", query_params={"aoi": chosen})
