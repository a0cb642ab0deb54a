"""Stable-Baselines3 adapter: the batched trading env as an SB3 ``VecEnv``, no N Python envs.

SB3's VecEnv contract (what ``DummyVecEnv`` does, here on arrays):

- ``reset()`` returns the batched observation; seeds set with ``seed(s)`` apply to that reset
  (env ``i`` gets ``s + i``), then are forgotten.
- ``step_async(actions)`` / ``step_wait()`` returns ``(obs, rewards float32, dones, infos)``. An
  env whose episode ended is reset inside that same step: ``obs[i]`` is already its new first
  observation, ``infos[i]["terminal_observation"]`` is the last observation of the finished
  episode and ``infos[i]["TimeLimit.truncated"]`` says it ran out of data rather than ended
  (liquidation). ``infos[i]["episode"] = {"r", "l", "t"}`` is reported like SB3's ``Monitor``
  (so ``evaluate_policy`` and the ``rollout/ep_rew_mean`` logs work), and every info carries
  ``ts_ms``, ``equity_quote``, ``position_base`` and ``fees_paid_quote``.
- Observations are returned as fresh arrays (SB3 keeps the previous one while stepping).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from coinrl.pipeline.dataset import MarketData

from .vector import INFO_KEYS, TradingVectorEnv

if TYPE_CHECKING:
    import pandas as pd

    from .config import EnvConfig


class TradingSB3VecEnv(VecEnv):
    """SB3 ``VecEnv`` over :class:`~coinrl.envs.vector.TradingVectorEnv` (SAME_STEP autoreset).

    Args:
        num_envs: number of episodes N.
        data: market data as for :class:`~coinrl.envs.trading_env.TradingEnv`.
        config: :class:`~coinrl.envs.config.EnvConfig` or mapping; ``**overrides`` on top.

    Example:
        >>> from stable_baselines3 import PPO  # doctest: +SKIP
        >>> venv = TradingSB3VecEnv(num_envs=64, window=24)  # doctest: +SKIP
        >>> PPO("MlpPolicy", venv).learn(100_000)  # doctest: +SKIP
    """

    def __init__(
        self,
        num_envs: int = 8,
        data: MarketData | Sequence[MarketData] | pd.DataFrame | str | Path | None = None,
        config: EnvConfig | Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> None:
        self.venv = TradingVectorEnv(
            num_envs, data, config, autoreset_mode=AutoresetMode.SAME_STEP, copy=False, **overrides
        )
        self.render_mode = None
        super().__init__(num_envs, self.venv.single_observation_space, self.venv.single_action_space)
        self._actions: npt.NDArray[Any] | None = None
        self._ep_return = np.zeros(num_envs)
        self._ep_len = np.zeros(num_envs, dtype=np.int64)
        self._t0 = time.perf_counter()

    @property
    def config(self) -> EnvConfig:
        """The env config shared by all N episodes."""
        return self.venv.config

    def _copy_obs(self, obs: Any) -> VecEnvObs:
        if isinstance(obs, dict):
            return {k: np.array(v, copy=True) for k, v in obs.items()}
        return np.array(obs, copy=True)

    def reset(self) -> VecEnvObs:
        """Reset every episode (with the seeds and options set since the last reset)."""
        seeds = None if all(s is None for s in self._seeds) else list(self._seeds)
        opts = self._options[0] if self._options and self._options[0] else None
        obs, infos = self.venv.reset(seed=seeds, options=opts)
        self._reset_seeds()
        self._reset_options()
        self._ep_return[:] = 0.0
        self._ep_len[:] = 0
        self.reset_infos = [{k: infos[k][i] for k in INFO_KEYS} for i in range(self.num_envs)]
        return self._copy_obs(obs)

    def step_async(self, actions: np.ndarray) -> None:
        """Remember the actions for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every episode; reset the finished ones in the same step (SB3 semantics)."""
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async(); call step() instead")
        obs, rewards, terminated, truncated, infos = self.venv.step(self._actions)
        self._actions = None
        self._ep_return += rewards
        self._ep_len += 1
        dones = terminated | truncated
        ts, eq, pos, fees = (infos[k] for k in INFO_KEYS)
        out_infos: list[dict[str, Any]] = [
            {"ts_ms": ts[i], "equity_quote": eq[i], "position_base": pos[i], "fees_paid_quote": fees[i]}
            for i in range(self.num_envs)
        ]
        if dones.any():
            final_obs = infos["final_obs"]
            final_info = infos["final_info"]
            elapsed = round(time.perf_counter() - self._t0, 6)
            for i in np.flatnonzero(dones).tolist():
                d = out_infos[i]
                d.update(final_info[i])  # the finished episode's last books, not the new start's
                d["terminal_observation"] = final_obs[i]
                d["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
                d["episode"] = {"r": float(self._ep_return[i]), "l": int(self._ep_len[i]), "t": elapsed}
                self._ep_return[i] = 0.0
                self._ep_len[i] = 0
        return self._copy_obs(obs), rewards.astype(np.float32), dones, out_infos

    def close(self) -> None:
        """Close the underlying vector env."""
        self.venv.close()

    # ------------------------------------------------------------------ attribute plumbing
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        return list(self._get_indices(indices))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute of the (shared) vector env, once per index."""
        if attr_name == "render_mode":
            return [None for _ in self._indices(indices)]
        value = getattr(self.venv, attr_name)
        return [value for _ in self._indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on the shared vector env (affects all N episodes)."""
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        """Call a method of the shared vector env once, reported for each index."""
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """True for ``Monitor``: the adapter reports Monitor's ``episode`` infos itself."""
        wrapped = issubclass(wrapper_class, Monitor)
        return [wrapped for _ in self._indices(indices)]

    def get_images(self) -> Sequence[np.ndarray | None]:
        """No rendering in the batched env."""
        return [None for _ in range(self.num_envs)]


class PortfolioSB3VecEnv(TradingSB3VecEnv):
    """SB3 ``VecEnv`` over :class:`~coinrl.envs.portfolio_vector.PortfolioVectorEnv`
    (SAME_STEP autoreset), with the same contract as :class:`TradingSB3VecEnv`;
    ``infos[i]["position_base"]`` is the (A,) vector of positions.

    Args:
        num_envs: number of episodes N.
        data, config, **overrides: as for :class:`~coinrl.envs.portfolio_env.PortfolioEnv`.
    """

    def __init__(
        self, num_envs: int = 8, data: Any = None, config: Any = None, **overrides: Any
    ) -> None:
        from .portfolio_vector import PortfolioVectorEnv

        self.venv = PortfolioVectorEnv(  # type: ignore[assignment]
            num_envs, data, config, autoreset_mode=AutoresetMode.SAME_STEP, copy=False, **overrides
        )
        self.render_mode = None
        VecEnv.__init__(self, num_envs, self.venv.single_observation_space, self.venv.single_action_space)
        self._actions = None
        self._ep_return = np.zeros(num_envs)
        self._ep_len = np.zeros(num_envs, dtype=np.int64)
        self._t0 = time.perf_counter()
