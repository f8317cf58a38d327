"""Models: the registry with metrics per version and the one in production."""

import pandas as pd
import streamlit as st

from dashboard import data
from dashboard.widgets import rounded

st.title("Models")
models = data.models()
if models.empty:
    st.info("No model registered yet: `geoaudit train <aoi>` (or `make demo`) trains one.")
    st.stop()

production = models[models["stage"] == "production"]
cols = st.columns(max(1, len(production)))
for col, (_, mv) in zip(cols, production.iterrows(), strict=False):
    iou = mv["metrics"].get("val_iou")
    col.metric(f"In production: {mv['name']}", f"v{mv['version']}", help=f"id {mv['id']}")
    if iou is not None:
        col.caption(f"validation IoU {iou:.3f}")

metrics = pd.json_normalize(models["metrics"].tolist()).add_prefix("metric.")
numeric = [c for c in metrics.columns if pd.api.types.is_numeric_dtype(metrics[c])]
table = pd.concat(
    [
        models[
            [
                "id",
                "name",
                "version",
                "stage",
                "arch",
                "encoder",
                "created_at",
                "promoted_at",
                "parent_id",
            ]
        ],
        metrics[numeric],
    ],
    axis=1,
)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        "created_at": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
        "promoted_at": st.column_config.DatetimeColumn("Promoted", format="YYYY-MM-DD HH:mm"),
        **{
            c: st.column_config.NumberColumn(c, format="%.3f")
            for c in numeric
            if pd.api.types.is_float_dtype(metrics[c])
        },
    },
)
pick = st.selectbox(
    "Version details", list(models["id"]), format_func=lambda i: f"id {i}", key="model_pick"
)
row = models[models["id"] == pick].iloc[0]
left, right = st.columns(2)
left.markdown("**Metrics**")
left.json(rounded(row["metrics"]))
right.markdown("**Training data and parameters**")
right.json(
    rounded(
        {
            "training_data": row["training_data"],
            "params": row["params"],
            "weights": row["weights_uri"],
        }
    )
)
