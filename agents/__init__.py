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
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coinrl.agents' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
