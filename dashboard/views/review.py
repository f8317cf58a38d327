"""Review queue: flagged tiles and findings, worst first; a reviewer's verdict is stored
with who and when, can be changed, and feeds the next retraining."""

import streamlit as st

from dashboard import data
from dashboard.auth import reviewer
from dashboard.widgets import QOD_HELP, downloads, pick_audited_step, tile_label
from pipeline.airflow_api import AirflowClient, AirflowError, reviews_asset_uri
from pipeline.db.models import VERDICTS
from pipeline.errors import GeoAuditError
from pipeline.results.links import josm_url, osm_url
from pipeline.tiles import Tile

VERDICT_HELP = {
    "label_wrong": "the open data is wrong here (retraining skips the tile)",
    "model_wrong": "the prediction is wrong; the open data is right",
    "real_change": "the world changed since the open data was made",
    "ok": "nothing to fix",
}
QUEUE_LIMIT = 500

st.title("Review queue")
aoi, step, run_id = pick_audited_step()
aoi_id = int(aoi["aoi_id"])
who = reviewer()

flash = st.session_state.pop("review_flash", None)
if flash:
    st.success(flash)


def verdict_form(key: str, current: object, comment: object, save) -> None:  # noqa: ANN001
    """Verdict radio + comment + save, or why the reviewer cannot write."""
    if who is None:
        st.info("Read-only: identify yourself in the sidebar to give a verdict.")
        return
    with st.form(key):
        index = VERDICTS.index(current) if current in VERDICTS else None
        verdict = st.radio(
            "Verdict",
            VERDICTS,
            index=index,
            horizontal=True,
            format_func=lambda v: v,
            captions=[VERDICT_HELP[v] for v in VERDICTS],
            key=f"{key}-verdict",
        )
        text = st.text_area(
            "Comment (optional)",
            value=comment if isinstance(comment, str) else "",
            key=f"{key}-comment",
        )
        if st.form_submit_button("Save verdict", type="primary"):
            if verdict is None:
                st.error("Choose a verdict first.")
            else:
                try:
                    save(verdict, text.strip() or None)
                except GeoAuditError as exc:
                    st.error(f"Verdict not saved: {exc}")
                else:
                    st.rerun()


tiles_tab, findings_tab = st.tabs(["Flagged tiles", "Findings"])

with tiles_tab:
    tiles = data.q("review_tiles", run_id=run_id, limit=QUEUE_LIMIT)
    only_open = st.toggle("Only tiles without a verdict", value=False, key="open_tiles")
    if only_open:
        tiles = tiles[tiles["verdict"].isna()]
    tiles = tiles.reset_index(drop=True)
    tiles.insert(
        0,
        "tile",
        [f"{z}/{x}/{y}" for z, x, y in zip(tiles["z"], tiles["x"], tiles["y"], strict=True)],
    )
    st.caption(f"{len(tiles)} flagged tiles of step {step}, lowest QoD first.")
    st.dataframe(
        tiles[["tile", "qod", "iou", "n_findings", "verdict", "reviewer", "reviewed_at"]],
        hide_index=True,
        width="stretch",
        height=240,
        column_config={"qod": st.column_config.NumberColumn("QoD", format="%.1f", help=QOD_HELP)},
    )
    if not tiles.empty:
        choice = st.selectbox("Tile to review", list(tiles["tile"]), key="review_tile")
        row = tiles[tiles["tile"] == choice].iloc[0]
        t = Tile(int(row["x"]), int(row["y"]), int(row["z"]))
        try:
            layers = data.tile(run_id, t)
            a, b = st.columns(2)
            a.image(layers.rgb, caption="Imagery", width=384)
            b.image(
                layers.composite,
                caption="pink = prediction only, green = open data only, grey = both",
                width="stretch",
            )
        except GeoAuditError as exc:
            st.warning(f"No pixels for tile {choice}: {exc}")

        def save_tile(verdict: str, comment: str | None, t: Tile = t) -> None:
            data.save_review(aoi_id, "tile", verdict, tile=t, comment=comment, reviewer=who)
            st.session_state["review_flash"] = (
                f"Saved **{verdict}** on tile {tile_label(t)} as {who}."
            )

        verdict_form("tile_verdict", row["verdict"], row["comment"], save_tile)

