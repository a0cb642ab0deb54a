"""Config base: frozen pydantic models validated once, loaded from YAML.

Every stage owns its config model (``DataConfig`` here, ``EnvConfig`` in envs, ...) built on
:class:`FrozenModel`; ``experiments`` composes them. A bad key or value fails at load time with
the field's dotted path and a hint, as a :class:`~coinrl.pipeline.errors.ConfigError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
"""A float in [0, 1]: fees, weights and shares are fractions, never percent."""

PositiveInt = Annotated[int, Field(gt=0)]

M = TypeVar("M", bound=BaseModel)


class FrozenModel(BaseModel):
    """Base of all coinrl config models: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def format_validation_error(err: ValidationError, source: str) -> str:
    """Render a pydantic error as one line per problem: ``path: message (got value)``."""
    lines = [f"invalid config in {source}: {err.error_count()} problem(s)"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key; remove it or check its spelling against the documented fields"
        got = e.get("input")
        got_s = "" if e["type"] == "missing" else f" (got {got!r})"
        if len(got_s) > 120:
            got_s = got_s[:117] + "...)"
        lines.append(f"  {path}: {msg}{got_s}")
    return "\n".join(lines)


def validate_config(model: type[M], data: Any, source: str = "<dict>") -> M:
    """Validate ``data`` into ``model``, raising :class:`ConfigError` with field paths."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from e


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or non-mapping document is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist; pass the path of a YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping of keys to values, got {type(data).__name__}")
    return data


def load_config(model: type[M], path: str | Path) -> M:
    """Load and validate a YAML file into a frozen config model.

    Example:
        >>> cfg = load_config(DataConfig, "experiments/configs/data.yaml")  # doctest: +SKIP
    """
    return validate_config(model, load_yaml(path), source=str(path))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a nested dict copy."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {part} is not a mapping")
            node = nxt
        node[parts[-1]] = yaml.safe_load(raw)
    return out
