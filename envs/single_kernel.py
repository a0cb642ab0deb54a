"""The single-asset envs' entry points: ``A = 1`` of the portfolio kernel, in their own layout.

:class:`~coinrl.envs.books.Account`, :class:`~coinrl.envs.books.Books`,
:class:`~coinrl.envs.trading_env.TradingEnv` (one call per step, :func:`env_step_at`: books,
reward and observation fused), :class:`~coinrl.envs.vector.TradingVectorEnv` (one call per step
for all N envs, :func:`vec_step`) and the rollouts' target loop (:func:`run_targets`) step here.
Every bar is the portfolio kernel's ``_pbar`` with one asset
(:mod:`coinrl.envs.portfolio_bar`): there is no second implementation of the books. What is
single-asset here is only the interface: a scalar target exposure instead of a weights vector,
bars as a ``(T, 1, 7)`` table, and the single-asset observation (the feature window, then
``exposure, unrealised PnL / equity, time in position, distance to liquidation`` from
:func:`coinrl.envs.kernel.account_features`), the layout the single-asset policies were trained
on.

State: the portfolio state matrix of one asset, ``(N_ROWS, N)`` (:func:`new_state`); the
position fields are asset 0's rows (:data:`QTY`, :data:`AVG_ENTRY`, :data:`MARK`,
:data:`BARS_HELD`). Constants: the account's ``params`` vector and the ``(1, N_PARAMS)`` per-asset
matrix ``pa`` (:func:`make_params`).

Compilation as the portfolio kernel's (no fastmath, ``cache=True``, explicit signatures), each
entry point on first use; the on-disk cache is guarded against stale helpers
(:mod:`coinrl.envs.kernel_cache`).
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt

from . import kernel
from . import portfolio_kernel as pk
from .config import EnvConfig
from .kernel import (
    EQUITY,
    FEES,
    P_EQ_FLOOR,
    P_MMR,
    P_N_FEATURES,
    P_WINDOW,
    TURNOVER,
    _reward,
    account_features,
)
from .portfolio_bar import (
    A_AVG,
    A_BARS_HELD,
    A_MARK,
    A_QTY,
    B_CLOSE,
    B_TRADABLE,
    N_ACCT_ROWS,
    N_ASSET_ROWS,
    N_BAR_COLS,
    _pbar,
    _pbar1,
    row,
)
from .portfolio_obs import clip_exposure

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]

QTY = row(0, A_QTY)
"""State row of the position (base)."""
AVG_ENTRY = row(0, A_AVG)
"""State row of the average entry price (quote)."""
MARK = row(0, A_MARK)
"""State row of the last mark price (quote)."""
BARS_HELD = row(0, A_BARS_HELD)
"""State row of the bars the position has been held in its direction."""
N_ROWS = N_ACCT_ROWS + N_ASSET_ROWS
"""Rows of a single-asset state matrix."""
N_CTX = 12
"""Entries of the :func:`context` vector."""


def new_state(n: int, initial_cash_quote: float, *, by_account: bool = False) -> F64:
    """A fresh state matrix ``(N_ROWS, n)``: initial cash, no position, no costs.

    ``by_account``: in Fortran order, each account's fields contiguous in memory (3 cache
    lines, not one per field): the batched books, whose kernel walks the accounts one after
    another. The same matrix to every reader, other strides, the same floats."""
    s = pk.new_state(n, 1, initial_cash_quote)
    return np.asfortranarray(s) if by_account else s


def reset_columns(s: F64, idx: npt.NDArray[np.intp] | slice, initial_cash_quote: float,
                  mark_price_quote: F64 | float) -> None:
    """Return accounts ``idx`` of ``s`` to a fresh state marked at ``mark_price_quote``."""
    s[:, idx] = pk.new_state(1, 1, initial_cash_quote)
    s[MARK, idx] = mark_price_quote


def make_params(
    config: EnvConfig, *, n_features: int = 0, acct_col: int = 0, eq_floor_quote: float = 0.0
) -> tuple[F64, F64]:
    """``(params, pa)``: the account's constants (:func:`coinrl.envs.kernel.make_params`) and the
    ``(1, N_PARAMS)`` per-asset matrix (the same execution constants)."""
    p = kernel.make_params(config, n_features=n_features, acct_col=acct_col, eq_floor_quote=eq_floor_quote)
    return p, np.ascontiguousarray(p[None, :])


def bar_table(open_: F64, high: F64, low: F64, close: F64, volume: F64, funding: F64) -> F64:
    """The kernel's ``(T, 1, 7)`` bar table of one market (every bar tradable)."""
    cols = (open_, high, low, close, volume, funding, np.ones(len(open_)))
    return np.ascontiguousarray(np.stack(cols, axis=1)[:, None, :], dtype=np.float64)


