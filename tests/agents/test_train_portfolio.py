"""Portfolio agents: train_model on a PreparedPortfolio, bundles as plain data, data rebuilt with
the bundle's own spec and normalisers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coinrl.agents.agent import TrainedAgent
from coinrl.agents.bundle import PORTFOLIO_FILE, load_model, save_model
from coinrl.agents.config import TrainConfig
from coinrl.agents.train import train_model
from coinrl.agents.train_portfolio import (
    evaluate_portfolio,
    portfolio_data_for,
    portfolio_spaces,
)
from coinrl.envs.config import PortfolioEnvConfig
from coinrl.envs.portfolio_env import PortfolioEnv
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.portfolio import PreparedPortfolio
from coinrl.pipeline.source import PortfolioDataConfig, load_portfolio_dataset


def small_train_config(**overrides: Any) -> TrainConfig:
    """A few-seconds PPO config: 8 envs, rollouts of 512 steps."""
    base: dict[str, Any] = {
        "total_timesteps": 2048, "n_envs": 8, "seed": 0,
        "ppo": {"n_steps": 64, "batch_size": 256, "n_epochs": 2},
        "eval_every_steps": 0, "checkpoint_every_steps": 0, "early_stopping_patience": None,
        "progress_bar": False,
    }
    base.update(overrides)
    return TrainConfig.model_validate(base)

SPEC: dict[str, Any] = {"features": [{"kind": "returns", "horizons": [1, 6]}, {"kind": "rsi", "window": 14}]}
ENV = PortfolioEnvConfig(window=6, episode_length_bars=128)


def _data_cfg(shared: Path, **kw: Any) -> dict[str, Any]:
    return {
        "sources": [str(shared / f"{s}_BTC-5m.feather") for s in ("ADA", "ETH", "LTC")],
        "features": SPEC, "split": {"train": 0.7, "validation": 0.15, "test": 0.15},
        "market_features": True, **kw,
    }


@pytest.fixture(scope="module")
def coins(shared_data: Path) -> PreparedPortfolio:
    return load_portfolio_dataset(PortfolioDataConfig.model_validate(_data_cfg(shared_data)))


@pytest.fixture(scope="module")
def coin_agent(coins: PreparedPortfolio, shared_data: Path) -> TrainedAgent:
    cfg = small_train_config(eval_every_steps=1024)
    return train_model(coins, cfg, ENV, experiment_config={"data": _data_cfg(shared_data)})


def test_train_model_trains_a_portfolio_and_validates_with_its_books(
    coin_agent: TrainedAgent, coins: PreparedPortfolio
) -> None:
    agent = coin_agent
    assert agent.portfolio is not None
    assert agent.is_portfolio
    assert agent.portfolio.symbols == ("ADA/BTC", "ETH/BTC", "LTC/BTC")
    assert len(agent.portfolio.normalisers) == 3  # per asset, fitted on train
    assert agent.portfolio.market_normaliser is not None
    assert isinstance(agent.env_config, PortfolioEnvConfig)
    # validations every 1,024 steps + the final one, scored on the rollout's metrics
    assert [h["step"] for h in agent.history] == [1024, 2048]
    for key in ("sharpe", "total_return", "max_drawdown", "turnover", "fees_frac"):
        assert np.isfinite(agent.history[-1][key])
    assert agent.info["best_score"] == max(h["score"] for h in agent.history)
    # per-asset provenance
    info = agent.data_info
    assert info["kind"] == "portfolio"
    assert [a["symbol"] for a in info["assets"]] == list(agent.portfolio.symbols)
    assert all(a["source"].endswith("-5m.feather") for a in info["assets"])
    assert len({a["data_fingerprint"] for a in info["assets"]}) == 3
    assert info["data_fingerprint"] == coins.data_fingerprint
    # the spaces a bundle rebuilds its model on are the env's own
    env = PortfolioEnv(coins.train, agent.env_config)
    obs_space, act_space = portfolio_spaces(agent.env_config, agent.portfolio, coins.full.n_features)
    assert obs_space == env.observation_space
    assert act_space == env.action_space


def test_portfolio_bundle_round_trips_as_plain_data_and_rebuilds_its_own_data(
    coin_agent: TrainedAgent, coins: PreparedPortfolio, shared_data: Path, tmp_path: Path
) -> None:
    path = save_model(coin_agent, tmp_path / "bundle")
    record = json.loads((path / PORTFOLIO_FILE).read_text())
    assert record["symbols"] == ["ADA/BTC", "ETH/BTC", "LTC/BTC"]
    assert len(record["normalisers"]) == 3
    assert json.loads((path / "manifest.json").read_text())["kind"] == "portfolio"
    from coinrl.experiments.live_cmd import _load_bundle

    with pytest.raises(ConfigError, match="one-market bundles only"):
        _load_bundle(path)  # live/paper trading refuses it before touching an exchange
    loaded = load_model(path)
    assert loaded.portfolio is not None
    assert loaded.portfolio.fingerprint() == coin_agent.portfolio.fingerprint()  # type: ignore[union-attr]
    obs = np.random.default_rng(0).normal(size=(5, *coin_agent.model.observation_space.shape))  # type: ignore[misc]
    np.testing.assert_array_equal(loaded.predict(obs), coin_agent.predict(obs))
    # the data rebuilt from the bundle alone: same features (the bundle's normalisers, not a refit)
    again = portfolio_data_for(loaded)
    np.testing.assert_array_equal(again.full.features, coins.full.features)
    np.testing.assert_array_equal(again.full.market_features, coins.full.market_features)
    assert again.full.meta["data_matches_agent"] is True
    # another split of the same candles: the normalisers stay the agent's (a refit on the new
    # train rows would change every feature value)
    other = portfolio_data_for(loaded, _data_cfg(shared_data, split={"train": 0.4, "validation": 0.3, "test": 0.3}))
    np.testing.assert_array_equal(other.full.features, coins.full.features)
    assert len(other.train) < len(coins.train)
    refit = load_portfolio_dataset(PortfolioDataConfig.model_validate(
        _data_cfg(shared_data, split={"train": 0.4, "validation": 0.3, "test": 0.3})))
    assert not np.array_equal(refit.full.features, coins.full.features)
    # the same report on the rebuilt data as on the original
    a = evaluate_portfolio(loaded, again.test, split="test")
    b = evaluate_portfolio(coin_agent, coins.test, split="test")
    assert a["agent"] == b["agent"]
    assert {"cash", "equal_weight_hold", "crp_daily", "random_weights"} <= set(a["baselines"])
    assert a["baselines"]["cash"]["total_return"] == 0.0


def test_portfolio_data_for_refuses_other_assets_and_single_asset_agents(
    coin_agent: TrainedAgent, trained: TrainedAgent, shared_data: Path
) -> None:
    swapped = _data_cfg(shared_data)
    swapped["sources"] = list(reversed(swapped["sources"]))
    with pytest.raises(DataError, match=r"agent trades \['ADA/BTC', 'ETH/BTC', 'LTC/BTC'\]"):
        portfolio_data_for(coin_agent, swapped)
    with pytest.raises(ConfigError, match="needs a portfolio agent"):
        portfolio_data_for(trained)
    with pytest.raises(ConfigError, match="portfolio_data_for"):
        coin_agent.market_data(None)  # type: ignore[arg-type]
    from coinrl.agents.evaluate import evaluate_model

    with pytest.raises(ConfigError, match="evaluate_portfolio"):
        evaluate_model(coin_agent, None)  # type: ignore[arg-type]


def test_dqn_and_recurrent_ppo_on_a_portfolio_are_config_errors(coins: PreparedPortfolio) -> None:
    cfg = small_train_config(algo="dqn", total_timesteps=64)
    with pytest.raises(ConfigError, match="MultiDiscrete"):
        train_model(coins, cfg, ENV.model_copy(update={"action": "discrete"}))
    with pytest.raises(ConfigError, match="recurrent_ppo is not supported for portfolios"):
        train_model(coins, small_train_config(algo="recurrent_ppo", total_timesteps=64), ENV)


@pytest.mark.parametrize(("algo", "action"), [("a2c", "discrete"), ("sac", "continuous")])
def test_a2c_and_sac_train_a_portfolio_and_round_trip(algo: str, action: str, tmp_path: Path) -> None:
    from coinrl.pipeline.portfolio import prepare_portfolio
    from coinrl.pipeline.synthetic_assets import correlated_assets

    prepared = prepare_portfolio(correlated_assets(2, 600, seed=3), spec={"features": [{"kind": "returns", "horizons": [1]}]})
    extra: dict[str, Any] = {"sac": {"learning_starts": 64, "batch_size": 32}} if algo == "sac" else {}
    cfg = small_train_config(algo=algo, total_timesteps=256, n_envs=4, eval_every_steps=128, **extra)
    env = PortfolioEnvConfig(window=4, episode_length_bars=64, action=action)  # type: ignore[arg-type]
    agent = train_model(prepared, cfg, env)
    assert agent.history, "no validation ran"
    loaded = load_model(save_model(agent, tmp_path / "b"))
    obs = np.zeros((3, *agent.model.observation_space.shape), dtype=np.float32)  # type: ignore[misc]
    np.testing.assert_array_equal(loaded.predict(obs), agent.predict(obs))
    assert loaded.predict(obs).shape == (3, 2)


def test_a_portfolio_checkpoint_resumes_only_on_the_same_assets_and_normalisers(tmp_path: Path) -> None:
    from coinrl.pipeline.portfolio import prepare_portfolio
    from coinrl.pipeline.synthetic_assets import correlated_assets

    spec = {"features": [{"kind": "returns", "horizons": [1]}]}
    prepared = prepare_portfolio(correlated_assets(2, 600, seed=3), spec=spec)
    env = PortfolioEnvConfig(window=4, episode_length_bars=64)
    cfg = small_train_config(total_timesteps=512, n_envs=4, checkpoint_every_steps=256)
    train_model(prepared, cfg, env, out_dir=tmp_path / "run")
    more = cfg.model_copy(update={"total_timesteps": 1024})
    resumed = train_model(prepared, more, env, out_dir=tmp_path / "run", resume=True)
    assert resumed.info["resumed_from"] is not None
    assert resumed.info["num_timesteps"] == 1024
    pooled = prepare_portfolio(correlated_assets(2, 600, seed=3), spec=spec, norm_scope="pooled")
    with pytest.raises(ConfigError, match="normaliser_fingerprint"):
        train_model(pooled, more, env, out_dir=tmp_path / "run", resume=True)
