"""Hotspots map: tiles (or cells) coloured by error, findings, changes and hotspot cells
over the AOI's own imagery; no internet needed."""

import streamlit as st

from dashboard import data, maps
from dashboard.widgets import downloads, pick_audited_step
from pipeline.results.map_cells import aggregation_level
from pipeline.tiles import TILE_SIZE, resolution

st.title("Hotspots map")
aoi, step, run_id = pick_audited_step()

extent = data.q("tile_extent", run_id=run_id).iloc[0]
n_tiles = int(extent["n_tiles"] or 0)
if n_tiles == 0:
    st.info(f"Run {run_id} scored no tiles.")
    st.stop()
level = aggregation_level(n_tiles)
cells = data.q("tile_cells", run_id=run_id, factor=2**level)
cell_zoom = int(extent["z"]) - level

sb = st.sidebar
sb.markdown("**Layers**")
basemap_url = data.settings().basemap_url
# on at first: what a reviewer reads (imagery, findings, significant hotspots); the
# tile errors and the changes are one click away
show_basemap = basemap_url is not None and sb.toggle("Basemap", value=True, key="layer_basemap")
show_imagery = sb.toggle("Imagery", value=True, key="layer_imagery")
show_tiles = sb.toggle(
    "Tiles by error" if level == 0 else "Cells by error", value=False, key="layer_tiles"
)
show_findings = sb.toggle("Findings", value=True, key="layer_findings")
show_changes = sb.toggle("Changes", value=False, key="layer_changes")
show_hotspots = sb.toggle("Hotspot cells", value=True, key="layer_hotspots")

findings = data.findings(run_id)
changes = data.changes(run_id)
hotspots = data.hotspots(run_id)
bounds = data.aoi_bounds(int(aoi["aoi_id"]))
layers = []
if show_basemap:
    try:
        layers += maps.bitmap_layers(data.basemap(basemap_url, bounds), prefix="basemap")
    except maps.BasemapError as exc:
        st.warning(f"Basemap not shown ({exc}); set GEOAUDIT_BASEMAP_URL or leave it unset.")
if show_imagery:
    layers += maps.bitmap_layers(data.previews(run_id), prefix="imagery")
if show_tiles:
    layers.append(maps.cells_layer(cells, cell_zoom))
if show_changes and not changes.empty:
    layers.append(maps.vector_layer(changes, maps.CHANGE_COLOURS, layer_id="changes"))
if show_findings and not findings.empty:
    layers.append(maps.vector_layer(findings, maps.FINDING_COLOURS, layer_id="findings"))
if show_hotspots and not hotspots.empty:
    layers.append(maps.hotspot_layer(hotspots))

st.pydeck_chart(
    maps.deck(layers, bounds),
    height=620,
    key="hotspot_map",
)


def _swatch(rgba: list[int], label: str, *, outline: bool = False) -> str:
    r, g, b, a = rgba
    style = (
        f"border:3px solid rgb({r},{g},{b})"
        if outline
        else f"background:rgba({r},{g},{b},{a / 255:.2f})"
    )
    return (
        f"<span style='display:inline-block;width:14px;height:14px;{style};"
        f"margin:0 6px -2px 12px'></span>{label}"
    )


legend = ["**Legend**"]
legend.append(
    "Tiles: "
    + "".join(_swatch(maps.error_colour(q), f"QoD {q}") for q in (90, 75, 50, 25, 0))
    + " (QoD 100: clear)"
)
legend.append("Findings: " + "".join(_swatch(c, k) for k, c in maps.FINDING_COLOURS.items()))
legend.append("Changes: " + "".join(_swatch(c, k) for k, c in maps.CHANGE_COLOURS.items()))
legend.append(
    "Hotspots: "
    + _swatch(maps.HOTSPOT_LINE, "significant cell (Gi*, false discovery rate 5%)", outline=True)
)
st.markdown("<br>".join(legend), unsafe_allow_html=True)
west, south, east, north = bounds
lat, lon = (south + north) / 2, (west + east) / 2
tile_m = resolution(int(extent["z"]), lat) * TILE_SIZE
scale = (
    f"Centre {lat:.5f}° N, {lon:.5f}° E · one tile ≈ {tile_m:.0f} m across"
    if level == 0
    else f"Centre {lat:.5f}° N, {lon:.5f}° E · {n_tiles} tiles shown as {len(cells)} cells "
    f"of {2**level}×{2**level} tiles, one cell ≈ {tile_m * 2**level:.0f} m across"
)
st.caption(scale)

left, right = st.columns(2)
with left:
    st.markdown(f"**Significant hotspot cells** (step {step})")
    if hotspots.empty:
        st.caption("No cell where findings cluster more than chance explains.")
    else:
        st.dataframe(
            hotspots.drop(columns=["geometry", "id", "run_id"], errors="ignore")
            .head(10)
            .round({"gi_star": 2, "p_value": 4, "q_value": 4}),
            hide_index=True,
            width="stretch",
        )
with right:
    st.markdown(f"**Findings** ({len(findings)})")
    st.dataframe(
        findings["kind"].value_counts().rename_axis("kind").reset_index(name="n"),
        hide_index=True,
        width="stretch",
    )
downloads(
    findings.drop(columns=["detail"], errors="ignore"),
    f"findings-{aoi.name}-{step}",
    key="hs-findings",
)