# ---------------------------------------------------------------------- one account
def _sbar(s: F64, j: int, p: F64, pa: F64, target: float, bars: F64, t: int, scratch: F64) -> bool:
    """Bar ``t`` of account ``j`` toward ``target`` exposure: the portfolio bar with one asset
    (``scratch`` a (4, 1) work array; its last row carries the target)."""
    w = scratch[3]
    w[0] = target
    return _pbar(s, j, p, pa, w, bars, t, scratch)


def _sobserve(
    s: F64, j: int, p: F64, feats: F32, t: int, c: float, mkt_out: F32, acct_out: F32, row_: int
) -> None:
    """Write account ``j``'s single-asset observation for decision bar ``t`` (close ``c``).

    The window (feature rows ``t - window + 1 .. t``, oldest first) goes to
    ``mkt_out[row_, :window * F]``, the account features to ``acct_out[row_, acct_col:acct_col + 4]``.
    """
    w = p[P_WINDOW]
    exposure, upnl, in_position, dist = account_features(
        s[QTY, j], c, s[EQUITY, j], s[AVG_ENTRY, j], s[BARS_HELD, j], w, p[P_MMR], p[P_EQ_FLOOR]
    )
    col = int(p[kernel.P_ACCT_COL])
    acct_out[row_, col] = exposure
    acct_out[row_, col + 1] = upnl
    acct_out[row_, col + 2] = in_position
    acct_out[row_, col + 3] = dist
    wf = int(w) * int(p[P_N_FEATURES])
    end = (t + 1) * int(p[P_N_FEATURES])
    # slice first, then index with the loop counter (known >= 0): LLVM vectorises the copy
    src = feats[end - wf : end]
    dst = mkt_out[row_]
    for k in range(wf):
        dst[k] = src[k]


# ---------------------------------------------------------------------- entry points
def books_step(
    s: F64, p: F64, pa: F64, liq_out: BoolArr, target: F64, o: F64, h: F64, lo: F64, c: F64,
    v: F64, f: F64,
) -> None:
    """One bar of every account ``j`` (:meth:`coinrl.envs.books.Books.step_bar`), its own prices."""
    bars = np.empty((1, 1, N_BAR_COLS))
    scratch = np.empty((4, 1))
    b = bars[0, 0]
    b[B_TRADABLE] = 1.0
    for j in range(s.shape[1]):
        b[0] = o[j]
        b[1] = h[j]
        b[2] = lo[j]
        b[3] = c[j]
        b[4] = v[j]
        b[5] = f[j]
        liq_out[j] = _sbar(s, j, p, pa, target[j], bars, 0, scratch)


def account_step(
    s: F64, p: F64, pa: F64, target: float, o: float, h: float, lo: float, c: float, v: float, f: float
) -> bool:
    """One bar of account 0 (:meth:`coinrl.envs.books.Account.step_bar`)."""
    bars = np.empty((1, 1, N_BAR_COLS))
    b = bars[0, 0]
    b[0] = o
    b[1] = h
    b[2] = lo
    b[3] = c
    b[4] = v
    b[5] = f
    b[B_TRADABLE] = 1.0
    return _sbar(s, 0, p, pa, target, bars, 0, np.empty((4, 1)))


