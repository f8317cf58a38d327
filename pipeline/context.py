"""What every stage needs: settings, database engine, artifact store, device, and the
validator that runs the data-quality suites."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import Engine

from pipeline.settings import Settings, load_settings
from pipeline.store import ArtifactStore

if TYPE_CHECKING:
    import pandas as pd
    import torch


class Validator(Protocol):
    """Runs the validation suites of a run and stores their results; both methods
    return a :class:`pipeline.validate.report.ValidationReport` (the engine's in-process
    validator is :class:`pipeline.run.validate.InProcessValidator`)."""

    def validate_inputs(self, run_id: int) -> Any:
        """The input suites on the run's snapshots."""
        ...

    def validate_outputs(
        self,
        run_id: int,
        config: Any,
        step: str,
        tiles: pd.DataFrame,
        findings: pd.DataFrame,
        shard_ids: list[str],
    ) -> Any:
        """The output suites on the run's tile scores and findings."""
        ...


@dataclass
class Context:
    """Runtime handles shared by the stages of one process."""

    settings: Settings
    engine: Engine
    store: ArtifactStore
    progress: bool = False
    validator: Validator | None = field(default=None, repr=False)
    _device: torch.device | None = field(default=None, repr=False)

    def with_validator(self, validator: Validator) -> Context:
        """A copy whose stages ask ``validator`` for the data-quality suites."""
        return dataclasses.replace(self, validator=validator)

    @property
    def device(self) -> torch.device:
        """Torch device chosen by ``settings.device`` (CUDA when present for ``auto``)."""
        if self._device is None:
            from pipeline.model.device import select_device

            self._device = select_device(self.settings.device)
        return self._device


@functools.lru_cache(maxsize=8)
def _migrated_engine(url: str) -> Engine:
    from pipeline.db.engine import make_engine
    from pipeline.db.revision import at_schema_head

    engine = make_engine(url)
    if not at_schema_head(engine):  # Alembic loads only when there is something to do
        from pipeline.db.migrate import upgrade

        upgrade(engine)
    return engine


def open_context(settings: Settings | None = None, *, progress: bool = False) -> Context:
    """Create (and migrate, once per process) the database and the artifact store."""
    settings = settings or load_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = _migrated_engine(settings.resolved_database_url)
    store = ArtifactStore(settings.resolved_artifact_root)
    return Context(settings=settings, engine=engine, store=store, progress=progress)
