"""GeoAudit engine: audit open building footprints against imagery.

The package never imports Airflow or Streamlit; DAGs and the dashboard call it.
"""

__version__ = "0.1.0"
