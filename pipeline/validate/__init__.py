"""Data-quality checks with Great Expectations: the versioned suites (:mod:`.gx`), the
tables they run on (:mod:`.profiles`) and what they found (:mod:`.report`).

The gate of an audit, which runs them on a run's inputs and outputs and stores the
results, is the run's validate stage (:mod:`pipeline.run.validate`).
"""

from pipeline.validate.report import CheckedInput, ValidationReport, suite_parameters

__all__ = ["CheckedInput", "ValidationReport", "suite_parameters"]