def env_step(
    s: F64, p: F64, pa: F64, bars: F64, feats: F32, out: F32, t: int, action: float, row_: int,
    scratch: F64, amap: F64,
) -> float:
    """One TradingEnv step on account 0: the action to its target exposure by the ActionMap's
    rule (``amap`` = ``[gross, net, allow_short]``: :func:`~coinrl.envs.portfolio_obs.clip_exposure`),
    bar ``t``, the reward (returned), and the observation for decision ``t`` into ``out[row_]``
    (window, then the account features at ``acct_col``). A NaN/inf action: nothing happens and
    the reward is NaN (the env raises the ActionMap's error)."""
    if action - action != 0.0:
        return math.nan
    target = clip_exposure(action, amap[0], amap[1], amap[2] != 0.0)
    eq_prev = s[EQUITY, 0]
    to_prev = s[TURNOVER, 0]
    _sbar(s, 0, p, pa, target, bars, t, scratch)
    r = _reward(s, 0, p, eq_prev, s[EQUITY, 0], s[TURNOVER, 0] - to_prev)
    _sobserve(s, 0, p, feats, t, bars[t, 0, B_CLOSE], out, out, row_)
    return r


def context(
    state: F64, params: F64, pa: F64, bars: F64, feats: F32, out: F32, scratch: F64, amap: F64
) -> I64:
    """The int64 vector of :func:`env_step_at`: the arrays' addresses and shapes (``amap``: the
    action map's ``[gross, net, allow_short]``, ``scratch`` a (4, 1) work array).

    The kernel dereferences these addresses without checks: the caller keeps every array alive
    while the vector is in use and makes a new vector when it replaces one.

    Raises:
        ValueError: an array of the wrong dtype, shape or layout (C-contiguous only).
    """
    want = ((state, np.float64, (N_ROWS, 1)), (params, np.float64, (kernel.N_PARAMS,)),
            (pa, np.float64, (1, kernel.N_PARAMS)), (bars, np.float64, (bars.shape[0], 1, N_BAR_COLS)),
            (feats, np.float32, (feats.size,)), (out, np.float32, (out.shape[0], out.shape[-1])),
            (scratch, np.float64, (4, 1)), (amap, np.float64, (3,)))
    for a, dtype, shape in want:
        if a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
            raise ValueError(f"the kernel takes a C-contiguous {np.dtype(dtype)} array of shape "
                             f"{shape}, got {a.dtype} {a.shape} (C-contiguous: {a.flags.c_contiguous})")
    return np.array([state.ctypes.data, params.ctypes.data, pa.ctypes.data, bars.ctypes.data,
                     bars.shape[0], feats.ctypes.data, feats.size, out.ctypes.data, out.shape[0],
                     out.shape[1], scratch.ctypes.data, amap.ctypes.data], dtype=np.int64)


def env_step_at(ctx_address: int, t: int, action: float, row_: int) -> float:
    """:func:`env_step` with its arrays passed by address: ``ctx_address`` is the address of the
    :func:`context` vector (``ctx.ctypes.data``). numba's dispatcher types every array argument
    of a call from Python (~60-100 ns each), a scalar in its fast path: four scalars are the
    cheapest call."""
    ctx = kernel._i64_at(ctx_address, N_CTX)
    s = pk._f64_at2(ctx[0], N_ROWS, 1)
    p = kernel._f64_at(ctx[1], kernel.N_PARAMS)
    pa = pk._f64_at2(ctx[2], 1, kernel.N_PARAMS)
    bars = pk._f64_at3(ctx[3], ctx[4], 1, N_BAR_COLS)
    feats = kernel._f32_at(ctx[5], ctx[6])
    out = pk._f32_at2(ctx[7], ctx[8], ctx[9])
    scratch = pk._f64_at2(ctx[10], 4, 1)
    amap = kernel._f64_at(ctx[11], 3)
    return env_step(s, p, pa, bars, feats, out, t, action, row_, scratch, amap)


