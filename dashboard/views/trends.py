"""Trends: an AOI's quality measures over time, with the model of each run marked."""

import altair as alt
import streamlit as st

from dashboard import data, maps
from dashboard.widgets import QOD_HELP, pick_aoi
from pipeline.results.map_cells import QOD_MOVED_POINTS, aggregation_level, qod_change, qod_moves

st.title("Trends")
aoi = pick_aoi()
if aoi is None:
    st.stop()
st.subheader(f"AOI {aoi.name}")

trend = data.q("aoi_trend", aoi_id=int(aoi["aoi_id"]))
if trend.empty:
    st.info("This AOI has no finished audit yet.")
    st.stop()
trend["model"] = (
    trend["model_name"].fillna("?") + " v" + trend["model_version"].astype("Int64").astype(str)
)

measures = {
    "completeness": "Completeness",
    "correctness": "Correctness",
    "mean_iou": "Mean IoU",
    "flagged_tile_share": "Flagged tile share",
}
long = trend.melt(
    id_vars=["step", "run_id", "model"], value_vars=list(measures), var_name="measure"
)
long["measure"] = long["measure"].map(measures)
hover = alt.selection_point(fields=["step"], nearest=True, on="pointerover", empty=False)
base = alt.Chart(long).encode(x=alt.X("step:O", title="Time step"))
lines = base.mark_line().encode(
    y=alt.Y("value:Q", title="Share (0-1)", scale=alt.Scale(domain=[0, 1])),
    color=alt.Color("measure:N", title="Measure"),
)
points = (
    base.mark_point(filled=True, size=90)
    .encode(
        y="value:Q",
        color="measure:N",
        shape=alt.Shape("model:N", title="Model version"),
        tooltip=["step", "measure", alt.Tooltip("value:Q", format=".3f"), "model", "run_id"],
    )
    .add_params(hover)
)
st.altair_chart((lines + points).interactive(), width="stretch")

left, right = st.columns(2)
qod = (
    alt.Chart(trend)
    .mark_line(point=True)
    .encode(
        x=alt.X("step:O", title="Time step"),
        # the axis follows the data (a 0-100 axis flattened a 2-point drop), never above 100
        y=alt.Y("mean_qod:Q", title="QoD", scale=alt.Scale(zero=False, domainMax=100, nice=True)),
        tooltip=["step", alt.Tooltip("mean_qod:Q", format=".1f"), "model", "run_id"],
    )
)
model_marks = (
    alt.Chart(trend)
    .mark_text(dy=-12, fontSize=11)
    .encode(x="step:O", y="mean_qod:Q", text="model:N")
)
left.markdown("**QoD**", help=QOD_HELP)
left.altair_chart((qod + model_marks).interactive(), width="stretch")

by_kind = data.q("findings_by_kind", aoi_id=int(aoi["aoi_id"]))
right.markdown("**Findings by kind**")
if by_kind.empty:
    right.info("No findings in any audited step.")
else:
    right.altair_chart(
        alt.Chart(by_kind)
        .mark_bar()
        .encode(
            x=alt.X("step:O", title="Time step"),
            y=alt.Y("n:Q", title="Findings"),
            color=alt.Color("kind:N", title="Kind"),
            tooltip=["step", "kind", "n"],
        )
        .interactive(),
        width="stretch",
    )

st.markdown("**Where quality moved**: QoD change per tile between two audited steps")
steps = list(trend["step"])
if len(steps) < 2:
    st.caption("One audited step so far: the map appears with the second.")
else:
    c_from, c_to = st.columns(2)
    step_from = c_from.selectbox("From step", steps[:-1], index=0, key="change_from")
    later = [s for s in steps if s > step_from]
    step_to = c_to.selectbox("To step", later, index=len(later) - 1, key="change_to")
    run_of = dict(zip(trend["step"], trend["run_id"], strict=True))
    extent = data.q("tile_extent", run_id=int(run_of[step_to])).iloc[0]
    n_tiles = int(extent["n_tiles"] or 0)
    level = aggregation_level(n_tiles)
    both = qod_change(
        data.q("tile_cells", run_id=int(run_of[step_from]), factor=2**level),
        data.q("tile_cells", run_id=int(run_of[step_to]), factor=2**level),
    )
    zoom = int(extent["z"]) - level
    layers = maps.bitmap_layers(data.previews(int(run_of[step_to])), prefix="imagery")
    layers.append(maps.qod_change_layer(both, zoom))
    st.pydeck_chart(
        maps.deck(layers, data.aoi_bounds(int(aoi["aoi_id"]))), height=420, key="qod_change_map"
    )
    moves = qod_moves(both["delta"])
    unit = "tiles" if level == 0 else "cells"
    st.caption(
        f"{step_from} → {step_to}: {moves.lost} {unit} lost {QOD_MOVED_POINTS:g}+ QoD points "
        f"(red), {moves.gained} gained (blue), {moves.held} held (clear)."
    )

st.dataframe(
    trend[
        [
            "step",
            "run_id",
            "model",
            "mean_qod",
            "completeness",
            "correctness",
            "mean_iou",
            "flagged_tile_share",
            "n_tiles",
            "n_opendata",
            "n_predicted",
        ]
    ],
    hide_index=True,
    width="stretch",
    column_config={"mean_qod": st.column_config.NumberColumn("QoD", format="%.1f")},
)
