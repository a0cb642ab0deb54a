"""docs/CONFIG.md is the generated config reference, in sync with the pydantic models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coinrl.experiments.config import ExperimentConfig
from coinrl.experiments.config_docs import config_reference, write_config_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"


def _leaf_keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else k
        out += _leaf_keys(v, key) if isinstance(v, dict) else [key]
    return out


def test_config_md_is_what_the_generator_writes_today() -> None:
    assert DOC.read_text(encoding="utf-8") == config_reference(), (
        "docs/CONFIG.md is out of date: run `python -m coinrl.experiments.config_docs docs/CONFIG.md`"
    )


def test_every_key_of_a_default_experiment_has_a_row_with_its_default() -> None:
    text = config_reference()
    rows = {line.split("|")[1].strip().strip("`"): line for line in text.splitlines() if line.startswith("| `")}
    keys = _leaf_keys(ExperimentConfig().to_dict())
    assert len(keys) > 100
    missing = [k for k in keys if k not in rows]
    assert not missing, missing
    assert "| 0.001 | fraction |" in rows["env.taker_fee_rate"]
    assert "| 1 | bps |" in rows["env.slippage_bps"]
    assert "| 1024 | samples |" in rows["train.recurrent_ppo.batch_size"]  # the nested default, not PPO's 2048
    assert "| false |" in rows["train.save_replay_buffer"]
    assert "GB" in rows["train.save_replay_buffer"]
    for kind in ("returns", "rsi", "macd"):  # every feature kind's keys are listed too
        assert f"## data.features.features[] (kind: {kind})" in text


def test_the_generator_writes_the_file(tmp_path: Path) -> None:
    out = write_config_reference(tmp_path / "CONFIG.md")
    assert out.read_text(encoding="utf-8") == config_reference()
