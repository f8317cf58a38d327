"""The titiler app the WMTS tests run with uvicorn: COG tiles + the WMTS extension."""

from __future__ import annotations

from fastapi import FastAPI
from titiler.core.errors import DEFAULT_STATUS_CODES, add_exception_handlers
from titiler.core.factory import TilerFactory
from titiler.extensions import wmtsExtension

app = FastAPI(title="GeoAudit test tiler")
cog = TilerFactory(extensions=[wmtsExtension()])
app.include_router(cog.router)
add_exception_handlers(app, DEFAULT_STATUS_CODES)  # a tile outside the COG: 404


@app.get("/healthz")
def healthz() -> dict[str, str]:
    """Readiness probe for the test fixture."""
    return {"ok": "yes"}
