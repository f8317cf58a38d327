"""Runtime settings from the environment (``GEOAUDIT_*``) or a ``.env`` file.

Embedded defaults need no set-up: a SQLite database that is a GeoPackage at
``$GEOAUDIT_HOME/geoaudit.gpkg`` (a home made before it keeps its ``geoaudit.db``)
and a local artifact store at
``$GEOAUDIT_HOME/artifacts``, with ``GEOAUDIT_HOME`` defaulting to ``~/.geoaudit``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError


def _default_home() -> Path:
    return Path.home() / ".geoaudit"


EMBEDDED_STORE = "geoaudit.gpkg"
LEGACY_EMBEDDED_STORE = "geoaudit.db"  # the name before the store became a GeoPackage


class Settings(BaseSettings):
    """GeoAudit settings; every field reads ``GEOAUDIT_<FIELD>`` from the environment."""

    model_config = SettingsConfigDict(
        env_prefix="GEOAUDIT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    home: Path = Field(default_factory=_default_home, description="Root of local state.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in home.", repr=False
    )
    artifact_root: str | None = Field(
        default=None, description="Local path or fsspec URL; default: home/artifacts."
    )
    aoi_dir: Path | None = Field(
        default=None, description="Folder of AOI YAML files; default: home/aois."
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    runtime: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description="Where prediction runs: auto = torch (measured faster); onnx: CPU only.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    log_format: Literal["console", "json"] = "console"
    encoder_weights: Path | None = Field(
        default=None, description="Local file with pretrained encoder weights."
    )
    allow_hub: bool = Field(default=False, description="Download pretrained weights if reachable.")
    max_aoi_km2: float = Field(default=500.0, gt=0, description="Largest AOI accepted.")
    abandoned_run_s: float = Field(
        default=3600.0,
        gt=0,
        description="A scheduler's run with no task seen for this long is closed as abandoned.",
    )
    # the dashboard
    airflow_url: str = Field(
        default="http://localhost:8080", description="Airflow api-server the dashboard triggers."
    )
    airflow_username: str | None = Field(default=None, description="Airflow user for the REST API.")
    airflow_password: SecretStr | None = Field(default=None, description="Its password.")
    basemap_url: str | None = Field(
        default=None, description="XYZ tile URL template of an optional map basemap."
    )
    review_password: SecretStr | None = Field(
        default=None,
        description="Shared password reviewers enter (when no OIDC login is configured).",
    )

    @field_validator(
        "airflow_username", "airflow_password", "basemap_url", "review_password", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `GEOAUDIT_REVIEW_PASSWORD=` must mean "no password" (read-only), never "empty password"
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def resolved_database_url(self) -> str:
        """The configured URL, or the home's embedded store: ``sqlite:///<home>/geoaudit.gpkg``
        (the extension GIS clients expect of a GeoPackage), or the ``geoaudit.db`` of a
        home made before, when only that one exists."""
        if self.database_url:
            return self.database_url
        store = self.home / EMBEDDED_STORE
        legacy = self.home / LEGACY_EMBEDDED_STORE
        if legacy.exists() and not store.exists():
            store = legacy
        return f"sqlite:///{store}"

    def secret_values(self) -> list[str]:
        """The secrets these settings hold (database URL password, Airflow and review
        passwords), for log maskers such as Airflow's."""
        from sqlalchemy.engine import make_url

        values = [make_url(self.resolved_database_url).password]
        values += [s.get_secret_value() for s in (self.airflow_password, self.review_password) if s]
        return [str(v) for v in values if v]

    @property
    def resolved_artifact_root(self) -> str:
        """The configured artifact root, or ``<home>/artifacts``."""
        return self.artifact_root or str(self.home / "artifacts")

    @property
    def resolved_aoi_dir(self) -> Path:
        """Folder that holds one YAML file per registered AOI."""
        return (self.aoi_dir or self.home / "aois").expanduser()


def load_settings(**overrides: object) -> Settings:
    """Read settings; raise :class:`ConfigError` naming the bad variable."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"GEOAUDIT_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
