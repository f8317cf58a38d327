"""Runs: audit history with status, duration, model and validation results; a form that
triggers an ad-hoc audit through Airflow's REST API and follows its state."""

import datetime as dt

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.auth import reviewer
from dashboard.widgets import duration, json_value
from pipeline.airflow_api import AirflowClient, AirflowError, audit_conf, audit_dag_id
from pipeline.errors import ConfigError


def show_validation(checks: pd.DataFrame) -> None:
    """The run's validation suites: result, worst failure, failed expectations, and
    each suite's Great Expectations Data Docs page to download."""
    stats = [json_value(v) or {} for v in checks["statistics"]]
    failed = [json_value(v) or [] for v in checks["failed"]]
    table = pd.DataFrame(
        {
            "suite": checks["suite"],
            "input": [s.get("input", "") for s in stats],
            "result": ["passed" if ok else "failed" for ok in checks["success"]],
            "worst failure": checks["severity"],
            "failed expectations": [
                "; ".join(f"{f.get('severity')}: {f.get('problem')}" for f in items)
                for items in failed
            ],
            "checked at": checks["created_at"],
        }
    )
    st.dataframe(table, hide_index=True, width="stretch")
    for level, shown in (("critical", st.error), ("warning", st.warning)):
        for suite, items in zip(checks["suite"], failed, strict=True):
            for f in items:
                if f.get("severity") == level:
                    shown(
                        f"{suite}: {f.get('problem')} ({f.get('unexpected_count') or ''} "
                        f"{f.get('examples') or f.get('observed') or ''})"
                    )
    keys = {s: st_.get("data_docs_key") for s, st_ in zip(checks["suite"], stats, strict=True)}
    keys = {s: k for s, k in keys.items() if k}
    if keys:
        suite = st.selectbox("Data Docs of suite", list(keys), key="docs_suite")
        page = data.artifact_bytes(keys[suite])
        if page is None:
            st.caption(f"The Data Docs page of {suite} is no longer in the artifact store.")
        else:
            st.download_button(
                f"Download Data Docs ({suite})",
                page,
                file_name=f"{suite}.html",
                mime="text/html",
                key="docs_download",
            )


st.title("Runs")

overview = data.q("aoi_overview")
names = ["(all AOIs)", *overview["aoi"]]
wanted = st.query_params.get("aoi")
which = st.sidebar.selectbox(
    "AOI", names, index=names.index(wanted) if wanted in names else 0, key="runs_aoi"
)
aoi_id = None if which == "(all AOIs)" else int(overview.set_index("aoi").loc[which, "aoi_id"])

history = data.q("run_history", aoi_id=aoi_id, limit=500)
if history.empty:
    st.info("No run yet.")
else:
    history["duration_s"] = duration(history["started_at"], history["finished_at"])
    history["model"] = (
        history["model_name"].fillna("")
        + " v"
        + history["model_version"].astype("Int64").astype(str)
    )
    history["validation"] = [
        "–" if pd.isna(n) else ("passed" if not failed else f"{int(failed)} of {int(n)} failed")
        for n, failed in zip(history["n_suites"], history["n_failed"].fillna(0), strict=True)
    ]
    params = [json_value(p) or {} for p in history["params"]]
    steps = [p.get("source_steps") or {} for p in params]
    history["imagery_date"] = [s.get("imagery", "") for s in steps]
    history["opendata_date"] = [s.get("opendata", "") for s in steps]
    history["note"] = [
        f"no new data since run {p['same_as_run']}" if st_ == "no_new_data" else ""
        for p, st_ in zip(params, history["status"], strict=True)
    ]
    history["status"] = history["status"].str.replace("_", " ")
    counts = history["status"].value_counts()
    c = st.columns(5)
    statuses = ("succeeded", "no new data", "failed", "running", "queued")
    for col, status in zip(c, statuses, strict=True):
        col.metric(status.capitalize(), int(counts.get(status, 0)))
    st.dataframe(
        history[
            [
                "run_id",
                "aoi",
                "step",
                "imagery_date",
                "opendata_date",
                "status",
                "note",
                "trigger",
                "started_at",
                "duration_s",
                "model",
                "validation",
                "qod",
                "n_tiles",
                "external_id",
                "error",
            ]
        ],
        hide_index=True,
        width="stretch",
        column_config={
            "started_at": st.column_config.DatetimeColumn("Started", format="YYYY-MM-DD HH:mm:ss"),
            "duration_s": st.column_config.NumberColumn("Duration s", format="%.1f"),
            "qod": st.column_config.NumberColumn("QoD", format="%.1f"),
            "external_id": "Airflow run",
            "step": "Audit date",
            "imagery_date": "Imagery of",
            "opendata_date": "Open data of",
        },
    )
    run_pick = st.selectbox("Run details", list(history["run_id"]), key="run_detail")
    detail = history[history["run_id"] == run_pick].iloc[0]
    if isinstance(detail["error"], str) and detail["error"]:
        st.error(f"Run {run_pick} failed: {detail['error']}")
    checks = data.q("validation_results", run_id=int(run_pick))
    if checks.empty:
        st.caption(f"Run {run_pick} has no stored validation results.")
    else:
        show_validation(checks)

