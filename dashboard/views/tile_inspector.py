"""Tile inspector: imagery, open data and prediction of one tile, side by side and as
the composite (pink = prediction only, green = open data only, grey = both)."""

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.widgets import QOD_HELP, parse_tile, pick_audited_step, tile_label
from pipeline.errors import GeoAuditError

st.title("Tile inspector")
aoi, step, run_id = pick_audited_step()

flagged = data.q("review_tiles", run_id=run_id, limit=100_000)
labels = [f"{z}/{x}/{y}" for z, x, y in zip(flagged["z"], flagged["x"], flagged["y"], strict=True)]
if not labels:
    st.info(f"No flagged tile in step {step}.")
    st.stop()

# the tile comes from ?tile=z/x/y (a link, a reload), else the worst flagged tile; a tile
# that is not flagged in this step (another AOI or step was picked) starts over
if st.session_state.get("inspect_tile") not in labels:
    wanted = st.query_params.get("tile")
    st.session_state["inspect_tile"] = wanted if wanted in labels else labels[0]


def _go(delta: int) -> None:
    here = labels.index(st.session_state["inspect_tile"])
    st.session_state["inspect_tile"] = labels[(here + delta) % len(labels)]


nav_prev, nav_pick, nav_next = st.columns([1, 4, 1], vertical_alignment="bottom")
nav_prev.button("◀ Previous flagged", on_click=_go, args=(-1,), key="prev_tile", width="stretch")
nav_next.button("Next flagged ▶", on_click=_go, args=(1,), key="next_tile", width="stretch")
nav_pick.selectbox(
    f"Flagged tiles of step {step}, worst first ({len(labels)})", labels, key="inspect_tile"
)
tile = parse_tile(st.session_state["inspect_tile"])
st.query_params["tile"] = tile_label(tile)

try:
    layers = data.tile(run_id, tile)
except GeoAuditError as exc:
    st.error(f"Cannot show tile {tile_label(tile)}: {exc}")
    st.stop()

cols = st.columns(4)
cols[0].image(layers.rgb, caption="Imagery", width="stretch")
cols[1].image(layers.label.astype("uint8") * 255, caption="Open data", width="stretch")
cols[2].image(layers.pred.astype("uint8") * 255, caption="Prediction", width="stretch")
cols[3].image(
    layers.composite,
    caption="Composite: pink = prediction only, green = open data only, grey = both",
    width="stretch",
)

row = flagged[(flagged["z"] == tile.z) & (flagged["x"] == tile.x) & (flagged["y"] == tile.y)]
if not row.empty:
    r = row.iloc[0]
    m = st.columns(5)
    m[0].metric("QoD", f"{r['qod']:.1f}" if pd.notna(r["qod"]) else "–", help=QOD_HELP)
    m[1].metric("IoU", f"{r['iou']:.2f}" if pd.notna(r["iou"]) else "–")
    m[2].metric("Precision", f"{r['precision']:.2f}" if pd.notna(r["precision"]) else "–")
    m[3].metric("Recall", f"{r['recall']:.2f}" if pd.notna(r["recall"]) else "–")
    m[4].metric("Findings", int(r["n_findings"]))
    if isinstance(r["verdict"], str):
        st.caption(
            f"Reviewed: **{r['verdict']}** by {r['reviewer']} "
            f"({r['reviewed_at']:%Y-%m-%d %H:%M} UTC)"
        )

tile_findings = data.q("tile_findings", run_id=run_id, z=tile.z, x=tile.x, y=tile.y)
st.markdown(f"**Findings in tile {tile_label(tile)}** ({len(tile_findings)})")
st.dataframe(tile_findings, hide_index=True, width="stretch")
st.page_link(
    "views/review.py", label="Give a verdict in the review queue", icon=":material/rate_review:"
)
