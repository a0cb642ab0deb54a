"""``PortfolioEnv``: one account trading A assets on one clock (Gymnasium).

Timing is :class:`~coinrl.envs.trading_env.TradingEnv`'s: the observation for decision ``t``
holds feature rows ``t - window + 1 .. t`` and the books marked at the closes of bar ``t``;
``step(action)`` turns the action into target weights (:class:`~coinrl.envs.actions.ActionMap`),
fills them at the opens of bar ``t + 1`` and marks at its closes, all in one call of the
portfolio kernel (:func:`coinrl.envs.portfolio_kernel.pf_env_step`: funding, gap liquidation,
the rebalance with sells first, wick liquidation, borrow, mark, reward, observation).

Observation (Box, float32): the window, each row ``[asset 0's F features, ..., asset A-1's,
G market-wide features]`` (oldest row first), then the A current (drifted) weights
``qty_a close_a / equity``, then 4 account features: cash / equity, gross exposure, margin
ratio (maintenance margin / equity) and distance to liquidation.

``info``: ``ts_ms``, ``equity_quote``, ``position_base`` (A,), ``weights`` (A,),
``fees_paid_quote``, ``scaled_rebalances`` (how many rebalances the account could not afford
in full and scaled down).

An asset whose ``tradable`` flag is False on a bar is not traded there (its target is
ignored); see :class:`~coinrl.pipeline.dataset.PortfolioData` for the price policy.
``copy.deepcopy(env)`` and pickling work (the compiled kernel is looked up again, never copied).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from coinrl.pipeline.dataset import PortfolioData
from coinrl.pipeline.errors import ConfigError, DataError

from . import kernel
from . import portfolio_kernel as pk
from .actions import ActionMap
from .config import EnvConfig, PortfolioEnvConfig, portfolio_config_from
from .data import portfolio_data_from
from .trading_env import EQUITY_FLOOR_FRAC, OBS_BLOCK_ROWS

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
_BAD_ACTION, _LIQUIDATED, _EQUITY, _FEES, _SCALED = (pk.BAD_ACTION, kernel.LIQUIDATED, kernel.EQUITY,
                                                      kernel.FEES, pk.SCALED)


class PortfolioArrays:
    """A portfolio's arrays prepared once for the kernel.

    Attributes:
        pd: the source PortfolioData.
        bars: float64 ``(T, A, 7)``: open, high, low, close, volume, funding, tradable.
        feats_flat: float32 ``(T * (A * F + G),)``: each row the assets' features then the
            market-wide ones. Writeable only because numba dispatches those faster: never write.
        row_width: ``A * F + G``.
        ts_ms: int64 open times.
    """

    def __init__(self, data: PortfolioData) -> None:
        self.pd = data
        t, a = len(data), data.n_assets
        self.n_bars = t
        bars = np.empty((t, a, pk.N_BAR_COLS))
        for k, col in enumerate((data.open, data.high, data.low, data.close, data.volume,
                                 data.funding_rate)):
            bars[:, :, k] = col
        bars[:, :, pk.B_TRADABLE] = data.tradable
        self.bars = bars
        rows = np.concatenate([data.features.reshape(t, -1), data.market_features], axis=1)
        self.row_width = int(rows.shape[1])
        self.feats_flat = np.ascontiguousarray(rows, dtype=np.float32).reshape(-1)
        if not np.isfinite(self.feats_flat).all():
            bad = int(np.flatnonzero(~np.isfinite(rows).all(axis=1))[0])
            raise DataError(f"portfolio features have NaN/inf at row {bad}; prepare them with "
                            "prepare_portfolio (untradable bars hold 0)")
        self.ts_ms = np.ascontiguousarray(data.ts_ms, dtype=np.int64)

    def start_range(self, window: int, episode_len: int | None) -> tuple[int, int]:
        """Inclusive range of first decision bars.

        Raises:
            DataError: too few bars for one episode.
        """
        lo = window - 1
        hi = self.n_bars - 1 - (episode_len if episode_len is not None else self.n_bars - window)
        if hi < lo or self.n_bars < window + 1:
            need = window + (episode_len if episode_len is not None else 1)
            raise DataError(f"the portfolio {','.join(self.pd.symbols)} has {self.n_bars} bars; "
                            f"window={window} and episode_length_bars={episode_len} need {need}")
        return lo, hi


def asset_params(config: PortfolioEnvConfig, symbols: tuple[str, ...]) -> F64:
    """The kernel's per-asset parameter matrix (A, N_PARAMS): the account's execution settings
    with each symbol's ``asset_costs`` overrides.

    Raises:
        ConfigError: an ``asset_costs`` key that is not one of the symbols.
    """
    unknown = sorted(set(config.asset_costs) - set(symbols))
    if unknown:
        raise ConfigError(f"asset_costs names {unknown}, not assets of this portfolio {list(symbols)}")
    rows = []
    for sym in symbols:
        over = config.asset_costs.get(sym)
        cfg: EnvConfig = config
        if over is not None:
            upd = {k: v for k, v in over.model_dump().items() if v is not None}
            cfg = EnvConfig.model_validate({**config.model_dump(include=set(EnvConfig.model_fields)), **upd})
        rows.append(kernel.make_params(cfg))
    return np.ascontiguousarray(np.stack(rows))


def portfolio_setup(
    data: Any, config: PortfolioEnvConfig | EnvConfig | Mapping[str, Any] | None, overrides: dict[str, Any]
) -> tuple[PortfolioEnvConfig, PortfolioArrays, ActionMap, F64, F64, spaces.Box]:
    """Config, arrays, action map, kernel params, per-asset params and the observation space
    shared by :class:`PortfolioEnv` and the vector env."""
    cfg = portfolio_config_from(config, **overrides)
    arrays = PortfolioArrays(portfolio_data_from(data))
    symbols = arrays.pd.symbols
    amap = ActionMap.from_config(cfg, symbols)
    w, rw, a = cfg.window, arrays.row_width, len(symbols)
    params = kernel.make_params(cfg, n_features=rw, acct_col=w * rw,
                                eq_floor_quote=cfg.initial_cash_quote * EQUITY_FLOOR_FRAC)
    big = float(np.finfo(np.float32).max)
    lo = np.concatenate([np.full(w * rw + a + 2, -big), [0.0, 0.0]]).astype(np.float32)
    hi = np.concatenate([np.full(w * rw + a + 2, big), [1.0, 1.0]]).astype(np.float32)
    obs_space = spaces.Box(lo, hi, dtype=np.float32)
    return cfg, arrays, amap, params, asset_params(cfg, symbols), obs_space


class PortfolioEnv(gym.Env[Any, Any]):
    """One cross-margined account over A assets (see module doc).

    Args:
        data: PortfolioData, a PreparedPortfolio (its train part), MarketData on one clock, or
            None for the synthetic 4-asset default.
        config: :class:`~coinrl.envs.config.PortfolioEnvConfig` or a mapping of its fields.
        **overrides: config fields on top (``gym.make("coinrl/Portfolio-v0", window=8)``).

    Raises:
        ConfigError: invalid config fields. DataError: unusable data.

    Example:
        >>> import gymnasium as gym, coinrl.envs  # doctest: +SKIP
        >>> env = gym.make("coinrl/Portfolio-v0", window=24)  # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        data: Any = None,
        config: PortfolioEnvConfig | EnvConfig | Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        if render_mode is not None:
            raise ValueError("PortfolioEnv does not render yet; pass render_mode=None")
        self.render_mode = None
        cfg, m, amap, params, pa, obs_space = portfolio_setup(data, config, overrides)
        self.config = cfg
        self.arrays = m
        self.action_map = amap
        self.symbols = m.pd.symbols
        self.n_assets = len(self.symbols)
        self.observation_space = obs_space
        self.action_space = amap.space()
        self._params = params
        self._pa = pa
        self._range = m.start_range(cfg.window, cfg.episode_length_bars)
        self._state = pk.new_state(1, self.n_assets, cfg.initial_cash_quote)
        self._obs_dim = int(obs_space.shape[0])
        self._kernel = pk.compiled()
        self._project = cfg.action == "continuous"
        # at most ~4 MB per block (a 64-asset window is 123 KB per observation)
        self._block_rows = max(8, min(OBS_BLOCK_ROWS, (4 << 20) // (4 * self._obs_dim)))
        self._views()
        self._new_block()
        self._t = -1
        self._last = -1

    def _views(self) -> None:
        """Python-float views of the state and the open times (fast item access)."""
        self._cells: Any = memoryview(self._state.reshape(-1))  # type: ignore[arg-type]
        self._ts: Any = memoryview(self.arrays.ts_ms)  # type: ignore[arg-type]

    def __getstate__(self) -> dict[str, Any]:
        drop = ("_kernel", "_rows", "_qty_rows", "_w_rows", "_cells", "_ts", "_ctx", "_fast")
        return {k: v for k, v in self.__dict__.items() if k not in drop}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._kernel = pk.compiled()
        self._views()
        self._row_views()

    def _new_block(self) -> None:
        # each observation (and each info array) is its own row of a block, never written again
        # (Gymnasium's contract: the caller may keep them), without a per-step allocation
        self._block = np.empty((self._block_rows, self._obs_dim), dtype=np.float32)
        self._iblock = np.empty((self._block_rows, 2 * self.n_assets))
        self._row_views()
        self._row = 0

    def _row_views(self) -> None:
        """Row views of the blocks, and the kernel's context (the arrays' addresses: rebuilt
        with every block, and on a copy, whose arrays live elsewhere)."""
        a = self.n_assets
        self._rows = list(self._block)
        self._qty_rows = list(self._iblock[:, :a])
        self._w_rows = list(self._iblock[:, a:])
        m = self.arrays
        am = self.action_map
        self._amap_vec = np.array([am.gross, am.net, 1.0 if am.allow_short else 0.0])
        self._scratch = np.empty((4, a))
        self._ctx = pk.context(self._state, self._params, self._pa, m.bars, m.feats_flat,
                               self._block, self._iblock, self._amap_vec, self._scratch)
        # everything step() reads, in one attribute load (attribute loads dominate a Python step)
        fast_at = self._kernel.pf_env_step_at if self._project else None
        self._fast = (fast_at, self._ctx, self._rows, self._qty_rows, self._w_rows, self._cells,
                      self._ts)

    def _next_row(self) -> int:
        if self._row == self._block_rows:
            self._new_block()
        i = self._row
        self._row = i + 1
        return i

    def _info(self, t: int) -> dict[str, Any]:
        s = self._state
        qty = s[pk.N_ACCT_ROWS + pk.A_QTY :: pk.N_ASSET_ROWS, 0].copy()
        eq = float(s[kernel.EQUITY, 0])
        close = self.arrays.bars[t, :, pk.B_CLOSE]
        return {
            "ts_ms": int(self.arrays.ts_ms[t]),
            "equity_quote": eq,
            "position_base": qty,
            "weights": qty * close / max(eq, self._params[kernel.P_EQ_FLOOR]),
            "fees_paid_quote": float(s[kernel.FEES, 0]),
            "scaled_rebalances": int(s[pk.SCALED, 0]),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode at a random decision bar (``options={"start_index": i}`` forces it)."""
        super().reset(seed=seed)
        cfg = self.config
        lo, hi = self._range
        opts = options or {}
        if "start_index" in opts:
            s = int(opts["start_index"])
            if not lo <= s <= hi:
                raise ValueError(f"start_index {s} out of range [{lo}, {hi}] for this data and config")
        elif cfg.episode_length_bars is None:
            s = lo
        else:
            s = int(self.np_random.integers(lo, hi, endpoint=True))
        self._t = s
        self._last = s + (cfg.episode_length_bars if cfg.episode_length_bars is not None
                          else self.arrays.n_bars - cfg.window)
        self._state[:] = pk.new_state(1, self.n_assets, cfg.initial_cash_quote)
        for a in range(self.n_assets):
            self._state[pk.row(a, pk.A_MARK), 0] = self.arrays.bars[s, a, pk.B_CLOSE]
        kernel.reset_reward_state(self._state, slice(None), self._params)
        i = self._next_row()
        self._kernel.pf_observe(self._state, self._params, self._pa, self.arrays.bars,
                                self.arrays.feats_flat, np.array([s], dtype=np.int64), self._block, i)
        return self._rows[i], self._info(s)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Fill the action's target weights at the next opens and mark at the closes.

        ``info["position_base"]`` and ``info["weights"]`` are rows of a preallocated block,
        written once by the kernel and never again (like the observation): keep them freely.
        """
        fast_at, ctx, rows, qty_rows, w_rows, cells, ts = self._fast
        t = self._t
        last = self._last
        if t >= last:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset()")
        t += 1
        i = self._row
        if i == self._block_rows:
            self._new_block()
            i = 0
            fast_at, ctx, rows, qty_rows, w_rows, cells, ts = self._fast
        self._row = i + 1
        try:
            # a C-contiguous float32 (A,) array, projected in the kernel; numba's dispatcher
            # refuses anything else (TypeError) and the action map handles it below
            if fast_at is None:
                raise TypeError
            reward = fast_at(ctx, t, action, i)
        except TypeError:
            action = self.action_map.weights(action)  # validated and projected already
            reward = self._kernel.pf_env_weights_at(ctx, t, action, i)
        bad = cells[_BAD_ACTION]
        if bad != -1.0:
            self._row = i  # nothing happened
            self._bad_action(action, int(bad))
        self._t = t
        liq = cells[_LIQUIDATED] != 0.0
        if liq:
            self._last = t
        return rows[i], reward, liq, t >= last and not liq, {
            "ts_ms": ts[t],
            "equity_quote": cells[_EQUITY],
            "position_base": qty_rows[i],
            "weights": w_rows[i],
            "fees_paid_quote": cells[_FEES],
            "scaled_rebalances": int(cells[_SCALED]),
        }

    def _bad_action(self, action: Any, bad: int) -> None:
        """Raise the error for an action the kernel refused (``bad``: its BAD_ACTION code)."""
        if bad == -2:
            self.action_map.weights(action)  # the wrong length: the action map's own message
            raise ValueError(f"expected an action of shape ({self.n_assets},), got {np.shape(action)}")
        raise ValueError(f"the action for {self.symbols[bad]} is {action[bad]}; the "
                         "policy must output finite numbers")

    @property
    def t(self) -> int:
        """Index of the current decision bar."""
        return self._t

    @property
    def state(self) -> F64:
        """The account's kernel state column (read it, do not write)."""
        return self._state
