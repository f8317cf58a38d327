"""One error hierarchy for the engine, rooted at :class:`GeoAuditError`.

Messages name the failing input and the rule it broke, so a user can act on
them without reading a traceback. Errors about files also subclass the
built-in error callers would expect (``ValueError``, ``OSError``).
"""

from __future__ import annotations


class GeoAuditError(Exception):
    """Root of every error the engine raises on purpose."""


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


class ValidationFailedError(GeoAuditError, ValueError):
    """A critical data-quality expectation failed; the message names the input and why."""
