"""Data-quality gates with Great Expectations: suites, profiles and the audit gate."""

from pipeline.validate.gate import (
    ValidationReport,
    suite_parameters,
    validate_inputs,
    validate_outputs,
    validate_snapshots,
)

__all__ = [
    "ValidationReport",
    "suite_parameters",
    "validate_inputs",
    "validate_outputs",
    "validate_snapshots",
]
