"""The SB3 algorithms coinrl trains, by name, and how a :class:`TrainConfig` builds one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from coinrl.pipeline.errors import ConfigError

from .config import TrainConfig

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv


def algo_class(algo: str) -> type[BaseAlgorithm]:
    """The SB3 class of ``algo`` (``ppo``, ``dqn``, ``a2c``, ``sac``, ``recurrent_ppo``).

    Raises:
        ConfigError: an unknown name, or ``recurrent_ppo`` without ``sb3-contrib`` installed.
    """
    import stable_baselines3 as sb3

    classes: dict[str, type[BaseAlgorithm]] = {
        "ppo": sb3.PPO,
        "dqn": sb3.DQN,
        "a2c": sb3.A2C,
        "sac": sb3.SAC,
    }
    if algo in classes:
        return classes[algo]
    if algo == "recurrent_ppo":
        try:
            from sb3_contrib import RecurrentPPO
        except ImportError as e:
            raise ConfigError(
                "train.algo=recurrent_ppo needs the optional package sb3-contrib; "
                "pip install sb3-contrib, or pick ppo/dqn/a2c/sac"
            ) from e
        return RecurrentPPO
    raise ConfigError(f"train.algo={algo!r} is not one of ppo, dqn, a2c, sac, recurrent_ppo")


def policy_name(config: TrainConfig, dict_obs: bool) -> str:
    """SB3 policy name for the algorithm and observation kind."""
    if config.algo == "recurrent_ppo":
        return "MultiInputLstmPolicy" if dict_obs else "MlpLstmPolicy"
    return "MultiInputPolicy" if dict_obs else "MlpPolicy"


def policy_kwargs(config: TrainConfig) -> dict[str, Any]:
    """``policy_kwargs`` (network sizes, activation) for the SB3 constructor."""
    import torch.nn as nn

    act = nn.Tanh if config.activation == "tanh" else nn.ReLU
    arch = list(config.net_arch)
    out: dict[str, Any] = {"activation_fn": act}
    if config.algo in ("ppo", "a2c", "recurrent_ppo"):
        out["net_arch"] = {"pi": arch, "vf": arch}
    elif config.algo == "sac":
        out["net_arch"] = {"pi": arch, "qf": arch}
    else:
        out["net_arch"] = arch
    if config.algo == "recurrent_ppo":
        out["lstm_hidden_size"] = config.recurrent_ppo.lstm_hidden_size
    return out


def make_algorithm(config: TrainConfig, env: VecEnv, seed: int) -> BaseAlgorithm:
    """A fresh SB3 algorithm for ``config`` on ``env``, seeded with ``seed``.

    Raises:
        ConfigError: the algorithm does not fit the env's action space.
    """
    from gymnasium import spaces

    discrete = isinstance(env.action_space, spaces.Discrete)
    if config.algo == "dqn" and isinstance(env.action_space, spaces.MultiDiscrete):
        raise ConfigError(
            "train.algo=dqn cannot trade a portfolio: its discrete action is MultiDiscrete (one "
            "position per asset), which DQN does not support; use ppo or a2c"
        )
    if config.algo == "sac" and isinstance(env.action_space, spaces.MultiDiscrete):
        raise ConfigError("train.algo=sac needs a continuous action space; set env.action=continuous")
    if config.algo == "dqn" and not discrete:
        raise ConfigError("train.algo=dqn needs a discrete action space; set env.action=discrete")
    if config.algo == "sac" and discrete:
        raise ConfigError("train.algo=sac needs a continuous action space; set env.action=continuous")
    cls = algo_class(config.algo)
    dict_obs = isinstance(env.observation_space, spaces.Dict)
    return cls(
        policy_name(config, dict_obs),
        env,
        seed=seed,
        device=config.device,
        policy_kwargs=policy_kwargs(config),
        verbose=0,
        **config.algo_kwargs(),
    )


__all__ = ["algo_class", "make_algorithm", "policy_kwargs", "policy_name"]
