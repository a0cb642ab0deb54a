"""``TradingEnv``: a Gymnasium env over the books kernel, one market, one account.

Timing (exact, and the same in :class:`~coinrl.envs.vector.TradingVectorEnv`)
--------------------------------------------------------------------------------
Bar ``t`` is the bar that opens at ``ts_ms[t]``; its features ``features[t]`` are known at its
close. A *decision at t* is taken at bar t's close.

- The observation returned for decision t holds feature rows ``[t - window + 1 .. t]`` and the
  account marked at ``close[t]``. ``info["ts_ms"] == ts_ms[t]``: the open time of the newest
  bar the observation includes.
- ``step(action)`` treats the action as the target exposure for the fill at
  ``open[t + delay_bars]`` (``delay_bars >= 1``, default 1: the next bar's open; larger delays
  queue the target). The step then plays bar ``t + 1`` through the books (funding at its open,
  gap liquidation, the fill at its open, wick liquidation, borrow, mark at its close) and
  returns the observation for decision ``t + 1``.
- The reward is the change of equity from the mark at ``close[t]`` to the mark at
  ``close[t + 1]`` (after the fill at ``open[t + 1]``), through the reward function of
  :mod:`coinrl.envs.rewards`. It uses bar ``t + 1``'s open, high, low, close, volume and
  funding only: nothing after the newest bar of the returned observation, whose open time is
  the returned ``info["ts_ms"]``. No observation or reward ever depends on a later bar.

Episodes start at a random decision bar (``episode_length_bars`` steps, start drawn with
``self.np_random``) or cover the whole data (``episode_length_bars=None``: first decision at
``window - 1``, last observation at the final bar). Reaching the episode's last bar is
``truncated=True``; liquidation or bankruptcy is ``terminated=True``.

Actions: discrete (index into ``config.discrete_positions``, each a target exposure = position notional
/ equity) or continuous (``Box(lo, hi, (1,))``, the target exposure itself, clipped to
``config.exposure_bounds``), mapped by the env's :class:`~coinrl.envs.actions.ActionMap`
(``action_map``: the one map of every env, the backtester and live; NaN/inf is an error).

Observation (``obs_mode``): ``"box"``, a flat float32 vector of the window's features (oldest row
first, ``window * F`` values) followed by the account state; or ``"dict"``,
``{"market": (window, F) float32, "account": (4,)}``.
Account state: ``[exposure, unrealised_pnl / equity, time_in_position, distance_to_liquidation]``
with ``time_in_position = bars_held / (bars_held + window)`` in [0, 1) and
``distance_to_liquidation`` the fraction the close must move against the position to reach its
liquidation price, clipped to [0, 1] (1 when flat or unreachable, e.g. spot).

Speed: a step is one call of the compiled kernel (:func:`coinrl.envs.single_kernel.env_step_at`:
the bar through the books of :class:`~coinrl.envs.books.Account`, A = 1 of the portfolio kernel,
the reward, and the observation) on
preallocated arrays, plus the Python of the Gymnasium API around it. The kernel writes the
observation straight into its own row of a preallocated block (a new block every
``OBS_BLOCK_ROWS`` steps), returned as a view of that row: observations never share memory and a
row is never rewritten (Gymnasium's contract: the caller may keep and modify them), without a
per-step copy. No pandas; per step only the info dict (and the returned tuple) is allocated. The
vector env runs the same per-account kernel code, so both give the same floats.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import DataError

from . import kernel
from . import single_kernel as sk
from .actions import ActionMap
from .books import Account
from .config import EnvConfig, env_config_from
from .data import market_list
from .kernel import EQUITY, FEES, LIQUIDATED
from .single_kernel import QTY

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

N_ACCOUNT_FEATURES = 4
ACCOUNT_FEATURES = ("exposure", "unrealised_pnl_frac", "time_in_position", "distance_to_liquidation")
EQUITY_FLOOR_FRAC = 1e-9
"""Equity floor (fraction of initial cash) for the account features' denominators."""
OBS_BLOCK_ROWS = 256
"""Observations are rows of a block allocated every this many steps (see ``_new_block``)."""

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


