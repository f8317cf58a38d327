"""OGC WMTS imagery: the web-mercator tiles of a layer, read like an XYZ tile service.

Rules:

* ``url`` is a GetCapabilities URL (parsed by OWSLib), or a RESTful template with
  ``{TileMatrix}``, ``{TileRow}``, ``{TileCol}`` whose matrices are named by zoom;
* the tile matrix set must be web-mercator quad (GoogleMapsCompatible /
  WebMercatorQuad): CRS EPSG:3857, top-left corner ``(-20037508.34, 20037508.34)``,
  ``2**z x 2**z`` square tiles at level ``z`` with the matching scale denominator; the
  spec's set, or else the first such set linked to the layer, is used, and matrix
  ``z`` is read where XYZ reads zoom ``z`` (row = y, column = x);
* tiles come from the layer's tile ``ResourceURL`` template for the format, else from
  KVP GetTile; everything else (cache, concurrency, retries, missing tiles, nodata,
  footprint and fingerprint) is :class:`TileServiceSource`'s.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from pipeline.errors import ImageryError
from pipeline.sources.base import register_imagery, resolve_path
from pipeline.sources.imagery_http import HttpClient
from pipeline.sources.specs import WmtsSpec
from pipeline.sources.tile_service import TileServiceSource
from pipeline.sources.urls import mask_url, with_params

log = logging.getLogger(__name__)

HALF_WORLD = 20037508.342789244
#: ScaleDenominator * 0.28 mm * 256 px * 2**z = the world's width (2 * HALF_WORLD).
SCALE_Z0_256 = 559082264.0287178
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_CRS_CODE = re.compile(r"(EPSG|OSGEO)\b.*?(\d+)$", re.I)
MERCATOR_CODES = {"3857", "900913", "102100", "102113"}


@register_imagery("wmts")
class WmtsSource(TileServiceSource):
    """A WMTS layer on a web-mercator quad tile matrix set (module docstring)."""

    def __init__(
        self, spec: WmtsSpec, *, step: str | None = None, base_dir: Path | None = None
    ) -> None:
        url = resolve_path(spec.url, step=step, base_dir=None)
        service = f"WMTS {mask_url(url)}"
        if not url.startswith(("http://", "https://")):
            raise ImageryError(f"{service}: a WMTS URL must be http(s)")
        if "{TileMatrix}" in url:
            template, matrices = self._rest_template(spec, url, service), None
        else:
            client = HttpClient(service, headers=spec.headers, rate_limit=spec.rate_limit)
            try:
                template, matrices = self._from_capabilities(spec, url, service, client)
            finally:
                client.close()
        self.matrices = matrices
        key = json.dumps({"template": template, "matrices": matrices}, sort_keys=True)

        def url_for(z: int, x: int, y: int) -> str:
            return _fill(template, {"TileMatrix": self._matrix(z), "TileRow": y, "TileCol": x})

        super().__init__(
            spec,
            step=step,
            base_dir=base_dir,
            url_for=url_for,
            template=f"{url}#{key}",
            service=service,
        )
        self.path = mask_url(url)

    def _matrix(self, zoom: int) -> str:
        if self.matrices is None:
            return str(zoom)
        try:
            return self.matrices[zoom]
        except KeyError:
            raise ImageryError(
                f"{self.service}: the tile matrix set has no level for zoom {zoom} "
                f"(zooms {min(self.matrices)}..{max(self.matrices)}); set 'zoom'"
            ) from None

    @staticmethod
    def _rest_template(spec: WmtsSpec, url: str, service: str) -> str:
        values = {"Layer": spec.layer, "Style": spec.style, "TileMatrixSet": spec.tile_matrix_set}
        for name, value in values.items():
            if "{" + name + "}" in url:
                if value is None:
                    raise ImageryError(
                        f"{service}: the template has {{{name}}}; set "
                        f"'{'tile_matrix_set' if name == 'TileMatrixSet' else name.lower()}'"
                    )
                url = url.replace("{" + name + "}", value)
        unknown = set(_PLACEHOLDER.findall(url)) - {"TileMatrix", "TileRow", "TileCol"}
        if unknown:
            raise ImageryError(f"{service}: template placeholders {sorted(unknown)} unknown")
        return url

    @staticmethod
    def _from_capabilities(
        spec: WmtsSpec, url: str, service: str, client: HttpClient
    ) -> tuple[str, dict[int, str]]:
        from owslib.wmts import WebMapTileService

        caps_url = url
        if "getcapabilities" not in url.lower() and not url.split("?")[0].endswith(".xml"):
            caps_url = with_params(
                url, {"SERVICE": "WMTS", "REQUEST": "GetCapabilities", "VERSION": "1.0.0"}
            )
        body = client.get_ok(caps_url).content
        try:
            wmts = WebMapTileService(url, xml=body)
        except Exception as exc:  # OWSLib raises whatever its parser meets
            raise ImageryError(
                f"{service}: GetCapabilities is not a WMTS 1.0.0 document ({exc})"
            ) from exc
        if spec.layer not in wmts.contents:
            known = ", ".join(list(wmts.contents)[:20])
            raise ImageryError(f"{service}: no layer {spec.layer!r} (layers: {known})")
        layer = wmts.contents[spec.layer]
        linked = list(layer.tilematrixsetlinks)
        if spec.tile_matrix_set is not None:
            if spec.tile_matrix_set not in linked:
                raise ImageryError(
                    f"{service}: layer {spec.layer!r} has no tile matrix set "
                    f"{spec.tile_matrix_set!r} (has {', '.join(linked)})"
                )
            tms_id = spec.tile_matrix_set
            matrices, why = _mercator_levels(wmts.tilematrixsets[tms_id])
            if matrices is None:
                raise ImageryError(
                    f"{service}: tile matrix set {tms_id!r} is not web-mercator quad ({why}); "
                    "use a GoogleMapsCompatible / WebMercatorQuad set"
                )
        else:
            found = [(t, _mercator_levels(wmts.tilematrixsets[t])[0]) for t in linked]
            usable = [(t, m) for t, m in found if m]
            if not usable:
                raise ImageryError(
                    f"{service}: layer {spec.layer!r} has no web-mercator quad tile matrix set "
                    f"(has {', '.join(linked)})"
                )
            tms_id, matrices = usable[0]
        formats = list(layer.formats or [])
        fmt = spec.format or next(
            (f for f in formats if f in ("image/png", "image/jpeg")),
            formats[0] if formats else None,
        )
        if fmt is None or (formats and fmt not in formats):
            raise ImageryError(
                f"{service}: layer {spec.layer!r} does not offer format {fmt!r} "
                f"(offers {', '.join(formats)})"
            )
        styles = dict(layer.styles or {})
        style = spec.style or next(
            (s for s, info in styles.items() if info.get("isDefault")),
            next(iter(styles), "default"),
        )
        if spec.style is not None and styles and spec.style not in styles:
            raise ImageryError(
                f"{service}: layer {spec.layer!r} has no style {spec.style!r} "
                f"(has {', '.join(styles)})"
            )
        values = {"Layer": spec.layer, "Style": style, "TileMatrixSet": tms_id}
        for resource in layer.resourceURLs or []:
            if resource.get("resourceType") == "tile" and resource.get("format") == fmt:
                template = _fill(
                    resource["template"], values, keep=("TileMatrix", "TileRow", "TileCol")
                )
                unknown = set(_PLACEHOLDER.findall(template)) - {"TileMatrix", "TileRow", "TileCol"}
                if unknown:
                    raise ImageryError(
                        f"{service}: tile template dimensions {sorted(unknown)} are not supported"
                    )
                return template, matrices
        try:
            methods = wmts.getOperationByName("GetTile").methods
        except KeyError:
            methods = []
        get = [m.get("url") for m in methods if str(m.get("type", "")).lower() == "get"]
        base = get[0] if get and get[0] else url
        params = {
            "SERVICE": "WMTS",
            "REQUEST": "GetTile",
            "VERSION": "1.0.0",
            "LAYER": spec.layer,
            "STYLE": style,
            "FORMAT": fmt,
            "TILEMATRIXSET": tms_id,
            "TILEMATRIX": "{TileMatrix}",
            "TILEROW": "{TileRow}",
            "TILECOL": "{TileCol}",
        }
        template = with_params(base, params)
        for name in ("TileMatrix", "TileRow", "TileCol"):
            template = template.replace(f"%7B{name}%7D", "{" + name + "}")
        return template, matrices


def _mercator_levels(tms: Any) -> tuple[dict[int, str] | None, str]:
    """``({zoom: matrix id}, "")`` for a web-mercator quad set, ``(None, why)`` otherwise."""
    code = _CRS_CODE.search(str(tms.crs).strip())
    if code is None or code.group(2) not in MERCATOR_CODES:
        return None, f"CRS {tms.crs}"
    levels: dict[int, str] = {}
    for ident, tm in tms.tilematrix.items():
        width = int(tm.matrixwidth)
        z = width.bit_length() - 1
        if width != 1 << z or int(tm.matrixheight) != width:
            return None, f"matrix {ident} is {tm.matrixwidth}x{tm.matrixheight} tiles"
        if tm.tilewidth != tm.tileheight:
            return None, f"matrix {ident} has {tm.tilewidth}x{tm.tileheight} px tiles"
        x0, y0 = tm.topleftcorner
        if abs(x0 + HALF_WORLD) > 1 or abs(y0 - HALF_WORLD) > 1:
            return None, f"matrix {ident} top-left corner is {tm.topleftcorner}"
        expected = SCALE_Z0_256 * 256 / tm.tilewidth / (1 << z)
        if abs(tm.scaledenominator / expected - 1) > 1e-3:
            return None, f"matrix {ident} scale denominator {tm.scaledenominator}"
        levels[z] = ident
    return (levels or None), "no matrices"


def _fill(template: str, values: dict[str, Any], keep: tuple[str, ...] = ()) -> str:
    """Replace ``{Name}`` placeholders (case-sensitive) by ``values``, leaving ``keep``."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in keep or name not in values:
            return m.group(0)
        return str(values[name])

    return _PLACEHOLDER.sub(sub, template)


__all__ = ["WmtsSource"]
