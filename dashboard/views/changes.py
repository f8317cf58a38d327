"""Changes between two time steps of an AOI, filterable by kind, with before/after imagery."""

import streamlit as st

from dashboard import data
from dashboard.widgets import downloads, pick_aoi
from pipeline.errors import GeoAuditError

st.title("Changes")
aoi = pick_aoi()
if aoi is None:
    st.stop()
aoi_id = int(aoi["aoi_id"])

pairs = data.q("change_pairs", aoi_id=aoi_id)
steps = list(data.q("audited_steps", aoi_id=aoi_id)["step"])
if len(steps) < 2:
    st.info("Changes need audits of at least two time steps of this AOI.")
    st.stop()

left, right = st.columns(2)
step_to = left.selectbox("To step", steps[:-1], key="step_to")
earlier = [s for s in steps if s < step_to]
default_from = pairs.loc[pairs["step_to"] == step_to, "step_from"]
from_index = (
    earlier.index(default_from.iloc[0])
    if not default_from.empty and default_from.iloc[0] in earlier
    else 0
)
step_from = right.selectbox("From step", earlier, index=from_index, key="step_from")

changes = data.q("changes_between", aoi_id=aoi_id, step_from=step_from, step_to=step_to)
if changes.empty:
    available = ", ".join(
        f"{a} → {b}" for a, b in zip(pairs["step_from"], pairs["step_to"], strict=True)
    )
    st.info(
        f"No changes stored from {step_from} to {step_to}. Changes are computed between "
        f"consecutive audited steps; available: {available or 'none yet'}."
    )
    st.stop()

kinds = sorted(changes["kind"].unique())
chosen = st.multiselect("Kinds", kinds, default=kinds, key="change_kinds")
shown = changes[changes["kind"].isin(chosen)].reset_index(drop=True)
counts = shown["kind"].value_counts()
cols = st.columns(max(1, len(kinds)))
for col, kind in zip(cols, kinds, strict=False):
    col.metric(kind, int(counts.get(kind, 0)))

import geopandas as gpd  # noqa: E402  (only this page needs a GeoDataFrame here)

frame = gpd.GeoDataFrame(shown, geometry="geometry", crs="EPSG:4326")
st.dataframe(
    shown.drop(columns=["geometry"]),
    hide_index=True,
    width="stretch",
    column_config={"area_m2": st.column_config.NumberColumn("Area m²", format="%.0f")},
)
downloads(frame, f"changes-{aoi.name}-{step_from}-{step_to}", key="changes")

if shown.empty:
    st.stop()
st.subheader("Before / after")
options = list(shown["change_id"])
labels = {
    cid: f"#{cid} {kind} ({area:.0f} m²)"
    for cid, kind, area in zip(
        shown["change_id"], shown["kind"], shown["area_m2"].fillna(0), strict=True
    )
}
change_id = st.selectbox("Change", options, format_func=labels.get, key="change_pick")
change = shown[shown["change_id"] == change_id].iloc[0]
audited = data.q("audited_steps", aoi_id=aoi_id)
run_of = dict(zip(audited["step"], audited["run_id"].astype(int), strict=True))
before, after = st.columns(2)
for col, step in ((before, step_from), (after, step_to)):
    try:
        col.image(data.crop(run_of[step], change.geometry), caption=f"{step}", width="stretch")
    except GeoAuditError as exc:
        col.warning(f"No imagery of {step} here: {exc}")
