"""Fixtures of the agents tests: a small planted-pattern market and a briefly trained agent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coinrl.agents.agent import TrainedAgent
from coinrl.agents.config import TrainConfig
from coinrl.agents.train import train_model
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.splits import PreparedData, prepare_data_for_model
from coinrl.pipeline.synthetic import planted_pattern

SIGNAL_SPEC: dict[str, Any] = {
    "features": [
        {"kind": "column", "name": "signal"},
        {"kind": "returns", "horizons": [1, 4]},
    ]
}

SMALL_ENV = EnvConfig(window=8, episode_length_bars=256)


def small_train_config(**overrides: Any) -> TrainConfig:
    """A few-seconds PPO config: 8 envs, rollouts of 512 steps."""
    base: dict[str, Any] = {
        "total_timesteps": 2048,
        "n_envs": 8,
        "seed": 0,
        "ppo": {"n_steps": 64, "batch_size": 256, "n_epochs": 2},
        "eval_every_steps": 0,
        "checkpoint_every_steps": 0,
        "early_stopping_patience": None,
    }
    base.update(overrides)
    return TrainConfig.model_validate(base)


@pytest.fixture(scope="session")
def planted() -> PreparedData:
    """3,000 hourly bars with a planted signal, features ``signal, ret_log_1, ret_log_4``."""
    return prepare_data_for_model(planted_pattern(3000, seed=7), spec=SIGNAL_SPEC)


@pytest.fixture(scope="session")
def trained(planted: PreparedData) -> TrainedAgent:
    """A PPO agent trained for 2,048 steps with one validation (reused read-only)."""
    cfg = small_train_config(eval_every_steps=1024)
    return train_model(planted, cfg, SMALL_ENV)


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B in offline mode with its files under a temp folder."""
    d = tmp_path / "wandb_home"
    d.mkdir()
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(d))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(d / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(d / "cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(d / "data"))
    return d


@pytest.fixture
def small_env() -> EnvConfig:
    """Window 8, episodes of 256 bars, default costs (0.1 % taker fee, 1 bp slippage)."""
    return SMALL_ENV


@pytest.fixture
def train_config() -> Callable[..., TrainConfig]:
    """:func:`small_train_config` (keyword overrides on top)."""
    return small_train_config


@pytest.fixture
def signal_policy(planted: PreparedData) -> Callable[[np.ndarray], np.ndarray]:
    """``obs -> action`` for ``SMALL_ENV``: long (2) when the newest ``signal`` > 0, else short (0).

    The box observation is ``window`` rows of features (oldest first) then 4 account values;
    ``signal`` is feature 0, so the newest one is at ``(window - 1) * n_features``.
    """
    col = (SMALL_ENV.window - 1) * planted.train.n_features

    def act(obs: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(obs)[:, col] > 0, 2, 0).astype(np.int64)

    return act
