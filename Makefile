# GeoAudit — the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test install install-test install-airflow install-dashboard airflow dashboard browser servers lint bench clean help

GEOAUDIT_HOME ?= $(HOME)/.geoaudit
AIRFLOW_HOME  ?= $(GEOAUDIT_HOME)/airflow
AIRFLOW_PORT  ?= 8080
DASHBOARD_PORT ?= 8501
CHROMIUM      ?= /usr/bin/chromium

help:
	@echo "make demo   - create .venv, install, run a full audit of the sample AOI"
	@echo "make test   - create .venv, install test extras, run the test suite"
	@echo "make bench  - rasterize+score vs RoboSat.pink (real sample), start-up, prediction (demo home)"
	@echo "make airflow - Airflow standalone with GeoAudit's DAGs (after make demo: audit__sample-town)"
	@echo "make dashboard - the Streamlit dashboard on the demo's data (after make demo)"

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet --disable-pip-version-check -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet --disable-pip-version-check -e '.[test,airflow,dashboard]'
	@touch $@

$(VENV)/.installed-dashboard: $(VENV)/.installed
	$(PIP) install --quiet --disable-pip-version-check -e '.[dashboard]'
	@touch $@

# Debian's Chromium for the dashboard's browser test (the test itself installs nothing).
browser:
	@test -x $(CHROMIUM) || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || { \
	    echo "$(CHROMIUM) missing: install Debian's chromium package (apt-get install chromium)"; exit 1; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; }

# MapServer (Debian) for the WMS/WFS source tests (the tests start it on loopback), and
# GDAL's own ogrinfo/gdalinfo (Debian 12: GDAL 3.6, what QGIS there uses) that open
# every export and the embedded store in the tests.
servers:
	@command -v mapserv >/dev/null && command -v ogrinfo >/dev/null || { \
	  command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] || { \
	    echo "mapserv or ogrinfo missing: install Debian's cgi-mapserver and gdal-bin packages"; exit 1; }; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cgi-mapserver mapserver-bin gdal-bin >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cgi-mapserver mapserver-bin gdal-bin >/dev/null; }; }

$(VENV)/.installed-airflow: $(VENV)/.installed
	$(PIP) install --quiet --disable-pip-version-check -e '.[airflow]'
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test
install-airflow: $(VENV)/.installed-airflow
install-dashboard: $(VENV)/.installed-dashboard

demo: install
	$(BIN)/geoaudit demo

test: install-test browser servers
	GEOAUDIT_CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

# Airflow 3 standalone (SQLite metadata under $(AIRFLOW_HOME)) with this project's DAGs.
airflow: install-airflow
	@mkdir -p "$(AIRFLOW_HOME)"
	@$(BIN)/python -c "import json, pathlib, secrets; p = pathlib.Path('$(AIRFLOW_HOME)/passwords.json'); p.exists() or p.write_text(json.dumps({'admin': secrets.token_urlsafe(12)}))"
	@echo "Airflow: http://localhost:$(AIRFLOW_PORT)  user admin  password $$($(BIN)/python -c "import json; print(json.load(open('$(AIRFLOW_HOME)/passwords.json'))['admin'])")"
	@echo "DAGs from $(abspath dags), AOIs from $(GEOAUDIT_HOME)/aois; trigger audit__sample-town with {\"step\": \"2026-06-01\"}"
	PATH="$(abspath $(BIN)):$$PATH" GEOAUDIT_HOME="$(GEOAUDIT_HOME)" AIRFLOW_HOME="$(AIRFLOW_HOME)" \
	AIRFLOW__CORE__DAGS_FOLDER="$(abspath dags)" AIRFLOW__CORE__LOAD_EXAMPLES=False \
	AIRFLOW__CORE__PARALLELISM=2 AIRFLOW__API__PORT=$(AIRFLOW_PORT) \
	AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME=0.1 \
	AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://localhost:$(AIRFLOW_PORT)/execution/ \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin \
	AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$(AIRFLOW_HOME)/passwords.json" \
	$(BIN)/airflow standalone

# The dashboard on $(GEOAUDIT_HOME) (the demo's database and artifacts by default).
dashboard: install-dashboard
	@echo "GeoAudit dashboard: http://localhost:$(DASHBOARD_PORT)  (data: $(GEOAUDIT_HOME))"
	GEOAUDIT_HOME="$(GEOAUDIT_HOME)" $(BIN)/streamlit run dashboard/app.py \
	  --server.port $(DASHBOARD_PORT) --server.headless true --browser.gatherUsageStats false

lint: install-test
	$(BIN)/ruff check pipeline dashboard dags tests bench

# The three figures of README's "Speed": rasterize + score against RoboSat.pink on the
# real Lalitpur sample, the CLI's start-up, and prediction through the audit path on the
# demo's home (made by `make demo` when it has no audit yet).
bench: install
	$(PIP) install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python bench/score_vs_robosat.py
	$(BIN)/python bench/startup.py
	@GEOAUDIT_HOME="$(GEOAUDIT_HOME)" $(BIN)/geoaudit report sample-town >/dev/null 2>&1 || \
	  GEOAUDIT_HOME="$(GEOAUDIT_HOME)" $(BIN)/geoaudit demo
	$(BIN)/python bench/predict_path.py --home "$(GEOAUDIT_HOME)"

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
