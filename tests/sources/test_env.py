"""``${ENV_VAR}`` references in source specs: resolved only when a source opens, with
a clear error for an unset variable, and every resolved value masked from then on."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.redact import redact
from pipeline.sources.env import has_env_reference, resolve_env
from pipeline.sources.specs import ArcGisSpec, XyzSpec


def test_references_in_text_headers_and_lists_are_resolved() -> None:
    spec = XyzSpec(
        path="https://{s}.t.example.org/{z}/{x}/{y}.jpg?key=${TILE_KEY}",
        subdomains=["a", "${SUB}"],
        headers={"Authorization": "Bearer ${TOKEN}", "Accept": "image/jpeg"},
    )
    env = {"TILE_KEY": "k-123456", "SUB": "b", "TOKEN": "tok-abcdef"}
    resolved = resolve_env(spec, env)
    assert resolved.path.endswith("?key=k-123456")
    assert resolved.subdomains == ["a", "b"]
    assert resolved.headers == {"Authorization": "Bearer tok-abcdef", "Accept": "image/jpeg"}
    assert "${TILE_KEY}" in spec.path  # the spec itself is unchanged
    assert has_env_reference(spec.headers) and not has_env_reference(resolved.headers)
    # once resolved, the values are masked wherever they would be shown
    assert "tok-abcdef" not in redact("401 for Bearer tok-abcdef")


def test_a_spec_without_references_is_returned_as_is() -> None:
    spec = XyzSpec(path="https://t.example.org/{z}/{x}/{y}.png")
    assert resolve_env(spec, {}) is spec


def test_an_unset_variable_names_the_field_and_the_variable() -> None:
    spec = ArcGisSpec(
        url="https://h.example.org/arcgis/rest/services/B/FeatureServer/0?token=${AGS}"
    )
    with pytest.raises(ConfigError, match=r"arcgis source field 'url'.*AGS, which is not set"):
        resolve_env(spec, {})


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET https://b.s3.amazonaws.com/o.tif?X-Amz-Signature=f00d&X-Amz-Date=1 failed", "f00d"),
        ("https://storage.googleapis.com/b/o.tif?X-Goog-Signature=beef1234", "beef1234"),
        ("https://a.blob.core.windows.net/c/o.tif?sv=2020&sig=abc%2Fdef", "abc%2Fdef"),
        ("https://tiles.example.org/1/2/3.jpg?key=AIzaKEY", "AIzaKEY"),
        ("tile server said: sig=abc123 invalid", "abc123"),
    ],
)
def test_signed_urls_lose_their_whole_query_string(text: str, secret: str) -> None:
    shown = redact(text)
    assert secret not in shown and "***" in shown
