"""One error hierarchy for the engine, rooted at :class:`GeoAuditError`.

Messages name the failing input and the rule it broke, so a user can act on
them without reading a traceback. Errors about files also subclass the
built-in error callers would expect (``ValueError``, ``OSError``).

Each error says which of the CLI's exit codes it ends with (:class:`ExitCode`): bad
input (the user's files, settings or arguments must change), or a runtime fault (the
database, the artifact store or the machine failed; the same command may work later).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The CLI's exit codes (documented in the README)."""

    OK = 0
    #: an unexpected error: a bug, reported with its traceback
    INTERNAL = 1
    #: the command line itself is wrong (unknown option, missing argument)
    USAGE = 2
    #: an input is wrong: AOI file, source, open data, imagery, model file, a name
    BAD_INPUT = 3
    #: a runtime fault: database, artifact store, lock, another audit running
    FAULT = 4


class GeoAuditError(Exception):
    """Root of every error the engine raises on purpose (bad input unless a subclass
    says otherwise)."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


class FaultError(GeoAuditError, RuntimeError):
    """A runtime fault outside the user's inputs; retrying later may succeed."""

    exit_code = ExitCode.FAULT


class DatabaseFaultError(FaultError):
    """The database is unreachable, went away or stayed locked; the message names it
    (password masked) and the first line of the driver's error."""


class LockLostError(FaultError):
    """The audit lock was lost mid-run (its connection died) and could not be taken back."""


class ConfigError(GeoAuditError, ValueError):
    """A setting or AOI file is malformed; the message names the field."""


class InvalidTileError(GeoAuditError, ValueError):
    """A tile or zoom is outside the valid web-mercator range."""


class SourceError(GeoAuditError, OSError):
    """An imagery or open-data source could not be read."""


class ImageryError(SourceError):
    """Imagery is unreadable, has no CRS, no data over the AOI or wrong bands."""


class VectorDataError(SourceError):
    """Open data is unreadable, empty or has unusable geometries."""


class CoverageError(GeoAuditError, ValueError):
    """The imagery or open data does not cover the AOI."""


class ModelError(GeoAuditError, ValueError):
    """A model file or model version is missing or not a model."""


class NotFoundError(GeoAuditError, LookupError):
    """A named AOI, run, snapshot or model version does not exist."""


class StoreError(GeoAuditError, OSError):
    """The artifact store cannot be read or written."""

    exit_code = ExitCode.FAULT


class ValidationFailedError(GeoAuditError, ValueError):
    """A critical data-quality expectation failed; the message names the input and why."""