def observe(s: F64, p: F64, bars: F64, feats: F32, t: I64, mkt_out: F32, acct_out: F32, row0: int) -> None:
    """Observations of accounts ``0 .. len(t) - 1`` at their decision rows ``t``, into rows
    ``row0 + j``."""
    for j in range(t.shape[0]):
        _sobserve(s, j, p, feats, t[j], bars[t[j], 0, B_CLOSE], mkt_out, acct_out, row0 + j)


def vec_step(
    s: F64, p: F64, pa: F64, bars: F64, feats: F32, ts: I64, t: I64, last: I64, target: F64,
    fresh: BoolArr, done: BoolArr, liq_out: BoolArr, mkt_out: F32, acct_out: F32,
    rewards: F64, terminated: BoolArr, truncated: BoolArr,
    info_ts: I64, info_equity: F64, info_position: F64, info_fees: F64,
) -> int:
    """One TradingVectorEnv step of N envs; returns how many ended (terminated or truncated).

    Env ``j`` with ``fresh[j]`` was reset before this call (NEXT_STEP autoreset): its action is
    ignored and it reports its first observation with reward 0 and both flags False. Every other
    env plays bar ``t[j] + 1`` (``t`` is advanced in place). ``done`` may be ``fresh`` itself.
    """
    scratch = np.empty((4, 1))
    pa0 = pa[0]
    n_done = 0
    for j in range(s.shape[1]):
        tj = t[j]
        if fresh[j]:
            r = 0.0
            te = False
            tr = False
        else:
            tj += 1
            t[j] = tj
            eq_prev = s[EQUITY, j]
            to_prev = s[TURNOVER, j]
            # _pbar's A = 1 path, called directly: the asset's params row is taken once per call
            te = _pbar1(s, j, p, pa, pa0, target[j], bars, tj, scratch)
            r = _reward(s, j, p, eq_prev, s[EQUITY, j], s[TURNOVER, j] - to_prev)
            tr = tj >= last[j] and not te
        liq_out[j] = te
        rewards[j] = r
        terminated[j] = te
        truncated[j] = tr
        _sobserve(s, j, p, feats, tj, bars[tj, 0, B_CLOSE], mkt_out, acct_out, j)
        info_ts[j] = ts[tj]
        info_equity[j] = s[EQUITY, j]
        info_position[j] = s[QTY, j]
        info_fees[j] = s[FEES, j]
        d = te or tr
        done[j] = d
        if d:
            n_done += 1
    return n_done


def run_targets(
    s: F64, p: F64, pa: F64, bars: F64, targets: F64, delay: int, start: int, eq: F64, pos: F64,
    fees: F64, slip: F64, turn: F64,
) -> int:
    """A fixed target sequence on account 0 from decision bar ``start``: target ``k`` fills at
    bar ``start + k + delay`` (flat while the first fill is pending); marks ``k = 0 .. T`` of
    equity, position and cost totals into the outputs, frozen after a liquidation. Returns the
    mark index of the liquidation, or -1."""
    scratch = np.empty((4, 1))
    t_steps = targets.shape[0]
    eq[0] = s[EQUITY, 0]
    pos[0] = s[QTY, 0]
    fees[0] = s[FEES, 0]
    slip[0] = s[kernel.SLIPPAGE, 0]
    turn[0] = s[kernel.TURNOVER, 0]
    for k in range(t_steps):
        j = k - (delay - 1)
        tgt = targets[j] if j >= 0 else 0.0
        liq = _sbar(s, 0, p, pa, tgt, bars, start + k + 1, scratch)
        m = k + 1
        eq[m] = s[EQUITY, 0]
        pos[m] = s[QTY, 0]
        fees[m] = s[FEES, 0]
        slip[m] = s[kernel.SLIPPAGE, 0]
        turn[m] = s[kernel.TURNOVER, 0]
        if liq:
            for q in range(m + 1, t_steps + 1):
                eq[q] = eq[m]
                pos[q] = 0.0
                fees[q] = fees[m]
                slip[q] = slip[m]
                turn[q] = turn[m]
            return m
    return -1