class MarketArrays:
    """A market's arrays prepared once for fast stepping: contiguous, typed, checked.

    Attributes:
        md: the source MarketData.
        n_bars: number of bars ``T``.
        open, high, low, close, volume, funding: float64 arrays (funding zeros when absent).
        ts_ms: int64 open times.
        features: read-only C-contiguous float32 ``(T, F)`` view.
        bars, features_flat: the kernel's inputs: open, high, low, close, volume, funding and
            tradable (1.0) as the columns of one ``(T, 1, 7)`` float64 table (the portfolio
            kernel's, one asset), and ``features`` flattened to ``(T * F,)``.
            Writeable only because numba dispatches writeable arrays faster: never write them.
        has_funding: whether the data carries funding rates.
    """

    def __init__(self, md: MarketData) -> None:
        self.md = md
        self.n_bars = len(md)
        self.open = np.ascontiguousarray(md.open, dtype=np.float64)
        self.high = np.ascontiguousarray(md.high, dtype=np.float64)
        self.low = np.ascontiguousarray(md.low, dtype=np.float64)
        self.close = np.ascontiguousarray(md.close, dtype=np.float64)
        self.volume = np.ascontiguousarray(md.volume, dtype=np.float64)
        self.has_funding = md.funding_rate is not None
        self.funding = (
            np.ascontiguousarray(md.funding_rate, dtype=np.float64)
            if md.funding_rate is not None
            else np.zeros(self.n_bars)
        )
        self.ts_ms = np.ascontiguousarray(md.ts_ms, dtype=np.int64)
        self.bars = sk.bar_table(self.open, self.high, self.low, self.close, self.volume, self.funding)
        base = np.ascontiguousarray(md.features, dtype=np.float32)
        self.features_flat = (base if base.flags.writeable else base.copy()).reshape(-1)
        feats = base.view()
        feats.flags.writeable = False
        self.features = feats
        prices = np.stack([self.open, self.high, self.low, self.close])
        if not np.all(np.isfinite(prices)) or not np.all(prices > 0.0):
            bad = int(np.flatnonzero(~(np.isfinite(prices) & (prices > 0.0)).all(axis=0))[0])
            raise DataError(
                f"{md.symbol}: prices must be finite and > 0, bar {bad} (ts_ms={int(self.ts_ms[bad])}) "
                "is not; clean the candles with preprocess_data first"
            )
        if not np.all(np.isfinite(self.volume)) or not np.all(np.isfinite(self.funding)):
            raise DataError(f"{md.symbol}: volume and funding_rate must be finite; clean them first")
        finite = np.isfinite(feats).all(axis=1)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise DataError(
                f"{md.symbol}: features have NaN/inf at row {bad} (ts_ms={int(self.ts_ms[bad])}); "
                "drop the warm-up rows (prepare_data_for_model does) before building an env"
            )

    def start_range(self, window: int, episode_len: int | None) -> tuple[int, int]:
        """Inclusive range of first decision bars for the given window and episode length.

        Raises:
            DataError: the market is too short for one episode.
        """
        lo = window - 1
        hi = self.n_bars - 1 - (episode_len if episode_len is not None else self.n_bars - window)
        if hi < lo or self.n_bars < window + 1:
            need = window + (episode_len if episode_len is not None else 1)
            raise DataError(
                f"{self.md.symbol} has {self.n_bars} bars; window={window} and "
                f"episode_length_bars={episode_len} need at least {need}; pass more data or "
                "shorten them"
            )
        return lo, hi


def _mv(arr: npt.NDArray[Any]) -> Any:
    """A memoryview of a contiguous array: item access returns Python floats/ints (fast)."""
    return memoryview(arr)  # type: ignore[arg-type]


def build_spaces(config: EnvConfig, n_features: int) -> tuple[spaces.Space[Any], spaces.Space[Any]]:
    """Observation and action spaces of one env for ``config`` and ``n_features`` columns."""
    w = config.window
    # finite bounds (Gymnasium warns on infinite ones); features are unbounded, so the float32
    # range; the last two account features are fractions in [0, 1]
    big = float(np.finfo(np.float32).max)
    acct_lo = np.array([-big, -big, 0.0, 0.0], dtype=np.float32)
    acct_hi = np.array([big, big, 1.0, 1.0], dtype=np.float32)
    if config.obs_mode == "box":
        n_mkt = w * n_features
        obs_space: spaces.Space[Any] = spaces.Box(
            np.concatenate([np.full(n_mkt, -big, dtype=np.float32), acct_lo]),
            np.concatenate([np.full(n_mkt, big, dtype=np.float32), acct_hi]),
            dtype=np.float32,
        )
    else:
        obs_space = spaces.Dict({
            "market": spaces.Box(-big, big, shape=(w, n_features), dtype=np.float32),
            "account": spaces.Box(acct_lo, acct_hi, dtype=np.float32),
        })
    if config.action == "discrete":
        act_space: spaces.Space[Any] = spaces.Discrete(len(config.discrete_positions))
    else:
        lo, hi = config.exposure_bounds
        act_space = spaces.Box(np.float32(lo), np.float32(hi), shape=(1,), dtype=np.float32)
    return obs_space, act_space


