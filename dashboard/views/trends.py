"""Trends: an AOI's quality measures over time, with the model of each run marked."""

import altair as alt
import streamlit as st

from dashboard import data
from dashboard.widgets import QOD_HELP, pick_aoi

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
        y=alt.Y("mean_qod:Q", title="QoD", scale=alt.Scale(domain=[0, 100])),
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
