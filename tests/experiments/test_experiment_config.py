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


def test_sources_or_symbols_make_a_portfolio_experiment_and_single_asset_stays() -> None:
    from coinrl.envs.config import PortfolioEnvConfig
    from coinrl.experiments.config import PortfolioExperimentConfig
    from coinrl.pipeline.source import PortfolioDataConfig

    shipped = load_experiment_config(CONFIGS / "ppo_portfolio.yaml")
    assert isinstance(shipped, PortfolioExperimentConfig)
    assert isinstance(shipped.data, PortfolioDataConfig)
    assert isinstance(shipped.env, PortfolioEnvConfig)
    assert len(shipped.data.sources) == 3
    by_symbols = experiment_config_from({"data": {"symbols": ["ETH/BTC"]}, "env": {"window": 8}})
    assert by_symbols.is_portfolio
    assert by_symbols.env.action == "continuous"  # the portfolio default: target weights
    single = load_experiment_config(CONFIGS / "ppo_btc_1h.yaml")
    assert type(single) is ExperimentConfig
    assert type(single.env).__name__ == "EnvConfig"
    assert not single.is_portfolio
    # a portfolio round-trips through its YAML as a portfolio
    assert experiment_config_from(shipped.to_dict()) == shipped


def test_bad_portfolio_combinations_are_config_errors_naming_the_fix() -> None:
    pf = {"data": {"sources": ["a.csv", "b.csv"]}}
    with pytest.raises(ConfigError, match="dqn cannot trade a portfolio"):
        experiment_config_from({**pf, "train": {"algo": "dqn"}, "env": {"action": "discrete"}})
    with pytest.raises(ConfigError, match=r"env: .*beyond the gross budget 0.5"):
        experiment_config_from({**pf, "env": {"action": "discrete", "gross_leverage": 0.5}})
    with pytest.raises(ConfigError, match=r"env: .*exceeds max_leverage"):
        experiment_config_from({**pf, "env": {"gross_leverage": 2.0}})
    with pytest.raises(ConfigError, match="sac needs env.action=continuous"):
        experiment_config_from({**pf, "train": {"algo": "sac"}, "env": {"action": "discrete"}})
    with pytest.raises(ConfigError, match=r"env\.window"):
        experiment_config_from({**pf, "env": {"window": 0}})
    with pytest.raises(ConfigError, match=r"env.gross_leverage are portfolio keys.*data.sources"):
        experiment_config_from({"data": {"source": "sample"}, "env": {"gross_leverage": 1.0}})


def test_one_market_loading_refuses_a_portfolio_data_section() -> None:
    from coinrl.pipeline.source import load_candles, load_dataset

    cfg = load_experiment_config(CONFIGS / "ppo_portfolio.yaml")
    with pytest.raises(ConfigError, match="load_portfolio_dataset"):
        load_dataset(cfg.data)  # it must not quietly train on data.source (the BTC sample)
    with pytest.raises(ConfigError, match="load_portfolio_dataset"):
        load_candles(cfg.data)  # (what coinrl tune reads)
