"""Specs, path resolution and the source registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from pipeline.errors import ConfigError
from pipeline.sources import (
    IMAGERY_SOURCES,
    GeoTiffSpec,
    ImagerySource,
    ImagerySpec,
    VectorSpec,
    XyzSpec,
    open_imagery,
    register_imagery,
)
from pipeline.sources.base import resolve_path

IMAGERY = TypeAdapter(ImagerySpec)


def test_imagery_spec_is_discriminated_by_kind() -> None:
    tif = IMAGERY.validate_python({"kind": "geotiff", "path": "a/{step}.tif", "bands": [1]})
    xyz = IMAGERY.validate_python({"kind": "xyz", "path": "tiles", "zoom": 20})
    assert isinstance(tif, GeoTiffSpec) and tif.bands == [1] and tif.rescale is None
    assert isinstance(xyz, XyzSpec) and xyz.zoom == 20
    assert GeoTiffSpec(path="x.tif").bands == [1, 2, 3]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"kind": "geotiff", "path": "a.tif", "colour": 1}, "Extra inputs"),
        ({"kind": "geotiff", "path": "a.tif", "bands": [1, 2]}, "1 or 3 band"),
        ({"kind": "geotiff", "path": "a.tif", "bands": [0]}, "1-based"),
        ({"kind": "geotiff", "path": "a.tif", "rescale": [10, 5]}, "min < max"),
        ({"kind": "xyz", "path": "t", "zoom": 30}, "less than or equal"),
        ({"kind": "wcs", "path": "t"}, "does not match any of the expected tags"),
    ],
)
def test_bad_imagery_specs_are_rejected(data: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        IMAGERY.validate_python(data)


def test_vector_spec_forbids_extra_fields() -> None:
    assert VectorSpec(kind="vector", path="b.gpkg", layer="l").id_field is None
    with pytest.raises(ValidationError, match="Extra inputs"):
        VectorSpec.model_validate({"kind": "vector", "path": "b.gpkg", "filter": "x"})


def test_resolve_path_replaces_step_and_uses_base_dir(tmp_path: Path) -> None:
    assert resolve_path("img/{step}.tif", step="2024-06", base_dir=tmp_path) == str(
        tmp_path / "img" / "2024-06.tif"
    )
    assert resolve_path("/abs/a.tif", step=None, base_dir=tmp_path) == "/abs/a.tif"
    url = "https://example.org/{step}/cog.tif"
    assert resolve_path(url, step="t1", base_dir=tmp_path) == "https://example.org/t1/cog.tif"
    with pytest.raises(ConfigError, match=r"\{step\} but no time step"):
        resolve_path("img/{step}.tif", step=None, base_dir=tmp_path)


def test_a_registered_kind_plugs_into_open_imagery() -> None:
    class ConstSpec(BaseModel):
        kind: str = "const-test"
        path: str = "-"

    @register_imagery("const-test")
    class ConstSource(ImagerySource):
        def __init__(self, spec, *, step=None, base_dir=None):  # noqa: ANN001
            self.path, self.step = spec.path, step

        def read_shard(self, shard):  # noqa: ANN001
            raise NotImplementedError

        def footprint(self):
            raise NotImplementedError

        def fingerprint(self) -> str:
            return "const"

    try:
        with open_imagery(ConstSpec(), step="t9") as src:  # type: ignore[arg-type]
            assert isinstance(src, ConstSource) and src.step == "t9"
            assert src.fingerprint() == "const"
    finally:
        IMAGERY_SOURCES.pop("const-test")
    with pytest.raises(ConfigError, match="'const-test' is not registered"):
        open_imagery(ConstSpec())  # type: ignore[arg-type]
