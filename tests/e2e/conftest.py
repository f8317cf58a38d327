"""End-to-end tests use the ``audited`` fixture of ``tests/conftest.py``."""
