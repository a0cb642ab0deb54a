"""``ExperimentConfig``: one YAML composing every stage's config.

::

    name: ppo_btc_1h
    seed: 0
    data: {...}       # coinrl.pipeline.source.DataConfig
    env: {...}        # coinrl.envs.config.EnvConfig
    train: {...}      # coinrl.agents.config.TrainConfig
    tracking: {...}   # coinrl.agents.config.TrackingConfig
    tune: {...}       # optional: coinrl.agents.tune_space.TuneConfig (search space, study)

A ``data:`` section with a ``sources:`` or ``symbols:`` key makes the experiment a portfolio
(:class:`PortfolioExperimentConfig`): ``data`` is then a
:class:`~coinrl.pipeline.source.PortfolioDataConfig` and ``env`` a
:class:`~coinrl.envs.config.PortfolioEnvConfig` (one account over the A assets).

The same object feeds the CLI, the W&B run config and the model bundle (whose ``config.yaml``
is this model dumped, secrets scrubbed), so a run can be reproduced from its bundle alone.
Load it with :func:`load_experiment_config`, which applies ``key.path=value`` overrides and
reports bad keys and values with their dotted path as a
:class:`~coinrl.pipeline.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ModelWrapValidatorHandler, model_validator

from coinrl.agents.config import TrackingConfig, TrainConfig
from coinrl.agents.tune_space import TuneConfig, space_problems
from coinrl.envs.config import EnvConfig, PortfolioEnvConfig
from coinrl.pipeline.config import FrozenModel, apply_overrides, load_yaml, validate_config
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.source import DataConfig, PortfolioDataConfig

PORTFOLIO_DATA_KEYS = ("sources", "symbols")
"""``data:`` keys that make an experiment a portfolio."""


def is_portfolio_input(data: Any) -> bool:
    """Whether an experiment mapping (or its ``data`` section) describes a portfolio: its
    ``data`` has a ``sources`` or ``symbols`` key, or is a :class:`PortfolioDataConfig`."""
    section = data.get("data") if isinstance(data, Mapping) else data
    if isinstance(section, PortfolioDataConfig):
        return True
    return isinstance(section, Mapping) and any(k in section for k in PORTFOLIO_DATA_KEYS)


def _portfolio_only_keys(data: Mapping[str, Any]) -> list[str]:
    """Dotted keys of ``data``/``env`` that only a portfolio experiment has."""
    found = []
    for section, single, multi in (("data", DataConfig, PortfolioDataConfig),
                                   ("env", EnvConfig, PortfolioEnvConfig)):
        given = data.get(section)
        if isinstance(given, Mapping):
            only = set(multi.model_fields) - set(single.model_fields)
            found += [f"{section}.{k}" for k in given if k in only]
    return found


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

    @model_validator(mode="wrap")
    @classmethod
    def _portfolio_when_asked(
        cls, data: Any, handler: ModelWrapValidatorHandler[ExperimentConfig]
    ) -> ExperimentConfig:
        """A mapping whose ``data`` names ``sources``/``symbols`` validates as a portfolio."""
        if cls is ExperimentConfig and isinstance(data, Mapping):
            if isinstance(data.get("data"), PortfolioDataConfig):
                raise ValueError(
                    "data is a PortfolioDataConfig: build a PortfolioExperimentConfig (or pass "
                    "plain mappings to experiment_config_from) for a portfolio experiment"
                )
            if is_portfolio_input(data):
                return PortfolioExperimentConfig.model_validate(data)
            stray = _portfolio_only_keys(data)
            if stray:
                raise ValueError(
                    f"{', '.join(stray)} are portfolio keys, but data has no sources or symbols; "
                    "list the assets in data.sources (files) or data.symbols (stored symbols), "
                    "or remove those keys"
                )
        return handler(data)

    @property
    def is_portfolio(self) -> bool:
        """Whether this experiment trades a portfolio (:class:`PortfolioExperimentConfig`)."""
        return False

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


class PortfolioExperimentConfig(ExperimentConfig):
    """An experiment over one account trading A assets (``data`` names ``sources``/``symbols``).

    Attributes:
        data: the assets' sources or stored symbols, one clock, per-asset features, and
            per-asset or pooled normalisers fitted on train.
        env: one cross-margined account over the assets: target weights in a gross/net
            budget (``continuous``, the default) or one of ``positions`` per asset
            (``discrete``, ``MultiDiscrete``).
    """

    data: PortfolioDataConfig = Field(default_factory=PortfolioDataConfig)
    env: PortfolioEnvConfig = Field(default_factory=PortfolioEnvConfig)

    @property
    def is_portfolio(self) -> bool:
        """Always True."""
        return True

    @model_validator(mode="after")
    def _algo_fits_portfolio(self) -> PortfolioExperimentConfig:
        if self.train.algo == "dqn":
            raise ValueError(
                "train.algo=dqn cannot trade a portfolio: a discrete portfolio action is "
                "MultiDiscrete (one position per asset), which DQN does not support; use ppo or "
                "a2c (env.action=discrete or continuous) or sac (env.action=continuous)"
            )
        if self.train.algo == "recurrent_ppo":
            raise ValueError(
                "train.algo=recurrent_ppo is not supported for portfolios yet (its validation "
                "rollout needs the LSTM state); use ppo, a2c or sac"
            )
        return self


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


__all__ = [
    "PORTFOLIO_DATA_KEYS",
    "ExperimentConfig",
    "PortfolioExperimentConfig",
    "experiment_config_from",
    "is_portfolio_input",
    "load_experiment_config",
]
