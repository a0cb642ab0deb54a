"""coinrl.agents: train, evaluate, save and load SB3 trading agents.

Modules (one job each):

- :mod:`.config`: ``TrainConfig`` (algorithm, budget, evaluation, checkpoints) and
  ``TrackingConfig`` (W&B).
- :mod:`.train`: :func:`train_model` on the batched env, with validation, best model, early
  stopping, checkpoints and resume.
- :mod:`.rollout`: the one simulation path (a policy or fixed actions over a whole split,
  through the env's books).
- :mod:`.evaluate`: :func:`evaluate_model`, agent metrics beside the baselines.
- :mod:`.baselines`: buy-and-hold, flat and a turnover-matched random policy.
- :mod:`.metrics`: trading metrics on equity curves (pure numpy).
- :mod:`.bundle`: :func:`save_model` / :func:`load_model` (verified, reproducible bundles).
- :mod:`.tracking`: the one metrics sink (SB3 logger → logging, CSV, W&B) and the W&B run.
- :mod:`.backtest`: :func:`simulate_trading_strategy`, :func:`evaluate_strategy_performance`.
- :mod:`.plots` / :mod:`.report` / :mod:`.tearsheet`: :func:`plot_backtest_results`,
  :func:`save_backtest_results` (the report folder and its quant tear sheet).
- :mod:`.tune`: :func:`optimize_parameters` (Optuna).
- :mod:`.portfolio_rollout` / :mod:`.portfolio_backtest`: :func:`rollout_portfolio` and
  :func:`simulate_portfolio_strategy` (one account over A assets: baselines, attribution,
  report).

The seed's functions of this stage are all importable from here: ``train_model``,
``evaluate_model``, ``save_model``, ``load_model``, ``simulate_trading_strategy``,
``evaluate_strategy_performance``, ``optimize_parameters``, ``plot_backtest_results``,
``save_backtest_results``.

The names below are imported lazily (``from coinrl.agents import train_model``), so importing
the package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "config",
    "TrackingConfig": "config",
    "TrainedAgent": "agent",
    "train_model": "train",
    "evaluate_model": "evaluate",
    "EvaluationReport": "evaluate",
    "save_model": "bundle",
    "load_model": "bundle",
    "rollout_policy": "rollout",
    "simulate_actions": "rollout",
    "run_baselines": "baselines",
    "trading_metrics": "metrics",
    "Tracker": "tracking",
    "directional_quality": "evaluate",
    "simulate_trading_strategy": "backtest",
    "evaluate_strategy_performance": "backtest",
    "BacktestResult": "backtest",
    "optimize_parameters": "tune",
    "plot_backtest_results": "plots",
    "save_backtest_results": "report",
    "load_backtest_results": "report",
    "rollout_portfolio": "portfolio_rollout",
    "simulate_portfolio_strategy": "portfolio_backtest",
}

SEED_FUNCTIONS = (
    "train_model",
    "evaluate_model",
    "save_model",
    "load_model",
    "simulate_trading_strategy",
    "evaluate_strategy_performance",
    "optimize_parameters",
    "plot_backtest_results",
    "save_backtest_results",
)
"""The seed's public functions of the agents stage (each importable from this package)."""

__all__ = sorted(_EXPORTS)


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coinrl.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
