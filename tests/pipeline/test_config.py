"""Config loading: frozen models, unknown keys and bad values fail with the field path."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from coinrl.pipeline.config import (
    Fraction,
    FrozenModel,
    apply_overrides,
    load_config,
    validate_config,
)
from coinrl.pipeline.errors import ConfigError


class _Inner(FrozenModel):
    fee_rate: Fraction = 0.001
    side: Literal["long", "short"] = "long"


class _Outer(FrozenModel):
    name: str
    window: int = Field(default=24, gt=0)
    inner: _Inner = _Inner()


def test_valid_yaml_loads_into_frozen_model(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nwindow: 12\ninner:\n  fee_rate: 0.002\n")
    cfg = load_config(_Outer, p)
    assert cfg.window == 12
    assert cfg.inner.fee_rate == 0.002
    with pytest.raises(Exception, match="frozen"):
        cfg.window = 3  # type: ignore[misc]


def test_unknown_nested_key_names_its_path(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ninner:\n  fee_rte: 0.002\n")
    with pytest.raises(ConfigError, match=r"inner\.fee_rte: unknown key") as ei:
        load_config(_Outer, p)
    assert str(p) in str(ei.value)


def test_out_of_range_value_names_path_and_value() -> None:
    with pytest.raises(ConfigError, match=r"inner\.fee_rate: .*less than or equal to 1.*got 5"):
        validate_config(_Outer, {"name": "x", "inner": {"fee_rate": 5}})


def test_missing_required_field_is_reported() -> None:
    with pytest.raises(ConfigError, match=r"name: Field required"):
        validate_config(_Outer, {})


def test_every_problem_is_listed_not_just_the_first() -> None:
    with pytest.raises(ConfigError, match="3 problem") as ei:
        validate_config(_Outer, {"window": 0, "inner": {"side": "up"}})
    msg = str(ei.value)
    assert "window" in msg
    assert "inner.side" in msg
    assert "name" in msg


def test_missing_file_and_non_mapping_yaml_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_Outer, tmp_path / "nope.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(_Outer, p)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_Outer, bad)


def test_overrides_set_nested_values_with_yaml_typing() -> None:
    out = apply_overrides({"name": "x", "inner": {"fee_rate": 0.001}}, ["inner.fee_rate=0.0005", "window=48"])
    assert out == {"name": "x", "inner": {"fee_rate": 0.0005}, "window": 48}
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["window"])