class TradingEnv(gym.Env[Any, Any]):
    """Trade one market with a target-exposure action; books by :class:`~coinrl.envs.books.Account`.

    Args:
        data: MarketData, a sequence of MarketData (one market drawn per episode), a candle
            DataFrame or file path (featured with the default spec, train split), or None for
            the packaged BTC/USD sample (:func:`~coinrl.envs.data.default_market_data`).
        config: :class:`~coinrl.envs.config.EnvConfig` or a mapping of its fields.
        render_mode: ``"human"``, ``"rgb_array"`` or None.
        **overrides: EnvConfig fields overriding ``config`` (``gym.make(..., window=8)``).

    Raises:
        ConfigError: invalid config fields.
        DataError: unusable market data (too short, NaN features, non-positive prices).

    Example:
        >>> import gymnasium as gym, coinrl.envs  # doctest: +SKIP
        >>> env = gym.make("coinrl/Trading-v0", window=24, action="continuous")  # doctest: +SKIP
        >>> obs, info = env.reset(seed=0)  # doctest: +SKIP
    """

    metadata: dict[str, Any] = {"render_modes": ["human", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        data: MarketData | Sequence[MarketData] | pd.DataFrame | str | Path | None = None,
        config: EnvConfig | Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        cfg = env_config_from(config, **overrides)
        self.config = cfg
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.markets = [MarketArrays(md) for md in market_list(data)]
        self.n_features = self.markets[0].md.n_features
        self._ranges = [m.start_range(cfg.window, cfg.episode_length_bars) for m in self.markets]
        self.observation_space, self.action_space = build_spaces(cfg, self.n_features)

        self._account = Account(cfg)
        self._state = self._account.state
        self._cells: Any = _mv(self._state.reshape(-1))  # the account's fields as Python floats
        self._record = render_mode is not None
        w, nf = cfg.window, self.n_features
        self._w = w
        self._wf = w * nf
        self._nf = nf
        self.action_map = ActionMap.from_env_config(cfg, self.markets[0].md.symbol)
        self._queue: deque[float] | None = None
        self._box = cfg.obs_mode == "box"
        self._params, self._pa = sk.make_params(
            cfg, n_features=nf, acct_col=self._wf,
            eq_floor_quote=cfg.initial_cash_quote * EQUITY_FLOOR_FRAC,
        )
        self._scratch = np.empty((4, 1))
        am = self.action_map
        self._amap = np.array([am.gross, am.net, 1.0 if am.allow_short else 0.0])
        self._kernel = sk.compiled()
        self._new_block()
        self._market_idx = -1
        self._select_market(0)
        self._t = -1
        self._start = 0
        self._last = -1
        self._history: list[tuple[int, float, float]] = []
        self._fig: Any = None

    # ------------------------------------------------------------------ copies
    _TRANSIENT = ("_m", "_C", "_TS", "_cells", "_fast", "_pinned", "_block", "_obs_rows", "_fig")
    """Attributes rebuilt by ``__setstate__``: memoryviews, bare addresses and views."""

    def __getstate__(self) -> dict[str, Any]:
        """The env without its memoryviews and kernel addresses (``copy.deepcopy`` and pickle
        rebuild them on the copy's own arrays: a copied address would step the original)."""
        return {k: v for k, v in self.__dict__.items() if k not in self._TRANSIENT}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fig = None
        self._cells = _mv(self._state.reshape(-1))
        self._new_block()  # a fresh observation block: the rows handed out stay the original's
        k, self._market_idx = self._market_idx, -1
        self._select_market(k)

    # ------------------------------------------------------------------ internals
    def _select_market(self, i: int) -> None:
        if i == self._market_idx:
            return
        m = self.markets[i]
        self._market_idx = i
        self._m = m
        self._C = _mv(m.close)
        self._TS = _mv(m.ts_ms)
        self._build_fast()

    def _build_fast(self) -> None:
        """Everything step() reads, in one tuple (one attribute load), and the kernel's context:
        the addresses of the arrays it steps (this env keeps them alive; rebuilt whenever the
        market or the observation block changes)."""
        arrays = (self._state, self._params, self._pa, self._m.bars, self._m.features_flat,
                  self._block, self._scratch, self._amap)
        ctx = sk.context(*arrays)
        # the context holds bare addresses, and the kernel gets the context's: keep all alive
        self._pinned = (*arrays, ctx)
        self._fast: tuple[Any, ...] = (
            self._kernel.env_step_at, ctx.ctypes.data, self._obs_rows, self._cells, self._TS,
            self.action_map._pos_map if self.action_map.kind == "discrete" else None, self._record,
        )

    def _new_block(self) -> int:
        """Start a fresh block of observation rows; returns the first row index (0).

        Each observation is written once into its own row and handed out as a view of it:
        distinct observations never share memory (Gymnasium's contract: the caller may keep
        and modify them) and no row is ever written again, so the copy of a per-step buffer
        is saved. A block lives as long as any of its observations does.
        """
        n, wf = OBS_BLOCK_ROWS, self._wf
        # one row per observation: the window, then the account features (a Box observation is
        # the row; a Dict one views its two parts)
        self._block = np.empty((n, wf + N_ACCOUNT_FEATURES), dtype=np.float32)
        # the observation objects of all rows, made at once (cheaper than one view per step)
        if self._box:
            self._obs_rows: list[Any] = list(self._block)
        else:
            mkt = self._block[:, :wf].reshape(n, self._w, self._nf)
            self._obs_rows = [{"market": m, "account": a} for m, a in zip(mkt, self._block[:, wf:], strict=True)]
        self._row = 0
        if hasattr(self, "_m"):
            self._build_fast()
        return 0

    def _observation(self, t: int) -> Any:
        """Write the observation for decision bar ``t`` into a fresh row and return it."""
        i = self._row
        if i == OBS_BLOCK_ROWS:
            i = self._new_block()
        self._row = i + 1
        self._kernel.observe(self._state, self._params, self._m.bars, self._m.features_flat,
                             np.array([t], dtype=np.int64), self._block, self._block, i)
        return self._obs_rows[i]

    def _info(self, t: int) -> dict[str, Any]:
        acct = self._account
        return {
            "ts_ms": self._TS[t],
            "equity_quote": acct.equity_quote,
            "position_base": acct.position_base,
            "fees_paid_quote": acct.fees_paid_quote,
        }

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode: draw the market (if several) and the first decision bar.

        Args:
            seed: seeds ``self.np_random`` (Gymnasium semantics).
            options: ``{"start_index": i}`` forces the first decision bar (backtests);
                ``{"market_index": k}`` forces the market.

        Returns:
            ``(observation, info)`` for the first decision bar.
        """
        super().reset(seed=seed)
        cfg = self.config
        rng = self.np_random
        opts = options or {}
        if "market_index" in opts:
            k = int(opts["market_index"])
            if not 0 <= k < len(self.markets):
                raise ValueError(f"market_index {k} out of range [0, {len(self.markets)})")
        else:
            k = int(rng.integers(len(self.markets))) if len(self.markets) > 1 else 0
        self._select_market(k)
        lo, hi = self._ranges[k]
        if "start_index" in opts:
            s = int(opts["start_index"])
            if not lo <= s <= hi:
                raise ValueError(f"start_index {s} out of range [{lo}, {hi}] for this market and config")
        elif cfg.episode_length_bars is None:
            s = lo
        else:
            s = int(rng.integers(lo, hi, endpoint=True))
        self._start = s
        self._t = s
        self._last = s + (cfg.episode_length_bars if cfg.episode_length_bars is not None else self._m.n_bars - cfg.window)
        self._account.reset(self._C[s])
        kernel.reset_reward_state(self._state, slice(None), self._params)
        self._queue = deque([0.0] * (cfg.delay_bars - 1)) if cfg.delay_bars > 1 else None
        if self._record:
            self._history = [(s, self._account.equity_quote, 0.0)]
        return self._observation(s), self._info(s)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Play one bar: fill the target at the next open, mark at its close (see module doc).

        Returns:
            ``(observation, reward, terminated, truncated, info)``; ``info`` has ``ts_ms`` (open
            time of the newest bar in the observation), ``equity_quote``, ``position_base`` and
            ``fees_paid_quote``.
        """
        # one attribute load for everything the step reads (attribute loads dominate a Python step)
        env_step_at, ctx, obs_rows, cells, ts, pos_map, record = self._fast
        # the ActionMap: a discrete index is its position; a continuous number is clipped by the
        # map's own rule inside the kernel call (clip_exposure; NaN/inf: a NaN reward, no step)
        if pos_map is not None:
            try:
                target = pos_map[action]
            except (KeyError, TypeError):
                target = self.action_map.exposure(action)
        else:
            try:
                target = action.item()  # one number (an array of any other size: ValueError)
            except (AttributeError, ValueError):
                target = self.action_map.exposure(action)  # a list, a float, ...: its checks
        t = self._t
        last = self._last
        if t >= last:
            raise RuntimeError("step() called before reset() or after the episode ended; call reset()")
        queue = self._queue
        if queue is not None:
            queue.append(self.action_map.exposure(action) if pos_map is None else target)
            target = queue.popleft()
        t += 1
        self._t = t
        i = self._row
        if i == OBS_BLOCK_ROWS:  # the observation goes to a fresh row of the current block
            i = self._new_block()
            ctx, obs_rows = self._fast[1], self._fast[2]
        self._row = i + 1
        # the bar through the books, the reward, the observation into row i: one compiled call
        reward = env_step_at(ctx, t, target, i)
        if reward != reward:  # a NaN/inf action: nothing happened
            self._t, self._row = t - 1, i
            self.action_map.exposure(action)  # raises the ActionMap's error
            raise RuntimeError(f"the kernel refused action {action!r} at bar {t}")
        liq = cells[LIQUIDATED] != 0.0
        eq = cells[EQUITY]
        q = cells[QTY]
        if liq:
            self._last = t  # terminated: a further step() must reset first
        if record:
            self._history.append((t, eq, q))
        return obs_rows[i], reward, liq, t >= last and not liq, {
            "ts_ms": ts[t],
            "equity_quote": eq,
            "position_base": q,
            "fees_paid_quote": cells[FEES],
        }

    # ------------------------------------------------------------------ rendering
    def render(self) -> npt.NDArray[np.uint8] | None:
        """Plot close price, position and equity of the episode so far.

        ``"rgb_array"`` returns an ``(H, W, 3)`` uint8 image (matplotlib Agg); ``"human"`` draws
        the figure in a window (when the backend can show one) and returns None.
        """
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        import matplotlib

        if self.render_mode == "rgb_array":
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            fig = Figure(figsize=(8, 6), dpi=80)
            FigureCanvasAgg(fig)
            self._draw(fig)
            fig.canvas.draw()
            buf = np.asarray(fig.canvas.buffer_rgba())  # type: ignore[attr-defined]
            return np.ascontiguousarray(buf[:, :, :3])
        import matplotlib.pyplot as plt

        if self._fig is None:
            self._fig = plt.figure(figsize=(10, 7))
        self._fig.clf()
        self._draw(self._fig)
        if matplotlib.get_backend().lower() != "agg":
            plt.pause(0.001)
        return None

    def _draw(self, fig: Any) -> None:
        hist = self._history or [(max(self._t, 0), self._account.equity_quote, self._account.position_base)]
        t_idx = np.array([h[0] for h in hist])
        ts = np.asarray(self._m.ts_ms)[t_idx].astype("datetime64[ms]")
        close = self._m.close[t_idx]
        ax1, ax2, ax3 = fig.subplots(3, 1, sharex=True)
        ax1.plot(ts, close, lw=0.8, color="black")
        ax1.set_ylabel(f"{self._m.md.symbol} close")
        ax2.step(ts, [h[2] for h in hist], where="post", lw=0.8)
        ax2.set_ylabel("position (base)")
        ax3.plot(ts, [h[1] for h in hist], lw=0.8, color="tab:green")
        ax3.set_ylabel("equity (quote)")
        fig.tight_layout()

    def close(self) -> None:
        """Close the human-mode figure, if any."""
        if self._fig is not None:
            import matplotlib.pyplot as plt

            plt.close(self._fig)
            self._fig = None

    # ------------------------------------------------------------------ introspection
    @property
    def account(self) -> Account:
        """The live books of this env (read them, do not write)."""
        return self._account

    @property
    def t(self) -> int:
        """Index of the current decision bar in the current market."""
        return self._t
