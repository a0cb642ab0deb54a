"""ExperimentConfig: the shipped YAMLs load, overrides apply, bad values name their path."""

from __future__ import annotations

from pathlib import Path

import pytest

from coinrl.experiments.config import (
    ExperimentConfig,
    experiment_config_from,
    load_experiment_config,
)
from coinrl.pipeline.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


@pytest.mark.parametrize(("name", "algo"), [("ppo_btc_1h", "ppo"), ("dqn_btc_1h", "dqn")])
def test_shipped_configs_load_and_validate(name: str, algo: str) -> None:
    cfg = load_experiment_config(CONFIGS / f"{name}.yaml")
    assert cfg.name == name
    assert cfg.train.algo == algo
    assert cfg.data.source == "sample"
    assert cfg.env.taker_fee_rate == 0.001
    assert cfg.resolved_train.seed == cfg.seed


def test_overrides_apply_with_yaml_types() -> None:
    cfg = load_experiment_config(
        CONFIGS / "ppo_btc_1h.yaml",
        ["train.total_timesteps=5000", "env.taker_fee_rate=0.0005", "tracking.mode=disabled", "seed=7"],
    )
    assert cfg.train.total_timesteps == 5000
    assert cfg.env.taker_fee_rate == 0.0005
    assert cfg.tracking.mode == "disabled"
    assert cfg.resolved_train.seed == 7


def test_bad_keys_and_values_name_the_field_path() -> None:
    with pytest.raises(ConfigError, match=r"train\.ppo\.n_epoch: unknown key"):
        load_experiment_config(CONFIGS / "ppo_btc_1h.yaml", ["train.ppo.n_epoch=3"])
    with pytest.raises(ConfigError, match=r"env\.taker_fee_rate"):
        load_experiment_config(CONFIGS / "ppo_btc_1h.yaml", ["env.taker_fee_rate=2"])
    with pytest.raises(ConfigError, match="dqn needs env.action=discrete"):
        experiment_config_from({"train": {"algo": "dqn"}, "env": {"action": "continuous"}})
    with pytest.raises(ConfigError, match="does not exist"):
        load_experiment_config(CONFIGS / "nope.yaml")


def test_yaml_round_trip_is_lossless(tmp_path: Path) -> None:
    cfg = load_experiment_config(CONFIGS / "ppo_btc_1h.yaml", ["train.seed=3"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.to_yaml())
    assert load_experiment_config(path) == cfg
    assert ExperimentConfig().train.algo == "ppo"
