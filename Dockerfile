# GeoAudit image: the engine, the Airflow 3 DAGs and the dashboard in one environment
# (DAG tasks import `pipeline`, so Airflow and the engine must share it).
#   docker build -t geoaudit .                                   # CPU torch
#   docker build -t geoaudit:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AIRFLOW_HOME=/opt/airflow \
    GEOAUDIT_HOME=/data/geoaudit

RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libexpat1 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/geoaudit
# torch first, from the index that matches the image (CPU or CUDA)
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY sql ./sql
COPY dags ./dags
COPY dashboard ./dashboard
COPY .streamlit/config.toml ./.streamlit/config.toml
COPY docker/airflow ./docker/airflow
RUN pip install --no-cache-dir -e '.[airflow,dashboard]'

RUN useradd --create-home --uid 50000 geoaudit \
    && mkdir -p "$AIRFLOW_HOME" "$GEOAUDIT_HOME" \
    && chown -R geoaudit "$AIRFLOW_HOME" "$GEOAUDIT_HOME"
USER geoaudit
CMD ["geoaudit", "--help"]
