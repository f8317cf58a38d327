"""GeoAudit dashboard entry point: ``streamlit run dashboard/app.py``.

The pages live in ``views/``, not ``pages/``: Streamlit routes a ``pages/`` folder on
its own, which would run a page without this entry script and its navigation.
"""

import streamlit as st

st.set_page_config(page_title="GeoAudit", page_icon=":material/satellite_alt:", layout="wide")

OVERVIEW = st.Page(
    "views/overview.py", url_path="overview", title="Overview", icon=":material/dashboard:"
)


def _root() -> None:
    """The app's root URL opens the overview at its own address, ``/overview``: Streamlit
    serves a default page at ``/`` only, ignoring its ``url_path``."""
    st.switch_page(OVERVIEW)


PAGES = [
    st.Page(_root, title="GeoAudit", url_path="home", default=True, visibility="hidden"),
    OVERVIEW,
    st.Page("views/trends.py", url_path="trends", title="Trends", icon=":material/show_chart:"),
    st.Page("views/hotspots.py", url_path="hotspots", title="Hotspots map", icon=":material/map:"),
    st.Page(
        "views/tile_inspector.py",
        url_path="tile-inspector",
        title="Tile inspector",
        icon=":material/grid_on:",
    ),
    st.Page("views/changes.py", url_path="changes", title="Changes", icon=":material/compare:"),
    st.Page(
        "views/review.py", url_path="review", title="Review queue", icon=":material/rate_review:"
    ),
    st.Page("views/runs.py", url_path="runs", title="Runs", icon=":material/play_circle:"),
    st.Page("views/models.py", url_path="models", title="Models", icon=":material/model_training:"),
]

st.navigation(PAGES).run()
