"""The experiment config the tuner receives, typed: :class:`TunableConfig` and the helpers that
turn it into trial configs and a study key.

``agents`` cannot import ``experiments`` (the stages import one way), so the tuner does not
name ``ExperimentConfig``; it names what it reads of it. Any frozen pydantic model with these
sections satisfies the protocol (``ExperimentConfig`` does, and mypy checks it where
``coinrl tune`` passes one).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol, Self, TypeGuard, TypeVar

from pydantic import BaseModel, ValidationError

from coinrl.envs.config import EnvConfig
from coinrl.pipeline.config import format_validation_error
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.source import DataConfig

from ..config import TrackingConfig, TrainConfig
from ..metrics import json_safe
from ..tune_space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    TuneConfig,
    apply_params,
    space_fingerprint,
)

MEMORY = ":memory:"
TRIALS_DIR = "trials"
BEST_DIR = "best"
RESULT_FILE = "tune_result.json"
TEST_ATTR = "coinrl_test_evaluation"
KEY_ATTR = "coinrl_study_key"
CONFIG_ATTR = "coinrl_config"


class TunableConfig(Protocol):
    """What the tuner reads of an experiment config (``ExperimentConfig`` satisfies it).

    Attributes:
        name: the experiment name (the default study name).
        seed: the experiment seed (the sampler's seed unless ``tune.seed`` is set).
        data, env, train, tracking: the sections every trial changes and trains with.
        tune: the study's search space and settings (None: the config cannot be tuned).
    """

    @property
    def name(self) -> str: ...

    @property
    def seed(self) -> int: ...

    @property
    def data(self) -> DataConfig: ...

    @property
    def env(self) -> EnvConfig: ...

    @property
    def train(self) -> TrainConfig: ...

    @property
    def tracking(self) -> TrackingConfig: ...

    @property
    def tune(self) -> TuneConfig | None: ...

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]: ...

    @classmethod
    def model_validate(cls, obj: Any) -> Self: ...


C = TypeVar("C", bound=TunableConfig)


def _problem(config: object) -> str | None:
    """What makes ``config`` unusable by the tuner (None: nothing)."""
    if not isinstance(config, BaseModel):
        return f"{type(config).__name__} is not a pydantic config model"
    checks = (
        ("data", DataConfig),
        ("env", EnvConfig),
        ("train", TrainConfig),
        ("tracking", TrackingConfig),
    )
    for attr, cls in checks:
        if not isinstance(getattr(config, attr, None), cls):
            return f"config.{attr} must be a {cls.__name__}"
    if not isinstance(getattr(config, "name", None), str):
        return "config.name must be a str"
    if not isinstance(getattr(config, "seed", None), int):
        return "config.seed must be an int"
    if not isinstance(getattr(config, "tune", None), TuneConfig | None):
        return "config.tune must be a TuneConfig or None"
    return None


def _is_tunable(config: object) -> TypeGuard[TunableConfig]:
    return _problem(config) is None


def check_config(config: object) -> TunableConfig:
    """``config`` itself once it is known to be an experiment config the tuner can read.

    The static type already says what is needed; this catches untyped callers (a notebook
    passing a dict or a partial model) before any study is opened, and types a config a
    worker process re-validated from its job file.

    Raises:
        ConfigError: ``config`` is not a pydantic model or a section has the wrong type.
    """
    if not _is_tunable(config):
        raise ConfigError(
            f"{_problem(config)}; pass an ExperimentConfig (load_experiment_config(path)) "
            "with name, seed, data, env, train, tracking and tune"
        )
    return config


def tune_of(config: TunableConfig) -> TuneConfig:
    """The ``tune`` section of ``config``.

    Raises:
        ConfigError: the config has none.
    """
    check_config(config)
    if config.tune is None:
        raise ConfigError(
            "the experiment config has no tune: section; add one with a search space "
            "(see experiments/configs/tune_ppo_btc_1h.yaml)"
        )
    return config.tune


def base_config_dict(config: TunableConfig) -> dict[str, Any]:
    """The experiment config as plain data without its ``tune`` section (what trials change)."""
    data = dict(config.model_dump(mode="json"))
    data.pop("tune", None)
    return data


def trial_config(config: C, params: Mapping[str, Any]) -> C:
    """The experiment config of one trial: the base config with ``params`` set, re-validated
    by the config's own model (so its cross-section checks run for every trial).

    Raises:
        ConfigError: the combination is invalid (e.g. a PPO batch larger than its rollout).
    """
    data = apply_params(base_config_dict(config), params)
    try:
        return type(config).model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, "trial parameters " + _short(params))) from e


def _short(params: Mapping[str, Any]) -> str:
    text = json.dumps(json_safe(dict(params)), sort_keys=True, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


def params_from_trial(
    space: Mapping[str, FloatParam | IntParam | CategoricalParam], optuna_params: Mapping[str, Any]
) -> dict[str, Any]:
    """Config values of a finished trial's Optuna parameters (categorical labels -> values)."""
    out: dict[str, Any] = {}
    for path, p in space.items():
        if path not in optuna_params:
            raise ConfigError(
                f"the stored trial has no parameter {path!r}; the study was run with another "
                "search space (use another study name)"
            )
        v = optuna_params[path]
        out[path] = p.value_of(v) if isinstance(p, CategoricalParam) else v
    return out


def study_key(config: TunableConfig) -> str:
    """sha256 of what defines a trial's meaning: data, env, train, seed, space and folds.

    A stored study with another key was run on a different problem;
    :func:`~coinrl.agents.tune.open_study` refuses to mix them.
    """
    base = base_config_dict(config)
    tune = tune_of(config)
    payload = {
        "data": base.get("data"),
        "env": base.get("env"),
        "train": base.get("train"),
        "seed": base.get("seed"),
        "space": space_fingerprint(tune.space),
        "folds": tune.folds,
        "fold_mode": tune.fold_mode,
    }
    canon = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def public_config(config: TunableConfig) -> dict[str, Any]:
    """The config as stored on the study: secrets scrubbed, no storage URL (it may hold a
    database password)."""
    from ..redact import scrub_secrets

    data = dict(config.model_dump(mode="json"))
    tune = dict(data.get("tune") or {})
    tune.pop("storage", None)
    data["tune"] = tune
    return dict(scrub_secrets(data))
