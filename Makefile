# GeoAudit — the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: demo test install install-test lint bench clean help

help:
	@echo "make demo   - create .venv, install, run a full audit of the sample AOI"
	@echo "make test   - create .venv, install test extras, run the test suite"
	@echo "make bench  - per-stage throughput and the shard-vs-per-tile-file ratio"

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: set PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(PIP) install --quiet --disable-pip-version-check -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install --quiet --disable-pip-version-check -e '.[test,airflow]'
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/geoaudit demo

test: install-test
	$(BIN)/python -m pytest

lint: install-test
	$(BIN)/ruff check pipeline tests bench

bench: install
	$(PIP) install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python bench/shards_vs_tiles.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