# ---------------------------------------------------------------------- compilation
_HELPERS = (_sbar, _sobserve, env_step)
ENTRY_POINTS = ("books_step", "account_step", "env_step", "env_step_at", "observe", "vec_step",
                "run_targets")


class _Compiled:
    """The entry points, each compiled by numba (or loaded from its cache) on first use."""

    def __init__(self, njit: Any, sigs: dict[str, Any]) -> None:
        self._njit = njit
        self._sigs = sigs

    def __getattr__(self, name: str) -> Any:
        sigs = self.__dict__.get("_sigs", {})  # not self._sigs: no recursion before __init__
        if name not in sigs:
            raise AttributeError(f"the kernel has no entry point {name!r}")
        # no fastmath: LLVM keeps the IEEE operations as written (no reassociation, no FMA)
        fn = self._njit(self._sigs[name], cache=True)(globals()[name])
        setattr(self, name, fn)  # found directly from now on
        return fn

    def __reduce__(self) -> tuple[Any, ...]:
        return (compiled, ())  # a copy or an unpickled object gets that process's kernels


@functools.cache
def compiled() -> Any:
    """The entry points compiled by numba, as a namespace (see :data:`ENTRY_POINTS`). numba is
    imported on the first call, and each entry point compiled (or loaded from the cache) on its
    first use, so an env pays only for those it calls. Without numba, the interpreted functions
    of this module (and a warning)."""
    njit = pk.register()
    if njit is None:
        return SimpleNamespace(**{name: globals()[name] for name in ENTRY_POINTS})
    from numba import types as nt
    from numba.extending import register_jitable

    for helper in _HELPERS:
        register_jitable(helper)
    # Writeable C-contiguous arrays everywhere the envs call per step: numba's dispatcher types
    # those in its C fast path (a read-only array costs ~65 ns more per argument per call).
    state = nt.float64[:, ::1]
    state_f = nt.float64[::1, :]  # Books: the accounts' fields contiguous (new_state(by_account))
    params = nt.float64[::1]
    pmat = nt.float64[:, ::1]
    vec = nt.Array(nt.float64, 1, "A", readonly=True)  # Books.step_bar: any array, any layout
    bars = nt.float64[:, :, ::1]
    feats = nt.float32[::1]
    out = nt.float32[:, ::1]
    f8, i8, b1 = nt.float64, nt.int64, nt.boolean
    f8v, i8v, b1v = nt.float64[::1], nt.int64[::1], nt.boolean[::1]
    sigs = {
        "books_step": [nt.void(st, params, pmat, b1v, vec, vec, vec, vec, vec, vec, vec)
                       for st in (state, state_f)],
        "account_step": b1(state, params, pmat, f8, f8, f8, f8, f8, f8, f8),
        "env_step": f8(state, params, pmat, bars, feats, out, i8, f8, i8, pmat, f8v),
        "env_step_at": f8(i8, i8, f8, i8),
        "observe": [nt.void(st, params, bars, feats, i8v, out, out, i8) for st in (state, state_f)],
        "vec_step": [i8(st, params, pmat, bars, feats, i8v, i8v, i8v, f8v, b1v, b1v, b1v, out,
                        out, f8v, b1v, b1v, i8v, f8v, f8v, f8v) for st in (state, state_f)],
        "run_targets": i8(state, params, pmat, bars, f8v, i8, i8, f8v, f8v, f8v, f8v, f8v),
    }
    return _Compiled(njit, sigs)
