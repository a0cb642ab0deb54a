"""``PortfolioVectorEnv``: N portfolio episodes stepped together, one kernel call per step.

The same data, config, action map and kernel code as :class:`~coinrl.envs.portfolio_env.PortfolioEnv`
(:func:`coinrl.envs.portfolio_kernel.pf_vec_step` runs the per-account code the single env runs),
so env ``i`` reset with seed ``s + i`` and given the same actions gives bit-identical
observations, rewards, flags and infos to ``PortfolioEnv.reset(seed=s + i)`` (tested).

Autoreset: ``NEXT_STEP`` (Gymnasium's default: the step after an episode ends ignores that
env's action and returns its first observation, reward 0) or ``SAME_STEP`` (the SB3 adapter:
the ended env restarts in the same step; ``final_obs``/``final_info`` hold its last ones).
``info``: arrays ``ts_ms`` (N,), ``equity_quote`` (N,), ``position_base`` (N, A), ``weights``
(N, A, at the closes), ``fees_paid_quote`` (N,).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from . import kernel
from . import portfolio_kernel as pk
from .config import EnvConfig, PortfolioEnvConfig
from .portfolio_env import portfolio_setup
from .vector import reseed

F64 = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]

INFO_KEYS = ("ts_ms", "equity_quote", "position_base", "fees_paid_quote")


class PortfolioVectorEnv(VectorEnv[Any, Any, Any]):
    """N independent portfolio episodes on ``(N, ...)`` arrays (see module doc).

    Args:
        num_envs: N.
        data, config, **overrides: as for :class:`~coinrl.envs.portfolio_env.PortfolioEnv`.
        autoreset_mode: ``NEXT_STEP`` (default) or ``SAME_STEP``.
        copy: True (default): every step returns a fresh observation array (the caller may keep
            it). False: one buffer, overwritten by the next step (no allocation: at N = 256,
            A = 16, window 24 the observations are 7.9 MB per step, and a fresh allocation of
            that size costs page faults every step); the SB3 adapter copies what it keeps.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 8,
        data: Any = None,
        config: PortfolioEnvConfig | EnvConfig | Mapping[str, Any] | None = None,
        *,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        **overrides: Any,
    ) -> None:
        mode = AutoresetMode(autoreset_mode)
        if mode is AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode must be NEXT_STEP or SAME_STEP")
        if render_mode is not None:
            raise ValueError("PortfolioVectorEnv does not render")
        n = int(num_envs)
        if n < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        cfg, m, amap, params, pa, obs_space = portfolio_setup(data, config, overrides)
        self.config = cfg
        self.arrays = m
        self.action_map = amap
        self.symbols = m.pd.symbols
        self.n_assets = a = len(self.symbols)
        self.num_envs = n
        self.autoreset_mode = mode
        self.render_mode = None
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        self.single_observation_space = obs_space
        self.single_action_space = amap.space()
        self.observation_space = batch_space(obs_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self._params, self._pa = params, pa
        self._range = m.start_range(cfg.window, cfg.episode_length_bars)
        self._state = pk.new_state(n, a, cfg.initial_cash_quote)
        self._obs_dim = int(obs_space.shape[0])
        self._t = np.zeros(n, dtype=np.int64)
        self._last = np.zeros(n, dtype=np.int64)
        self._rngs = [seeding.np_random(None)[0] for _ in range(n)]
        self._autoreset = np.zeros(n, dtype=bool)
        self._none = np.zeros(n, dtype=bool)
        self._done = np.zeros(n, dtype=bool)
        self._liq = np.zeros(n, dtype=bool)
        self._kernel = pk.compiled()
        self._mask = np.ones(n, dtype=bool)
        self._mask.flags.writeable = False
        self._copy = bool(copy)
        self._buf = np.empty((n, self._obs_dim), dtype=np.float32)
        self._started = False

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_kernel"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._kernel = pk.compiled()

    # ------------------------------------------------------------------ episodes
    def _draw(self, idx: npt.NDArray[np.intp], options: Mapping[str, Any] | None = None) -> None:
        cfg = self.config
        lo, hi = self._range
        opts = options or {}
        for i in idx.tolist():
            if "start_index" in opts:
                s = int(opts["start_index"])
                if not lo <= s <= hi:
                    raise ValueError(f"start_index {s} out of range [{lo}, {hi}]")
            elif cfg.episode_length_bars is None:
                s = lo
            else:
                s = int(self._rngs[i].integers(lo, hi, endpoint=True))
            self._t[i] = s
            self._last[i] = s + (cfg.episode_length_bars if cfg.episode_length_bars is not None
                                 else self.arrays.n_bars - cfg.window)
        fresh = pk.new_state(len(idx), self.n_assets, cfg.initial_cash_quote)
        self._state[:, idx] = fresh
        for a in range(self.n_assets):
            self._state[pk.row(a, pk.A_MARK), idx] = self.arrays.bars[self._t[idx], a, pk.B_CLOSE]
        kernel.reset_reward_state(self._state, idx, self._params)

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset all envs (``seed`` s seeds env i with s + i; ``options["start_index"]``)."""
        n = self.num_envs
        reseed(self._rngs, seed)
        idx = np.arange(n)
        self._draw(idx, options)
        self._autoreset[:] = False
        self._started = True
        return self._observe(), self._infos()

    def _obs_buffer(self) -> npt.NDArray[np.float32]:
        if self._copy:
            return np.empty((self.num_envs, self._obs_dim), dtype=np.float32)
        return self._buf

    def _observe(self) -> Any:
        out = self._obs_buffer()
        self._kernel.pf_observe(self._state, self._params, self._pa, self.arrays.bars,
                                self.arrays.feats_flat, self._t, out, 0)
        return out

    def _infos(self) -> dict[str, Any]:
        s, m = self._state, self._mask
        qty = s[pk.N_ACCT_ROWS + pk.A_QTY :: pk.N_ASSET_ROWS].T.copy()
        eq = s[kernel.EQUITY].copy()
        close = self.arrays.bars[self._t, :, pk.B_CLOSE]
        return {
            "ts_ms": self.arrays.ts_ms[self._t],
            "equity_quote": eq,
            "position_base": qty,
            "weights": qty * close / np.maximum(eq, self._params[kernel.P_EQ_FLOOR])[:, None],
            "fees_paid_quote": s[kernel.FEES].copy(),
            **{f"_{k}": m for k in (*INFO_KEYS, "weights")},
        }

    # ------------------------------------------------------------------ step
    def step(self, actions: Any) -> tuple[Any, F64, BoolArr, BoolArr, dict[str, Any]]:
        """Step all N episodes one bar (timing as PortfolioEnv)."""
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset(seed=...) first")
        n = self.num_envs
        w = np.ascontiguousarray(self.action_map.weights_batch(actions))
        if w.shape[0] != n:
            raise ValueError(f"expected {n} actions, got {w.shape[0]}")
        auto = self._autoreset.any()
        if auto:
            self._draw(np.flatnonzero(self._autoreset))
        same_step = self.autoreset_mode is AutoresetMode.SAME_STEP
        fresh = self._autoreset if auto else self._none
        done = self._done if same_step else self._autoreset
        out = self._obs_buffer()
        rewards = np.empty(n)
        terminated = np.empty(n, dtype=bool)
        truncated = np.empty(n, dtype=bool)
        info_ts = np.empty(n, dtype=np.int64)
        info_eq = np.empty(n)
        info_q = np.empty((n, self.n_assets))
        info_w = np.empty((n, self.n_assets))
        info_fees = np.empty(n)
        n_done = self._kernel.pf_vec_step(
            self._state, self._params, self._pa, self.arrays.bars, self.arrays.feats_flat,
            self.arrays.ts_ms, self._t, self._last, w, fresh, done, self._liq, out, rewards,
            terminated, truncated, info_ts, info_eq, info_q, info_w, info_fees,
        )
        m = self._mask
        infos: dict[str, Any] = {"ts_ms": info_ts, "equity_quote": info_eq, "position_base": info_q,
                                 "weights": info_w, "fees_paid_quote": info_fees,
                                 **{f"_{k}": m for k in (*INFO_KEYS, "weights")}}
        if same_step and n_done:
            ended = terminated | truncated
            idx = np.flatnonzero(ended)
            final_obs = np.full(n, None, dtype=object)
            final_info = np.full(n, None, dtype=object)
            for i in idx.tolist():
                final_obs[i] = out[i].copy()
                final_info[i] = {k: infos[k][i] for k in INFO_KEYS}
            self._draw(idx)
            out = self._observe()
            infos = self._infos()
            infos.update({"final_obs": final_obs, "_final_obs": ended, "final_info": final_info,
                          "_final_info": ended})
        return out, rewards, terminated, truncated, infos

    @property
    def t(self) -> npt.NDArray[np.int64]:
        """Current decision row of each env."""
        return self._t

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release."""
