"""The Great Expectations 1.x adapter: versioned suites in, plain outcomes and Data Docs out.

Suites are JSON files beside this module (``suites/<name>.json``): each expectation
carries GX's own ``severity`` (``critical`` / ``warning`` / ``info``) and a
``meta.problem`` sentence used in error messages; thresholds are ``$PARAMETER``
references filled from the AOI's ``validation`` settings at run time. One in-memory
(ephemeral) data context per process validates pandas frames; nothing is written
under the working directory and no usage statistics are sent.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

SUITES_DIR = Path(__file__).parent / "suites"
# GX objects are built once per process, whichever thread asks first
_BUILD_LOCK = threading.RLock()
SEVERITY_ORDER = {"critical": 3, "warning": 2, "info": 1}


@dataclass(frozen=True)
class FailedExpectation:
    """One expectation that did not hold."""

    expectation: str
    column: str | None
    severity: str
    problem: str
    observed: Any = None
    unexpected_count: int | None = None
    examples: list[Any] = field(default_factory=list)

    def describe(self) -> str:
        """``problem (column: 3 of 120 rows, e.g. [...])`` in words."""
        parts = []
        if self.unexpected_count:
            parts.append(f"{self.unexpected_count} row{'s' if self.unexpected_count > 1 else ''}")
        if self.examples:
            parts.append(f"e.g. {self.examples[:5]}")
        if self.observed is not None and not self.unexpected_count:
            parts.append(f"observed {self.observed}")
        where = f"{self.column}: " if self.column else ""
        return f"{self.problem} ({where}{', '.join(parts)})" if parts else self.problem

    def as_dict(self) -> dict[str, Any]:
        return {
            "expectation": self.expectation,
            "column": self.column,
            "severity": self.severity,
            "problem": self.problem,
            "observed": _jsonable(self.observed),
            "unexpected_count": self.unexpected_count,
            "examples": _jsonable(self.examples[:10]),
        }


@dataclass(frozen=True)
class SuiteOutcome:
    """What one suite found on one table."""

    suite: str
    success: bool
    statistics: dict[str, Any]
    failed: list[FailedExpectation]
    result: Any = field(default=None, repr=False, compare=False)  # GX's own, for Data Docs

    def page(self) -> str:
        """This outcome's Great Expectations Data Docs page (HTML)."""
        if self.result is None:
            raise ValueError(f"suite {self.suite}: the GX result is not kept; no page")
        return data_docs_page(self.result)

    def __getstate__(self) -> dict[str, Any]:
        # GX results stay in the process that made them (they do not pickle)
        return {**self.__dict__, "result": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def severity(self) -> str:
        """The worst severity among the failed expectations; ``none`` when all held."""
        if not self.failed:
            return "none"
        return max((f.severity for f in self.failed), key=lambda s: SEVERITY_ORDER.get(s, 0))

    @property
    def critical(self) -> list[FailedExpectation]:
        """Failed expectations that stop an audit."""
        return [f for f in self.failed if f.severity == "critical"]


def suite_names() -> list[str]:
    """Names of the versioned suites (file stems)."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.json"))


@cache
def suite_definition(name: str) -> dict[str, Any]:
    """The JSON definition of suite ``name`` (e.g. ``opendata.features``)."""
    path = SUITES_DIR / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def _context() -> Any:
    with _BUILD_LOCK:
        return _build_context()


@cache
def _build_context() -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.data_sources.add_pandas("geoaudit")
    return context


def validation_definition(name: str) -> Any:
    """The GX validation definition of suite ``name`` over a whole-dataframe batch
    (built once per process)."""
    with _BUILD_LOCK:
        return _build_validation_definition(name)


@cache
def _build_validation_definition(name: str) -> Any:
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    context = _context()
    spec = suite_definition(name)
    suite = ExpectationSuite(name=spec["name"], meta=spec.get("meta"))
    for item in spec["expectations"]:
        suite.add_expectation_configuration(
            ExpectationConfiguration(
                type=item["type"],
                kwargs=item["kwargs"],
                meta=item.get("meta"),
                severity=item.get("severity", "critical"),
            )
        )
    suite = context.suites.add(suite)
    asset = context.data_sources.get("geoaudit").add_dataframe_asset(name)
    batch = asset.add_batch_definition_whole_dataframe(name)
    return context.validation_definitions.add(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )


def run_suite(name: str, frame: pd.DataFrame, parameters: dict[str, Any]) -> SuiteOutcome:
    """Validate ``frame`` with suite ``name``; ``parameters`` fill its ``$PARAMETER``s."""
    id_columns = [c for c in suite_definition(name).get("meta", {}).get("id_columns", [])]
    result_format: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": 10}
    if id_columns and all(c in frame.columns for c in id_columns):
        result_format["unexpected_index_column_names"] = id_columns
    result = validation_definition(name).run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=parameters,
        result_format=result_format,
    )
    failed = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        res = item.result or {}
        problem = (config.meta or {}).get("problem", config.type)
        if item.exception_info and item.exception_info.get("raised_exception"):
            problem = f"{problem} (check could not run: {item.exception_info['exception_message']})"
        failed.append(
            FailedExpectation(
                expectation=config.type,
                column=config.kwargs.get("column"),
                severity=str(getattr(config.severity, "value", config.severity)),
                problem=problem,
                observed=res.get("observed_value"),
                unexpected_count=res.get("unexpected_count"),
                examples=_examples(res, config.kwargs.get("column"), id_columns),
            )
        )
    return SuiteOutcome(
        suite=name,
        success=bool(result.success),
        statistics={
            **{k: _jsonable(v) for k, v in dict(result.statistics).items()},
            "rows": len(frame),
            # a one-row table is a summary (counts, ratios): keep what was measured
            **({"observed": _jsonable(frame.iloc[0].to_dict())} if len(frame) == 1 else {}),
            "suite_version": suite_definition(name).get("meta", {}).get("version"),
        },
        failed=failed,
        result=result,
    )


def _examples(result: dict[str, Any], column: str | None, id_columns: list[str]) -> list[Any]:
    """Up to ten offending values, each named by its row's ids (``"b: True"``) when the
    suite declares id columns."""
    rows = result.get("partial_unexpected_index_list") or []
    if rows and id_columns and isinstance(rows[0], dict):
        return [
            "/".join(str(_jsonable(r.get(c))) for c in id_columns)
            + (f": {_jsonable(r.get(column))}" if column and column not in id_columns else "")
            for r in rows[:10]
        ]
    return list(result.get("partial_unexpected_list") or [])[:10]


def data_docs_page(result: Any) -> str:
    """The Great Expectations Data Docs page (HTML) of one validation result."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))


def _jsonable(value: Any) -> Any:
    """Plain JSON values (numpy scalars, NaN → None, containers recursively)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
