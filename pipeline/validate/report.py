"""What a validation found: the outcome of each suite on each input, their verdict
(critical failures stop an audit, warnings are shown) and their Data Docs pages.

A report is built by :mod:`pipeline.run.validate`; it knows where its pages go
(``docs_key``) but stores nothing itself.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from pipeline.aoi.config import ValidationSettings
from pipeline.errors import ValidationFailedError
from pipeline.store import ArtifactStore
from pipeline.validate.gx import FailedExpectation, SuiteOutcome


@dataclass(frozen=True)
class CheckedInput:
    """One suite's outcome on one input (a snapshot's source, or a run's outputs)."""

    outcome: SuiteOutcome
    input_name: str
    snapshot_id: int | None = None
    docs_key: str | None = None  # artifact key of its Data Docs page


@dataclass
class ValidationReport:
    """Outcomes of the suites run on an audit's inputs or outputs."""

    checked: list[CheckedInput] = field(default_factory=list)
    result_ids: list[int] = field(default_factory=list)
    index_key: str | None = None
    index_uri: str | None = None
    header: tuple[str, str, str] = ("", "", "")
    seconds: float = 0.0

    def write_pages(self, store: ArtifactStore) -> None:
        """Write the Data Docs page of every suite and their index to the artifact store
        (needs the GX results: in the process that validated)."""
        for item in self.checked:
            if item.docs_key:
                store.write_bytes(item.docs_key, item.outcome.page().encode())
        if self.index_key:
            store.write_bytes(self.index_key, index_page(*self.header, self.checked))

    @property
    def success(self) -> bool:
        """True when every expectation held (warnings included)."""
        return all(c.outcome.success for c in self.checked)

    @property
    def critical(self) -> list[tuple[str, FailedExpectation]]:
        """``(input, failed expectation)`` of every critical failure."""
        return [(c.input_name, f) for c in self.checked for f in c.outcome.critical]

    @property
    def warnings(self) -> list[tuple[str, FailedExpectation]]:
        """``(input, failed expectation)`` of every failure that lets the audit go on."""
        return [
            (c.input_name, f)
            for c in self.checked
            for f in c.outcome.failed
            if f.severity != "critical"
        ]

    def reason(self) -> str:
        """The critical failures in words, each naming its input."""
        lines = [f"{name}: {f.describe()}" for name, f in self.critical]
        return "validation failed (critical): " + "; ".join(lines)

    def raise_for_critical(self) -> None:
        """Raise :class:`ValidationFailedError` when a critical expectation failed."""
        if self.critical:
            raise ValidationFailedError(self.reason())

    def warning_lines(self, limit: int = 20) -> list[str]:
        """The warnings in words, each naming its input (at most ``limit``)."""
        return [f"{name}: {f.describe()}" for name, f in self.warnings][:limit]

    def summary(self) -> dict[str, Any]:
        """Small JSON-able summary (for logs and the CLI)."""
        return {
            "success": self.success,
            "suites": {c.outcome.suite: c.outcome.severity for c in self.checked},
            "n_critical": len(self.critical),
            "n_warnings": len(self.warnings),
            "warnings": self.warning_lines(),
            "data_docs": self.index_uri,
            "seconds": round(self.seconds, 3),
        }


def suite_parameters(v: ValidationSettings) -> dict[str, Any]:
    """``$PARAMETER`` values of the suites from an AOI's validation settings."""
    return {
        "max_vertices": v.max_vertices,
        "valid_mostly": max(1.0 - v.max_repaired_share, 1e-9),
        "min_area_m2": v.min_area_m2,
        "max_area_m2": v.max_area_m2,
        "area_mostly": v.area_mostly,
        "min_count_ratio": max(1.0 - v.count_change_band, 0.0),
        "max_count_ratio": 1.0 + v.count_change_band,
        "max_nodata_share": v.max_nodata_share,
        "min_coverage": v.min_coverage,
        "min_brightness_ratio": max(1.0 - v.brightness_band, 0.0),
        "max_brightness_ratio": 1.0 + v.brightness_band,
        "max_colour_shift": v.max_colour_shift,
    }


def index_page(aoi: str, step: str, tag: str, checked: list[CheckedInput]) -> bytes:
    """A small HTML index linking the Data Docs page of every suite."""
    title = f"{html.escape(aoi)} {html.escape(step)} ({html.escape(tag)})"
    rows = "".join(
        f"<tr><td><a href='{html.escape(c.outcome.suite)}.html'>{html.escape(c.outcome.suite)}"
        f"</a></td><td>{html.escape(c.input_name)}</td>"
        f"<td>{'passed' if c.outcome.success else 'failed'}</td>"
        f"<td>{html.escape(c.outcome.severity)}</td>"
        f"<td>{html.escape('; '.join(f.describe() for f in c.outcome.failed))}</td></tr>"
        for c in checked
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>GeoAudit validation {title}</title>"
        "</head><body>"
        f"<h1>Validation of {title}</h1>"
        "<table border='1' cellpadding='4'><tr><th>Suite</th><th>Input</th><th>Result</th>"
        f"<th>Worst failure</th><th>Failed expectations</th></tr>{rows}</table>"
        "<p>Each suite links to its Great Expectations Data Docs page.</p></body></html>"
    )
    return page.encode()
