"""Portfolio agents: what :func:`~coinrl.agents.train.train_model` needs to train one account over
A assets, and the one way to rebuild a portfolio agent's data.

* :func:`portfolio_target`: the training env (:class:`~coinrl.envs.sb3.PortfolioSB3VecEnv` on the
  training split), the validation run (the deterministic policy over the whole validation
  split through :func:`~coinrl.agents.portfolio_rollout.rollout_portfolio`, the same books as
  every backtest) and the agent's data fields (feature spec, every fitted normaliser as a
  :class:`~coinrl.agents.agent.PortfolioSpec`, per-asset provenance).
* :func:`portfolio_data_for`: a trained (or loaded) portfolio agent's data on any split, built
  from candles with the agent's OWN feature spec and normalisers (never refitted). Backtests,
  evaluation and the CLI call this, so an agent always sees the observations it was trained on.
* :func:`portfolio_spaces`: the observation and action spaces of a portfolio agent, which a
  bundle rebuilds its model on without any data.
* :func:`evaluate_portfolio`: the agent beside the portfolio baselines on one split, same books
  and costs (what ``coinrl train`` and ``coinrl evaluate`` report for a portfolio).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from coinrl.envs.actions import ActionMap
from coinrl.envs.config import EnvConfig, PortfolioEnvConfig, portfolio_config_from
from coinrl.pipeline.config import validate_config
from coinrl.pipeline.dataset import PortfolioData
from coinrl.pipeline.errors import ConfigError, DataError
from coinrl.pipeline.portfolio import PreparedPortfolio
from coinrl.pipeline.source import PortfolioDataConfig, load_portfolio_dataset

from .agent import PortfolioSpec, TrainedAgent, portfolio_data_info
from .metrics import json_safe
from .train import TrainTarget

if TYPE_CHECKING:
    from gymnasium import spaces
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test", "full")


def make_portfolio_vec_env(data: PortfolioData, env_config: PortfolioEnvConfig, n_envs: int) -> VecEnv:
    """The SB3 VecEnv over the batched portfolio env (``n_envs`` episodes on ``data``)."""
    from coinrl.envs.sb3 import PortfolioSB3VecEnv

    return PortfolioSB3VecEnv(num_envs=n_envs, data=data, config=env_config)


def portfolio_target(
    prepared: PreparedPortfolio, env_config: PortfolioEnvConfig | EnvConfig | Mapping[str, Any] | None
) -> TrainTarget:
    """What :func:`~coinrl.agents.train.train_model` trains a portfolio on (see module doc).

    Raises:
        ConfigError: an invalid portfolio env config.
    """
    from .portfolio_rollout import rollout_portfolio

    env = portfolio_config_from(env_config)
    spec = PortfolioSpec.of(prepared)

    def evaluate(model: BaseAlgorithm, validation: PortfolioData) -> tuple[dict[str, float], float]:
        ro = rollout_portfolio(validation, env, policy=model, deterministic=True)
        return ro.metrics(), float(ro.rewards.sum())

    return TrainTarget(
        env=env,
        make_venv=lambda n: make_portfolio_vec_env(prepared.train, env, n),
        validation=prepared.validation,
        evaluate=evaluate,
        data_ids={"data_fingerprint": prepared.data_fingerprint,
                  "normaliser_fingerprint": spec.fingerprint()},
        label=f"symbols={','.join(prepared.full.symbols)}",
        train_rows=len(prepared.train),
        agent_fields={
            "feature_spec": prepared.spec,
            "normaliser": prepared.normalisers[0],
            "data_info": portfolio_data_info(prepared),
            "portfolio": spec,
        },
    )


def portfolio_spaces(
    env_config: PortfolioEnvConfig, spec: PortfolioSpec, n_features: int
) -> tuple[spaces.Box, spaces.Space[Any]]:
    """Observation and action spaces of a portfolio agent, without data.

    The observation is :class:`~coinrl.envs.portfolio_env.PortfolioEnv`'s: ``window`` rows of
    ``A * F + G`` features, then ``A`` weights and 4 account features (the last two in [0, 1]);
    ``tests/agents/test_train_portfolio.py`` checks these equal the env's own spaces.
    """
    from gymnasium import spaces as gspaces

    a, g = len(spec.symbols), len(spec.market_feature_names)
    n = env_config.window * (a * n_features + g) + a + 2
    big = float(np.finfo(np.float32).max)
    lo = np.concatenate([np.full(n, -big), [0.0, 0.0]]).astype(np.float32)
    hi = np.concatenate([np.full(n, big), [1.0, 1.0]]).astype(np.float32)
    obs = gspaces.Box(lo, hi, dtype=np.float32)
    return obs, ActionMap.from_config(env_config, spec.symbols).space()


def _data_config(agent: TrainedAgent, data_config: PortfolioDataConfig | Mapping[str, Any] | None) -> PortfolioDataConfig:
    if isinstance(data_config, PortfolioDataConfig):
        return data_config
    raw = data_config if data_config is not None else agent.experiment_config.get("data")
    if raw is None:
        raise ConfigError(
            "this portfolio agent's config has no data section (it was trained without an "
            "experiment config); pass data_config= with the assets' sources"
        )
    if isinstance(raw, Mapping) and not any(k in raw for k in ("sources", "symbols")):
        raise ConfigError("data_config names no sources or symbols; list the portfolio's assets")
    return validate_config(PortfolioDataConfig, raw, source="portfolio data config")


def portfolio_data_for(
    agent: TrainedAgent, data_config: PortfolioDataConfig | Mapping[str, Any] | None = None
) -> PreparedPortfolio:
    """A portfolio agent's data on every split, with the agent's own feature spec and normalisers.

    The candles come from ``data_config`` (default: the agent's own ``data:`` section); the
    features are the agent's spec, the normalisers the ones fitted when it was trained (never
    refitted), the split and cleaning ``data_config``'s. ``full.meta["data_matches_agent"]``
    says whether the candles hash to the ones the agent was trained on.

    Args:
        agent: a portfolio agent (from training or :func:`~coinrl.agents.bundle.load_model`).
        data_config: a :class:`~coinrl.pipeline.source.PortfolioDataConfig` (or mapping) naming
            the same assets, e.g. newer files of them; its ``features``, ``norm_scope`` and
            ``market_features`` are ignored (the agent's are used).

    Returns:
        The :class:`~coinrl.pipeline.portfolio.PreparedPortfolio`; its ``normalisers`` are
        the agent's.

    Raises:
        ConfigError: not a portfolio agent, or no data config to read.
        DataError: the candles hold other assets (or another order) than the agent's, or
            cannot be read.
    """
    pf = agent.portfolio
    if pf is None:
        raise ConfigError(
            "portfolio_data_for needs a portfolio agent; this one trades one market "
            f"({agent.data_info.get('symbol')}): use agent.market_data or load_dataset"
        )
    cfg = _data_config(agent, data_config).model_copy(update={
        "norm_scope": pf.norm_scope, "market_features": bool(pf.market_feature_names),
    })
    prepared = load_portfolio_dataset(
        cfg, spec=agent.feature_spec, normalisers=pf.normalisers,
        market_normaliser=pf.market_normaliser,
    )
    got = prepared.full.symbols
    if got != pf.symbols:
        raise DataError(
            f"the data holds assets {list(got)} but the agent trades {list(pf.symbols)} (in that "
            "order); list the same assets, in the same order, in data.sources/symbols"
        )
    matches = prepared.data_fingerprint == agent.data_info.get("data_fingerprint")
    if not matches:
        logger.info("portfolio data differs from the agent's training candles (symbols=%s); "
                    "the splits may cover other bars", ",".join(got))
    for part in (prepared.full, prepared.train, prepared.validation, prepared.test):
        part.meta["data_matches_agent"] = matches
    return prepared


def split_of(prepared: PreparedPortfolio, split: str) -> PortfolioData:
    """One split of prepared portfolio data by name.

    Raises:
        ConfigError: a name other than train, validation, test or full.
    """
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    part: PortfolioData = getattr(prepared, split)
    return part


def evaluate_portfolio(
    agent: TrainedAgent, data: PortfolioData, *, split: str = "validation", n_random: int = 5, seed: int = 0
) -> dict[str, Any]:
    """The agent's deterministic policy beside the portfolio baselines on one split (cash,
    1/N held, constant-rebalanced 1/N daily and weekly, each asset held, turnover-matched random
    weights: :func:`~coinrl.agents.portfolio_baselines.play_portfolio_baselines`), all through
    the agent's env config (same books and costs).

    Returns:
        JSON-safe ``{"split", "symbols", "agent": metrics, "baselines": {name: metrics},
        "meta"}``.

    Raises:
        ConfigError: not a portfolio agent.
        DataError: a split too short for the window.
    """
    from .portfolio_baselines import play_portfolio_baselines
    from .portfolio_rollout import rollout_portfolio

    if agent.portfolio is None:
        raise ConfigError("evaluate_portfolio needs a portfolio agent; use evaluate_model for one market")
    env = portfolio_config_from(agent.env_config)
    ro = rollout_portfolio(data, env, policy=agent.model, deterministic=True)
    base = play_portfolio_baselines(data, env, agent=ro, n_random=n_random, seed=seed)
    return dict(json_safe({
        "split": split,
        "symbols": list(data.symbols),
        "agent": ro.metrics(),
        "baselines": base.metrics,
        "meta": {k: v for k, v in data.meta.items() if isinstance(v, str | int | float | bool)},
    }))


__all__ = [
    "evaluate_portfolio",
    "make_portfolio_vec_env",
    "portfolio_data_for",
    "portfolio_spaces",
    "portfolio_target",
    "split_of",
]
