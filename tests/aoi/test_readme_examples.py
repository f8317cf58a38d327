"""The README's AOI file, its "bring your own city" file and every source example of its
Sources table are valid configuration (a copied example must not fail)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter

from pipeline.aoi import parse_aoi
from pipeline.aoi.config import AoiConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
IMAGERY_KINDS = {"geotiff", "xyz", "wms", "wmts", "stac"}
SOURCE_ROWS = re.findall(r"^\| `(\w+)` \| .*? \| `(\{kind.*?\})` \|", README, re.M)


def _between(start: str, end: str) -> str:
    head = README.index(start) + len(start)
    return README[head : README.index(end, head)]


def test_the_aoi_file_example_parses() -> None:
    config = parse_aoi(yaml.safe_load(_between("```yaml\n", "```")), source="README")
    assert config.name == "my-city" and config.dates.imagery == "latest"


def test_the_bring_your_own_city_file_parses() -> None:
    config = parse_aoi(yaml.safe_load(_between("<<'YAML'\n", "YAML\n")), source="README")
    assert (config.imagery.kind, config.opendata.kind) == ("xyz", "overpass")
    assert "${TILE_KEY}" in config.imagery.path


def test_the_sources_table_lists_every_kind() -> None:
    assert {kind for kind, _ in SOURCE_ROWS} == IMAGERY_KINDS | {
        "vector",
        "overpass",
        "osm_pbf",
        "wfs",
        "arcgis",
        "postgis",
    }


@pytest.mark.parametrize(("kind", "example"), SOURCE_ROWS, ids=[k for k, _ in SOURCE_ROWS])
def test_each_source_example_is_valid(kind: str, example: str) -> None:
    field = "imagery" if kind in IMAGERY_KINDS else "opendata"
    spec = TypeAdapter(AoiConfig.model_fields[field].annotation).validate_python(
        yaml.safe_load(example)
    )
    assert spec.kind == kind
