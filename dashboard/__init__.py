"""GeoAudit's Streamlit dashboard: ``streamlit run dashboard/app.py`` (or ``make dashboard``).

Pages stay thin: data comes from :mod:`dashboard.data` (cached calls into
:mod:`pipeline`), pixels from :mod:`pipeline.tile_view`, maps from :mod:`dashboard.maps`.
"""