st.divider()
st.subheader("Trigger an ad-hoc audit")
settings = data.settings()
who = reviewer()  # starting runs is a write: only an identified reviewer may
st.caption(f"Through Airflow's REST API at {settings.airflow_url} (GEOAUDIT_AIRFLOW_URL).")
if who is None:
    st.info("Read-only: identify yourself in the sidebar to trigger audits.")
with st.form("trigger"):
    aoi_names = list(overview["aoi"])
    target = st.selectbox(
        "AOI",
        aoi_names,
        index=aoi_names.index(which) if which in aoi_names else 0,
        key="trigger_aoi",
    )
    # default: the AOI's latest audited step (re-audit it); today for an AOI never audited
    latest_steps = dict(zip(overview["aoi"], overview["latest_step"], strict=True))
    latest_step = latest_steps.get(which if which in aoi_names else target)
    try:
        default_step = dt.date.fromisoformat(str(latest_step)[:10])
    except ValueError:
        default_step = dt.date.today()
    step = st.date_input(
        "Time step",
        value=default_step,
        key="trigger_step",
        help="The AOI's latest audited step by default; any date audits the sources as of it.",
    )
    bbox_text = st.text_input(
        "Only shards touching bbox (west south east north, optional)", key="trigger_bbox"
    )
    model_version = st.number_input(
        "Model version id (optional, 0 = production)",
        min_value=0,
        value=0,
        step=1,
        key="trigger_model",
    )
    force = st.checkbox("Force a new run even if nothing changed", key="trigger_force")
    repredict = st.checkbox("Ignore the prediction cache", key="trigger_repredict")
    submitted = st.form_submit_button(
        "Trigger audit", type="primary", disabled=not aoi_names or who is None
    )

if submitted and who is None:  # a crafted request past the disabled button
    st.error("Not triggered: identify yourself first (every run records who started it).")
elif submitted:
    try:
        bbox = (
            [float(v) for v in bbox_text.replace(",", " ").split()] if bbox_text.strip() else None
        )
        conf = audit_conf(
            step.isoformat(),
            bbox=bbox,
            model_version=int(model_version) or None,
            force=force,
            repredict=repredict,
        )
    except (ConfigError, ValueError) as exc:
        st.error(f"Not triggered: {exc}")
    else:
        password = (
            settings.airflow_password.get_secret_value() if settings.airflow_password else None
        )
        try:
            with AirflowClient(settings.airflow_url, settings.airflow_username, password) as client:
                run = client.trigger(
                    audit_dag_id(target), conf, note=f"triggered from the dashboard by {who}"
                )
        except AirflowError as exc:
            st.error(f"Not triggered: {exc}")
        else:
            st.session_state["triggered"] = (run.dag_id, run.run_id)
            st.success(f"Triggered {run.dag_id} run {run.run_id} with {conf}.")


@st.fragment(run_every=dt.timedelta(seconds=5))
def live_status() -> None:
    """State of the run triggered from this page, refreshed every 5 s until it ends."""
    dag_id, run_id = st.session_state["triggered"]
    password = settings.airflow_password.get_secret_value() if settings.airflow_password else None
    try:
        with AirflowClient(settings.airflow_url, settings.airflow_username, password) as client:
            run = client.dag_run(dag_id, run_id)
    except AirflowError as exc:
        st.warning(f"State of {run_id} unknown: {exc}")
        return
    icon = {"success": "✅", "failed": "❌"}.get(run.state, "⏳")
    st.markdown(
        f"{icon} **{dag_id}** run `{run_id}`: **{run.state}** (started {run.start_date or '–'})"
    )
    if run.finished:
        data.query.clear()


if "triggered" in st.session_state:
    live_status()
