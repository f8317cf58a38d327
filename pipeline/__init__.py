"""GeoAudit engine: audit open building footprints against imagery.

The package never imports Airflow or Streamlit; DAGs and the dashboard call it.
"""

from pipeline.cpu_kernels import pin_cpu_kernels

pin_cpu_kernels()  # before torch runs a kernel: the same figures on every machine

__version__ = "0.1.0"
