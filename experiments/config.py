"""``ExperimentConfig``: one YAML composing every stage's config.

::

    name: ppo_btc_1h
    seed: 0
    data: {...}       # coinrl.pipeline.source.DataConfig
    env: {...}        # coinrl.envs.config.EnvConfig
    train: {...}      # coinrl.agents.config.TrainConfig
    tracking: {...}   # coinrl.agents.config.TrackingConfig
    tune: {...}       # optional: coinrl.agents.tune_space.TuneConfig (search space, study)

The same object feeds the CLI, the W&B run config and the model bundle (whose ``config.yaml``
is this model dumped, secrets scrubbed), so a run can be reproduced from its bundle alone.
Load it with :func:`load_experiment_config`, which applies ``key.path=value`` overrides and
reports bad keys and values with their dotted path as a
:class:`~coinrl.pipeline.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from coinrl.agents.config import TrackingConfig, TrainConfig
from coinrl.agents.tune_space import TuneConfig, space_problems
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.config import FrozenModel, apply_overrides, load_yaml, validate_config
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.source import DataConfig


class ExperimentConfig(FrozenModel):
    """A whole experiment: data, env, training and tracking.

    Attributes:
        name: run name (folder name under the output directory, W&B run name).
        seed: the experiment seed; ``train.seed`` falls back to it.
        data: where candles come from and how they become features and splits.
        env: execution, costs, account and reward of the trading env.
        train: algorithm, budget, evaluation and checkpoints.
        tracking: Weights & Biases settings.
        tune: optional Optuna study over this config (``coinrl tune``): a search space of
            dotted paths into ``data``/``env``/``train``, checked against these fields at load.
    """

    name: str = Field(default="experiment", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tune: TuneConfig | None = None

    @model_validator(mode="after")
    def _algo_fits_actions(self) -> ExperimentConfig:
        if self.train.algo == "dqn" and self.env.action != "discrete":
            raise ValueError(
                "train.algo=dqn needs env.action=discrete (DQN picks one of env.positions)"
            )
        if self.train.algo == "sac" and self.env.action != "continuous":
            raise ValueError("train.algo=sac needs env.action=continuous (SAC outputs a number)")
        return self

    @model_validator(mode="after")
    def _space_fits_config(self) -> ExperimentConfig:
        if self.tune is not None:
            problems = space_problems(self.tune.space, type(self))
            if problems:
                raise ValueError("invalid search space:\n    " + "\n    ".join(problems))
        return self

    @property
    def resolved_train(self) -> TrainConfig:
        """``train`` with its seed filled in from the experiment seed when unset."""
        return self.train.with_seed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data (every default spelled out; no ``tune`` key when it is unset)."""
        return self.model_dump(mode="json", exclude={"tune"} if self.tune is None else None)

    def to_yaml(self) -> str:
        """YAML text that :func:`load_experiment_config` reads back to an equal config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def experiment_config_from(data: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
    """Validate a mapping into an :class:`ExperimentConfig` (ConfigError with field paths)."""
    return validate_config(ExperimentConfig, data, source=source)


def load_experiment_config(
    path: str | Path, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """Load an experiment YAML and apply ``key.path=value`` overrides.

    Args:
        path: the YAML file (an ``experiments/configs/*.yaml`` or a bundle's ``config.yaml``).
        overrides: e.g. ``["train.total_timesteps=50000", "env.taker_fee_rate=0.0005"]``;
            values are parsed as YAML scalars.

    Returns:
        The validated config.

    Raises:
        ConfigError: missing or empty file, bad YAML, an unknown key or an out-of-range value
            (the message names the dotted field path).

    Example:
        >>> cfg = load_experiment_config("experiments/configs/ppo_btc_1h.yaml",
        ...                              ["train.total_timesteps=10000"])  # doctest: +SKIP
    """
    raw = load_yaml(path)
    if not raw:
        raise ConfigError(
            f"{path} is empty; an experiment needs at least its data and training sections "
            "(copy experiments/configs/ppo_btc_1h.yaml and edit it; every key is listed with its "
            "default in docs/CONFIG.md)"
        )
    data = apply_overrides(raw, list(overrides))
    src = str(path) + (f" with overrides {list(overrides)}" if overrides else "")
    return experiment_config_from(data, source=src)


__all__ = ["ExperimentConfig", "experiment_config_from", "load_experiment_config"]
