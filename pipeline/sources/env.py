"""``${ENV_VAR}`` in source fields: secrets kept out of AOI files and everything stored.

An AOI file may write ``url: "https://tiles.example.org/{z}/{x}/{y}.jpg?key=${TILE_KEY}"``
or ``headers: {Authorization: "Bearer ${TOKEN}"}``. The spec is stored as written (the
AOI file, the ``aoi.config`` column, run params and XCom only ever hold ``${TILE_KEY}``);
:func:`resolve_env` substitutes the variables when a source opens and registers each
value with :func:`pipeline.redact.add_secret`, so no message or log line shows it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from pipeline.errors import ConfigError
from pipeline.redact import add_secret

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
M = TypeVar("M", bound=BaseModel)


def resolve_env(spec: M, environ: Mapping[str, str] | None = None) -> M:
    """A copy of ``spec`` with every ``${NAME}`` in its text fields replaced by the
    environment variable ``NAME``; :class:`ConfigError` names the field and the variable
    (never a value) when one is not set."""
    env = os.environ if environ is None else environ
    kind = getattr(spec, "kind", type(spec).__name__)
    update: dict[str, Any] = {}
    for name in type(spec).model_fields:
        value = getattr(spec, name)
        resolved = _resolve(value, env, f"{kind} source field {name!r}")
        if resolved is not value:
            update[name] = resolved
    return spec.model_copy(update=update) if update else spec


def has_env_reference(value: Any) -> bool:
    """Whether ``value`` (text, or a list/dict of text) holds a ``${NAME}`` reference."""
    if isinstance(value, str):
        return bool(ENV_REFERENCE.search(value))
    if isinstance(value, Mapping):
        return any(has_env_reference(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_env_reference(v) for v in value)
    return False


def _resolve(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        if "${" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            if name not in env:
                raise ConfigError(
                    f"{where} refers to the environment variable {name}, which is not set "
                    f"(export {name}=... where the audit runs)"
                )
            secret = env[name]
            add_secret(secret)
            return secret

        return ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, Mapping):
        out = {k: _resolve(v, env, where) for k, v in value.items()}
        return value if all(out[k] is value[k] for k in value) else out
    if isinstance(value, list):
        items = [_resolve(v, env, where) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value