with findings_tab:
    found = data.q("review_findings", run_id=run_id, limit=QUEUE_LIMIT)
    kinds = sorted(found["kind"].unique())
    chosen_kinds = st.multiselect("Kinds", kinds, default=kinds, key="finding_kinds")
    only_open_f = st.toggle("Only findings without a verdict", value=False, key="open_findings")
    shown = found[found["kind"].isin(chosen_kinds)]
    if only_open_f:
        shown = shown[shown["verdict"].isna()]
    shown = shown.reset_index(drop=True)
    shown["osm"] = shown["feature_id"].map(osm_url)
    shown["josm"] = [
        josm_url(g, f) for g, f in zip(shown["geometry"], shown["feature_id"], strict=True)
    ]
    st.caption(
        f"{len(shown)} findings of step {step}, most severe (area × confidence) first. "
        "**JOSM** opens the place in a running JOSM (remote control on); **OSM** the "
        "mapped object."
    )
    st.dataframe(
        shown.drop(columns=["geometry"]),
        hide_index=True,
        width="stretch",
        height=240,
        column_config={
            "area_m2": st.column_config.NumberColumn("Area m²", format="%.0f"),
            "severity": st.column_config.NumberColumn("Severity", format="%.1f"),
            "confidence": st.column_config.NumberColumn("Confidence", format="%.2f"),
            "iou": st.column_config.NumberColumn("IoU", format="%.2f"),
            "offset_m": st.column_config.NumberColumn("Offset m", format="%.1f"),
            "josm": st.column_config.LinkColumn("JOSM", display_text="edit"),
            "osm": st.column_config.LinkColumn("OSM", display_text="object"),
        },
    )
    import geopandas as gpd

    downloads(
        gpd.GeoDataFrame(shown, geometry="geometry", crs="EPSG:4326"),
        f"findings-{aoi.name}-{step}",
        key="review-findings",
    )
    if not shown.empty:
        labels = {
            int(fid): f"#{fid} {kind} ({area:.0f} m²)"
            for fid, kind, area in zip(
                shown["finding_id"], shown["kind"], shown["area_m2"].fillna(0), strict=True
            )
        }
        fid = st.selectbox(
            "Finding to review", list(labels), format_func=labels.get, key="review_finding"
        )
        row = shown[shown["finding_id"] == fid].iloc[0]
        links = [f"[Open in JOSM]({row['josm']})"]
        if row["osm"]:
            links.append(f"[OSM object]({row['osm']})")
        st.markdown(" · ".join(links))
        try:
            st.image(
                data.crop(run_id, row["geometry"]),
                caption=f"Imagery of step {step}, finding outlined",
                width=420,
            )
        except GeoAuditError as exc:
            st.warning(f"No imagery around finding {fid}: {exc}")

        def save_finding(verdict: str, comment: str | None, fid: int = int(fid)) -> None:
            data.save_review(
                aoi_id, "finding", verdict, finding_id=fid, comment=comment, reviewer=who
            )
            st.session_state["review_flash"] = f"Saved **{verdict}** on finding #{fid} as {who}."

        verdict_form("finding_verdict", row["verdict"], row["comment"], save_finding)

st.divider()
st.markdown("**Retraining** uses every `label_wrong` verdict: those tiles leave the training set.")
if who is not None and st.button("Done reviewing: ask Airflow to retrain", key="request_retrain"):
    s = data.settings()
    password = s.airflow_password.get_secret_value() if s.airflow_password else None
    try:
        with AirflowClient(s.airflow_url, s.airflow_username, password) as client:
            event = client.emit_asset_event(
                reviews_asset_uri(aoi.name), {"reviewer": who, "step": step}
            )
    except AirflowError as exc:
        st.error(
            f"Retraining not requested: {exc}. The monthly retraining will still use the verdicts."
        )
    else:
        st.success(f"Retraining of {aoi.name} requested (asset event {event}).")
