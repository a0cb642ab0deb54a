"""``TradingVectorEnv``: N independent trading episodes stepped together on ``(N, ...)`` arrays.

The same books (:class:`~coinrl.envs.books.Books`), execution rules, rewards and timing as
:class:`~coinrl.envs.trading_env.TradingEnv` (read its module docstring for the exact timing),
without N Python env objects: one step is one call of the compiled kernel
(:func:`coinrl.envs.single_kernel.vec_step`, A = 1 of the portfolio kernel) over the N envs (books, reward, observation and info for
each), the per-account code TradingEnv runs, plus a few numpy calls on arrays of shape ``(N,)``.

- Episodes differ by start bar and, given a list of MarketData, by market: the markets are
  concatenated once into one float32 feature matrix and one float64 bar table shared by all N
  envs; each env keeps its market, current row and last row.
- Seeding follows Gymnasium's vector convention: ``reset(seed=s)`` seeds env ``i`` with ``s + i``
  (one ``numpy.random.Generator`` per env, made like ``Env.np_random``), so env ``i`` draws
  exactly what ``TradingEnv.reset(seed=s + i)`` draws, and given the same actions the two give
  bit-identical observations, rewards, flags and infos (tested).
- Autoreset: :attr:`AutoresetMode.NEXT_STEP` (Gymnasium 1.x default). The step after an env
  terminates or truncates ignores its action, resets it (drawing a new start with its own
  generator) and returns its first observation with reward 0 and both flags False.
- ``info`` holds arrays ``ts_ms``, ``equity_quote``, ``position_base``, ``fees_paid_quote``
  (and Gymnasium's ``_key`` masks, all True).

Observations are written by the kernel straight into preallocated memory: with ``copy=False``
one set of buffers, returned every step (overwritten by the next); by default (``copy=True``) a
fresh slab of a preallocated block each step, never written again, so the caller owns it
without a copy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from coinrl.pipeline.dataset import MarketData

from . import kernel
from . import single_kernel as sk
from .actions import ActionMap
from .books import Books
from .config import env_config_from
from .data import market_list
from .trading_env import EQUITY_FLOOR_FRAC, N_ACCOUNT_FEATURES, MarketArrays, build_spaces

if TYPE_CHECKING:
    import pandas as pd

    from .config import EnvConfig

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]

INFO_KEYS = ("ts_ms", "equity_quote", "position_base", "fees_paid_quote")
OBS_BLOCK_BYTES = 256 << 10
"""Largest block of observation slabs (copy=True): the memory being written stays in cache, and a
slab above this size is a block of its own (malloc hands back the one the caller just freed)."""



def reseed(rngs: list[np.random.Generator], seed: int | Sequence[int | None] | None) -> None:
    """Reseed each env's generator in place, Gymnasium's vector convention: an int ``s`` seeds
    env i with ``s + i``, a sequence gives one seed per env (``None`` keeps that env's), and
    ``None`` changes nothing.

    Raises:
        ValueError: a sequence whose length is not the number of envs.
    """
    if seed is None:
        return
    n = len(rngs)
    seeds = [int(seed) + i for i in range(n)] if isinstance(seed, (int, np.integer)) else list(seed)
    if len(seeds) != n:
        raise ValueError(f"expected {n} seeds, got {len(seeds)}")
    for i, s in enumerate(seeds):
        if s is not None:
            rngs[i] = seeding.np_random(s)[0]

class TradingVectorEnv(VectorEnv[Any, Any, Any]):
    """N trading episodes on shared data, stepped together by one compiled call.

    Args:
        num_envs: number of episodes N.
        data: as for TradingEnv: MarketData, a sequence of MarketData (each episode draws its
            market), a candle DataFrame, a path, or None for the packaged sample.
        config: :class:`~coinrl.envs.config.EnvConfig` or mapping; ``**overrides`` on top.
        render_mode: not supported for the vector env (None).
        autoreset_mode: ``NEXT_STEP`` (default, Gymnasium 1.x) or ``SAME_STEP`` (reset inside the
            step that ends an episode; its last observation and info go to ``infos["final_obs"]``
            and ``infos["final_info"]``, as in ``SyncVectorEnv``).
        copy: return new observation arrays each step (Gymnasium's default, as
            ``SyncVectorEnv(copy=True)``); ``False`` returns the env's own preallocated buffers,
            overwritten by the next step (fastest; copy what you keep).

    Example:
        >>> import gymnasium as gym, coinrl.envs  # doctest: +SKIP
        >>> envs = gym.make_vec("coinrl/Trading-v0", num_envs=256,
        ...                     vectorization_mode="vector_entry_point")  # doctest: +SKIP
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        data: MarketData | Sequence[MarketData] | pd.DataFrame | str | Path | None = None,
        config: EnvConfig | Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        copy: bool = True,
        **overrides: Any,
    ) -> None:
        mode = AutoresetMode(autoreset_mode) if not isinstance(autoreset_mode, AutoresetMode) else autoreset_mode
        if mode is AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode must be NEXT_STEP or SAME_STEP; DISABLED is not supported")
        self.autoreset_mode = mode
        if render_mode is not None:
            raise ValueError("TradingVectorEnv does not render; render a TradingEnv instead")
        n = int(num_envs)
        if n < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        cfg = env_config_from(config, **overrides)
        self.config = cfg
        self.num_envs = n
        self.render_mode = None
        self.metadata = {**type(self).metadata, "autoreset_mode": mode}
        markets = [MarketArrays(md) for md in market_list(data)]
        self.markets = markets
        self.n_features = nf = markets[0].md.n_features
        w = cfg.window
        self._w = w
        self._wf = w * nf
        # ---- shared data: one feature matrix, one bar table (open, high, low, close, volume, funding)
        lens = [m.n_bars for m in markets]
        self._offsets = np.cumsum([0, *lens[:-1]]).astype(np.int64)
        if len(markets) == 1:
            feats = markets[0].features
            self._feats_flat = markets[0].features_flat
            self._bars = markets[0].bars
        else:
            own = np.concatenate([m.features for m in markets], axis=0)
            self._feats_flat = own.reshape(-1)  # the kernel's (writeable) view; never written
            feats = own.view()
            feats.flags.writeable = False
            self._bars = np.concatenate([m.bars for m in markets], axis=0)
        self.features = feats
        self._ts = np.concatenate([m.ts_ms for m in markets])
        ranges = [m.start_range(w, cfg.episode_length_bars) for m in markets]
        self._ranges = ranges
        self._ep_len = cfg.episode_length_bars
        # ---- spaces
        single_obs, single_act = build_spaces(cfg, nf)
        self.single_observation_space = single_obs
        self.single_action_space = single_act
        self.observation_space = batch_space(single_obs, n)
        self.action_space = batch_space(single_act, n)
        self.action_map = ActionMap.from_env_config(cfg, markets[0].md.symbol)
        # ---- per-env state
        self.books = Books(n, cfg)
        self._state = self.books.state
        self._box = cfg.obs_mode == "box"
        # Box: window and account features in one row; Dict: a window block and an account block
        self._params, self._pa = sk.make_params(
            cfg, n_features=nf, acct_col=self._wf if self._box else 0,
            eq_floor_quote=cfg.initial_cash_quote * EQUITY_FLOOR_FRAC,
        )
        self._kernel = sk.compiled()
        self._market = np.zeros(n, dtype=np.int64)
        self._start = np.zeros(n, dtype=np.int64)
        self._t = np.zeros(n, dtype=np.int64)
        self._last = np.zeros(n, dtype=np.int64)
        self._rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(n)]
        self._autoreset: BoolArr = np.zeros(n, dtype=bool)
        self._any_autoreset = False
        self._delay = cfg.delay_bars
        self._pending = np.zeros((max(cfg.delay_bars - 1, 1), n))
        self._head = 0
        self._none_fresh = np.zeros(n, dtype=bool)
        self._done = np.zeros(n, dtype=bool)
        # ---- observation buffers
        self._copy = bool(copy)
        # with copy=True each step's observations are a fresh slab of a block (no extra copy)
        self._slabs = max(1, min(16, OBS_BLOCK_BYTES // (n * (self._wf + N_ACCOUNT_FEATURES) * 4))) if copy else 1
        self._slab = self._slabs
        self._next_buffers()
        self._info_mask = np.ones(n, dtype=bool)
        self._info_mask.flags.writeable = False
        self._started = False

    # ------------------------------------------------------------------ episodes
    def _draw_episodes(self, idx: npt.NDArray[np.intp], options: Mapping[str, Any] | None = None) -> None:
        """Draw market and start for envs ``idx`` with their own generators; fresh books."""
        opts = options or {}
        n_markets = len(self.markets)
        for i in idx.tolist():
            rng = self._rngs[i]
            if "market_index" in opts:
                k = int(opts["market_index"])
                if not 0 <= k < n_markets:
                    raise ValueError(f"market_index {k} out of range [0, {n_markets})")
            else:
                k = int(rng.integers(n_markets)) if n_markets > 1 else 0
            lo, hi = self._ranges[k]
            if "start_index" in opts:
                s = int(opts["start_index"])
                if not lo <= s <= hi:
                    raise ValueError(f"start_index {s} out of range [{lo}, {hi}]")
            elif self._ep_len is None:
                s = lo
            else:
                s = int(rng.integers(lo, hi, endpoint=True))
            off = int(self._offsets[k])
            self._market[i] = k
            self._start[i] = off + s
            self._last[i] = off + s + (self._ep_len if self._ep_len is not None else self.markets[k].n_bars - self._w)
        self._fresh(idx)

    def _fresh(self, idx: npt.NDArray[np.intp]) -> None:
        """Put envs ``idx`` at their start row with initial books, reward state and queue."""
        self._t[idx] = self._start[idx]
        self.books.reset(idx, self._bars[self._start[idx], 0, 3])
        kernel.reset_reward_state(self._state, idx, self._params)
        self._pending[:, idx] = 0.0

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset all envs (or those in ``options["reset_mask"]``).

        Args:
            seed: int ``s`` seeds env ``i`` with ``s + i``; a list gives one seed per env; None
                keeps the generators (seeded from entropy at first use).
            options: ``reset_mask`` (bool array: reset only those envs), ``start_index``,
                ``market_index`` (as for TradingEnv, applied to every env reset).

        Returns:
            ``(observations, infos)``.
        """
        n = self.num_envs
        reseed(self._rngs, seed)
        opts = dict(options or {})
        mask = opts.pop("reset_mask", None)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != (n,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({n},)")
            idx = np.flatnonzero(mask)
        else:
            idx = np.arange(n)
        self._draw_episodes(idx, opts)
        self._autoreset[idx] = False
        self._any_autoreset = bool(self._autoreset.any())
        self._started = True
        return self._observe(), self._infos()

    # ------------------------------------------------------------------ step
    def _targets(self, actions: Any) -> F64:
        """The N target exposures of ``actions`` by the env's ActionMap (the one map)."""
        a = np.asarray(actions)
        n = self.num_envs
        if a.size != n:
            raise ValueError(f"expected {n} actions (one per env), got shape {a.shape}")
        return self.action_map.weights_batch(a.reshape(n, 1)).reshape(n)

    def step(self, actions: Any) -> tuple[Any, F64, BoolArr, BoolArr, dict[str, Any]]:
        """Step all N episodes one bar (see TradingEnv for the timing).

        Returns:
            ``(observations, rewards, terminations, truncations, infos)``, arrays over N.
        """
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset(seed=...) first")
        targets = self._targets(actions)
        auto_idx = None
        if self._any_autoreset:  # NEXT_STEP: envs that ended last step restart now
            auto_idx = np.flatnonzero(self._autoreset)
            self._draw_episodes(auto_idx)
        if self._delay > 1:
            pend = self._pending
            h = self._head
            nxt = pend[h].copy()
            pend[h] = targets
            self._head = (h + 1) % pend.shape[0]
            targets = nxt
            if auto_idx is not None:
                pend[:, auto_idx] = 0.0  # a restarting env's action is ignored, not queued
        n = self.num_envs
        rewards = np.empty(n)
        terminated = np.empty(n, dtype=bool)
        truncated = np.empty(n, dtype=bool)
        infos = self._new_infos()
        if self._copy:
            self._next_buffers()
        same_step = self.autoreset_mode is AutoresetMode.SAME_STEP
        # NEXT_STEP: the restarted envs are this step's fresh ones and the ended ones the next
        fresh = self._autoreset if auto_idx is not None else self._none_fresh
        done = self._done if same_step else self._autoreset
        n_done = self._kernel.vec_step(
            self._state, self._params, self._pa, self._bars, self._feats_flat, self._ts, self._t, self._last,
            targets, fresh, done, self.books.liquidated, self._kmkt, self._kacct, rewards,
            terminated, truncated, infos["ts_ms"], infos["equity_quote"], infos["position_base"],
            infos["fees_paid_quote"],
        )
        if same_step:
            if n_done:
                return self._finish_same_step(rewards, terminated, truncated, infos)
        else:
            self._any_autoreset = n_done > 0
        return self._obs_out(), rewards, terminated, truncated, infos

    def _finish_same_step(
        self, rewards: F64, terminated: BoolArr, truncated: BoolArr, infos: dict[str, Any]
    ) -> tuple[Any, F64, BoolArr, BoolArr, dict[str, Any]]:
        done = terminated | truncated
        idx = np.flatnonzero(done)
        final_obs = np.full(self.num_envs, None, dtype=object)
        final_info = np.full(self.num_envs, None, dtype=object)
        for i in idx.tolist():
            if self._box:
                final_obs[i] = self._obs[i].copy()
            else:
                final_obs[i] = {"market": self._mkt[i].copy(), "account": self._acct[i].copy()}
            final_info[i] = {k: infos[k][i] for k in INFO_KEYS}
        self._draw_episodes(idx)
        obs = self._observe()
        infos = self._infos()
        infos["final_obs"] = final_obs
        infos["_final_obs"] = done
        infos["final_info"] = final_info
        infos["_final_info"] = done
        return obs, rewards, terminated, truncated, infos

    # ------------------------------------------------------------------ observation and info
    def _next_buffers(self) -> None:
        """Point the observation buffers at fresh memory (copy=True) or keep the one set."""
        if not self._copy and hasattr(self, "_kmkt"):
            return
        n, k = self.num_envs, self._slab
        if k == self._slabs:  # a new block; the old one lives while its observations do
            shape = (self._slabs, n, self._wf + N_ACCOUNT_FEATURES) if self._box else (self._slabs, n, self._w, self.n_features)
            self._block = np.empty(shape, dtype=np.float32)
            if not self._box:
                self._acct_block = np.empty((self._slabs, n, N_ACCOUNT_FEATURES), dtype=np.float32)
            k = 0
        self._slab = k + 1
        # the kernel writes windows into _kmkt and account features into _kacct (at acct_col)
        if self._box:
            self._obs = self._kmkt = self._kacct = self._block[k]
            self._acct = self._obs[:, self._wf :]
        else:
            self._mkt = self._block[k]
            self._kmkt = self._mkt.reshape(n, self._wf)
            self._acct = self._kacct = self._acct_block[k]

    def _obs_out(self) -> Any:
        return self._obs if self._box else {"market": self._mkt, "account": self._acct}

    def _observe(self) -> Any:
        """Observations of every env at its current decision row (after a reset)."""
        if self._copy:
            self._next_buffers()
        self._kernel.observe(self._state, self._params, self._bars, self._feats_flat, self._t,
                             self._kmkt, self._kacct, 0)
        return self._obs_out()

    def _new_infos(self) -> dict[str, Any]:
        """Fresh info arrays for the kernel to fill."""
        n, m = self.num_envs, self._info_mask
        return {
            "ts_ms": np.empty(n, dtype=np.int64),
            "equity_quote": np.empty(n),
            "position_base": np.empty(n),
            "fees_paid_quote": np.empty(n),
            "_ts_ms": m,
            "_equity_quote": m,
            "_position_base": m,
            "_fees_paid_quote": m,
        }

    def _infos(self) -> dict[str, Any]:
        books = self.books
        m = self._info_mask
        return {
            "ts_ms": self._ts[self._t],
            "equity_quote": books.equity_quote.copy(),
            "position_base": books.position_base.copy(),
            "fees_paid_quote": books.fees_paid_quote.copy(),
            "_ts_ms": m,
            "_equity_quote": m,
            "_position_base": m,
            "_fees_paid_quote": m,
        }

    # ------------------------------------------------------------------ introspection
    @property
    def t(self) -> I64:
        """Current decision row of each env within its own market."""
        return self._t - self._offsets[self._market]

    def close_extras(self, **kwargs: Any) -> None:
        """Nothing to release (no subprocesses, no figures)."""
