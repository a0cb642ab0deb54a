"""The compiled portfolio kernel: one bar of an account holding cash and A positions.

The one kernel: an account of cash and A positions, cross-margined. The single-asset envs,
books and rollouts run ``A = 1`` of it (:mod:`coinrl.envs.single_kernel`; the pre-switch scalar
kernel is kept as an oracle in ``tests/envs/scalar_kernel.py``, and A = 1 equals it to the last
bit on random targets and bars). It shares :mod:`coinrl.envs.kernel`'s helpers (``_trade``,
``_size_order_eq``, ``_reward``), so the trade arithmetic, the order sizing and the rewards have
one implementation.

The code lives in three modules: :mod:`coinrl.envs.portfolio_bar` (the state layout and one bar
of the books: funding, gap liquidation, the rebalance, wick liquidation, borrow, mark),
:mod:`coinrl.envs.portfolio_obs` (the observation and the action map's projection) and this one
(the entry points the envs and books call, and their compilation). The helpers are registered
with ``register_jitable`` and inlined into the entry points compiled here.

numba's cache (``cache=True``) is keyed on the source file of each *entry point*; the helpers'
sources stamp it too (:mod:`coinrl.envs.kernel_cache`), so an edit to a helper module alone
never meets stale compiled code.
"""

from __future__ import annotations

import functools
import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt

from . import kernel
from .kernel import EQUITY, FEES, P_EQ_FLOOR, TURNOVER, _reward
from .portfolio_bar import (  # noqa: F401 - the layout, re-exported for the envs and tests
    A_AVG,
    A_BARS_HELD,
    A_FEES,
    A_FUNDING,
    A_MARK,
    A_QTY,
    A_REALISED,
    A_SLIPPAGE,
    A_TURNOVER,
    B_CLOSE,
    B_FUNDING,
    B_HIGH,
    B_LOW,
    B_OPEN,
    B_TRADABLE,
    B_VOLUME,
    BAD_ACTION,
    N_ACCT_ROWS,
    N_ASSET_ROWS,
    N_BAR_COLS,
    N_PF_ACCOUNT_FEATURES,
    PF_ACCOUNT_FEATURES,
    SCALE_LAST,
    SCALED,
    _close_all,
    _cost_frac,
    _fill,
    _fill_row,
    _pbar,
    _pbar1,
    new_state,
    row,
)
from .portfolio_obs import _first_bad, _pobserve, _project_row, clip_exposure, project_rows  # noqa: F401

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]


# ---------------------------------------------------------------------- entry points
def pf_books_step(s: F64, p: F64, pa: F64, w: F64, bars: F64, t: I64, liq_out: BoolArr) -> None:
    """One bar of every account ``j`` at its own bar ``t[j]`` toward weights ``w[j]`` (N, A)."""
    scratch = np.empty((4, pa.shape[0]))
    for j in range(s.shape[1]):
        liq_out[j] = _pbar(s, j, p, pa, w[j], bars, t[j], scratch)


def pf_env_step(
    s: F64, p: F64, pa: F64, bars: F64, feats: F32, out: F32, t: int, action: Any, project: bool,
    gross: float, net: float, allow_short: bool, row_: int, info: F64,
) -> float:
    """One PortfolioEnv step of account 0: the action to weights (``project``: the ActionMap's
    continuous map, :func:`project_rows`; else ``action`` already holds the weights), bar ``t``,
    the reward (returned), the observation for decision ``t`` into ``out[row_]``, the positions
    and weights into ``info[row_, :A]`` and ``info[row_, A:]``. A NaN/inf action entry: the
    state's ``BAD_ACTION`` row gets its asset index and nothing else happens; an action whose
    length is not A: ``BAD_ACTION`` is -2 and nothing happens."""
    return _env_step(s, p, pa, bars, feats, out, t, action, project, gross, net, allow_short,
                     row_, info, np.empty((4, pa.shape[0])))


def _env_step(
    s: F64, p: F64, pa: F64, bars: F64, feats: F32, out: F32, t: int, action: Any, project: bool,
    gross: float, net: float, allow_short: bool, row_: int, info: F64, scratch: F64,
) -> float:
    """:func:`pf_env_step` with a (4, A) work array (the env's, no allocation per step)."""
    n = pa.shape[0]
    if action.shape[0] != n:
        s[BAD_ACTION, 0] = -2.0
        return 0.0
    w = scratch[3]
    for a in range(n):
        w[a] = action[a]
    if project:
        bad = _first_bad(w)
        if bad >= 0:
            s[BAD_ACTION, 0] = bad
            return 0.0
        _project_row(w, gross, net, allow_short)
    s[BAD_ACTION, 0] = -1.0
    eq_prev = s[EQUITY, 0]
    to_prev = s[TURNOVER, 0]
    _pbar(s, 0, p, pa, w, bars, t, scratch)
    r = _reward(s, 0, p, eq_prev, s[EQUITY, 0], s[TURNOVER, 0] - to_prev)
    _pobserve(s, 0, p, pa, bars, feats, t, out, row_)
    eq = s[EQUITY, 0]
    floor = p[P_EQ_FLOOR]
    eqs = eq if eq > floor else floor
    for a in range(n):
        q = s[N_ACCT_ROWS + a * N_ASSET_ROWS + A_QTY, 0]
        info[row_, a] = q
        info[row_, n + a] = q * bars[t, a, B_CLOSE] / eqs
    return r


def context(
    state: F64, params: F64, pa: F64, bars: F64, feats: F32, out: F32, info: F64, amap: F64,
    scratch: F64,
) -> I64:
    """The int64 vector of :func:`pf_env_step_at`: the arrays' addresses and shapes (the caller
    keeps them alive and makes a new vector when it replaces one). ``amap`` is the action map's
    ``[gross, net, allow_short]``; ``scratch`` a (4, A) float64 work array.

    Raises:
        ValueError: an array of the wrong dtype, shape or layout (C-contiguous only).
    """
    for arr, dtype in ((state, np.float64), (params, np.float64), (pa, np.float64),
                       (bars, np.float64), (feats, np.float32), (out, np.float32),
                       (info, np.float64), (amap, np.float64), (scratch, np.float64)):
        if arr.dtype != dtype or not arr.flags.c_contiguous:
            raise ValueError(f"the kernel takes C-contiguous {np.dtype(dtype)} arrays, got {arr.dtype}")
    if state.shape[1] != 1 or params.shape != (kernel.N_PARAMS,) or pa.shape[1] != kernel.N_PARAMS:
        raise ValueError("one account's state, the params vector and the (A, N_PARAMS) matrix")
    n = pa.shape[0]
    if (bars.shape[1:] != (n, N_BAR_COLS) or info.shape != (out.shape[0], 2 * n)
            or amap.shape != (3,) or scratch.shape != (4, n)):
        raise ValueError(f"bars must be (T, {n}, {N_BAR_COLS}), info ({out.shape[0]}, {2 * n}), "
                         f"amap (3,), scratch (4, {n})")
    return np.array([state.ctypes.data, state.shape[0], params.ctypes.data, pa.ctypes.data, n,
                     bars.ctypes.data, bars.shape[0], feats.ctypes.data, feats.size,
                     out.ctypes.data, out.shape[0], out.shape[1], info.ctypes.data,
                     amap.ctypes.data, scratch.ctypes.data], dtype=np.int64)


def _f64_at2(address: int, n0: int, n1: int) -> F64:
    """The float64 ``(n0, n1)`` C array at ``address`` (compiled: a 2-D numba ``carray``, no
    ``reshape``: numba's reshape calls out to C, ~30 ns each, a third of an A = 1 step's work)."""
    return kernel._f64_at(address, n0 * n1).reshape((n0, n1))


def _f64_at3(address: int, n0: int, n1: int, n2: int) -> F64:
    """The float64 ``(n0, n1, n2)`` C array at ``address`` (as :func:`_f64_at2`)."""
    return kernel._f64_at(address, n0 * n1 * n2).reshape((n0, n1, n2))


def _f32_at2(address: int, n0: int, n1: int) -> F32:
    """The float32 ``(n0, n1)`` C array at ``address`` (as :func:`_f64_at2`)."""
    return kernel._f32_at(address, n0 * n1).reshape((n0, n1))


def _step_ctx(ctx: I64, t: int, action: Any, project: bool, row_: int) -> float:
    n = ctx[4]
    s = _f64_at2(ctx[0], ctx[1], 1)
    p = kernel._f64_at(ctx[2], kernel.N_PARAMS)
    pa = _f64_at2(ctx[3], n, kernel.N_PARAMS)
    bars = _f64_at3(ctx[5], ctx[6], n, N_BAR_COLS)
    feats = kernel._f32_at(ctx[7], ctx[8])
    out = _f32_at2(ctx[9], ctx[10], ctx[11])
    info = _f64_at2(ctx[12], ctx[10], 2 * n)
    am = kernel._f64_at(ctx[13], 3)
    scratch = _f64_at2(ctx[14], 4, n)
    return _env_step(s, p, pa, bars, feats, out, t, action, project, am[0], am[1], am[2] != 0.0,
                     row_, info, scratch)


def pf_env_step_at(ctx: I64, t: int, action: F32, row_: int) -> float:
    """:func:`pf_env_step` of a float32 continuous action (projected by the action map in the
    kernel), its arrays passed by address (:func:`context`): numba's dispatcher checks each
    argument of a call from Python, so four arguments cost about half of fifteen."""
    return _step_ctx(ctx, t, action, True, row_)


def pf_env_weights_at(ctx: I64, t: int, weights: F64, row_: int) -> float:
    """:func:`pf_env_step_at` given target weights already mapped by the ActionMap."""
    return _step_ctx(ctx, t, weights, False, row_)


def pf_observe(s: F64, p: F64, pa: F64, bars: F64, feats: F32, t: I64, out: F32, row0: int) -> None:
    """Observations of accounts ``0 .. len(t) - 1`` at decision rows ``t`` into ``out[row0 + j]``."""
    for j in range(t.shape[0]):
        _pobserve(s, j, p, pa, bars, feats, t[j], out, row0 + j)


def pf_vec_step(
    s: F64, p: F64, pa: F64, bars: F64, feats: F32, ts: I64, t: I64, last: I64, w: F64,
    fresh: BoolArr, done: BoolArr, liq_out: BoolArr, out: F32, rewards: F64,
    terminated: BoolArr, truncated: BoolArr, info_ts: I64, info_equity: F64, info_qty: F64,
    info_w: F64, info_fees: F64,
) -> int:
    """One PortfolioVectorEnv step of N envs (NEXT_STEP autoreset as
    :func:`coinrl.envs.kernel.vec_step`); returns how many ended. ``info_qty`` (positions) and
    ``info_w`` (weights at the closes) are (N, A).

    One pass, each account's observation right after its bar (while its state is in cache): a
    second pass for the observations measured no faster (interleaved, same process).
    """
    n = pa.shape[0]
    scratch = np.empty((4, n))
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
            te = _pbar(s, j, p, pa, w[j], bars, tj, scratch)
            r = _reward(s, j, p, eq_prev, s[EQUITY, j], s[TURNOVER, j] - to_prev)
            tr = tj >= last[j] and not te
        liq_out[j] = te
        rewards[j] = r
        terminated[j] = te
        truncated[j] = tr
        _pobserve(s, j, p, pa, bars, feats, tj, out, j)
        info_ts[j] = ts[tj]
        eq = s[EQUITY, j]
        info_equity[j] = eq
        eqs = eq if eq > p[P_EQ_FLOOR] else p[P_EQ_FLOOR]
        for a in range(n):
            q = s[N_ACCT_ROWS + a * N_ASSET_ROWS + A_QTY, j]
            info_qty[j, a] = q
            info_w[j, a] = q * bars[tj, a, B_CLOSE] / eqs
        info_fees[j] = s[FEES, j]
        d = te or tr
        done[j] = d
        if d:
            n_done += 1
    return n_done


_HELPERS = (_close_all, _fill_row, _fill, _cost_frac, _pbar1, _pbar, _pobserve, clip_exposure, _project_row, _first_bad,
            _env_step,
            pf_env_step, _step_ctx)
ENTRY_POINTS = ("pf_books_step", "pf_env_step", "pf_env_step_at", "pf_env_weights_at",
                "pf_observe", "pf_vec_step", "project_rows")


@functools.cache
def register() -> Any:
    """Register this kernel's helpers (and the scalar ones, :func:`coinrl.envs.kernel.register`)
    for inlining, and the 2-D/3-D address views; returns numba's ``njit`` (None without numba)."""
    njit = kernel.register()
    if njit is None:
        return None
    from numba import carray
    from numba.extending import overload, register_jitable

    for helper in _HELPERS:
        register_jitable(helper)
    void_ptr = kernel.void_ptr_intrinsic()

    def at2(dtype: Any) -> Any:
        def typer(address: Any, n0: Any, n1: Any) -> Any:
            def impl(address: Any, n0: Any, n1: Any) -> Any:
                return carray(void_ptr(address), (n0, n1), dtype)

            return impl

        return typer

    def at3(address: Any, n0: Any, n1: Any, n2: Any) -> Any:
        def impl(address: Any, n0: Any, n1: Any, n2: Any) -> Any:
            return carray(void_ptr(address), (n0, n1, n2), np.float64)

        return impl

    overload(_f64_at2)(at2(np.float64))
    overload(_f32_at2)(at2(np.float32))
    overload(_f64_at3)(at3)
    return njit


@functools.cache
def compiled() -> Any:
    """The entry points compiled by numba (no fastmath, cached next to this file), after the
    helpers are registered (:func:`register`); interpreted without numba (a warning)."""
    njit = register()
    if njit is None:
        return SimpleNamespace(**{name: globals()[name] for name in ENTRY_POINTS})
    from numba import types as nt

    state = nt.float64[:, ::1]
    params = nt.float64[::1]
    pmat = nt.float64[:, ::1]
    bars = nt.float64[:, :, ::1]
    feats = nt.float32[::1]
    out = nt.float32[:, ::1]
    f8, i8, b1 = nt.float64, nt.int64, nt.boolean
    f8v, i8v, b1v = nt.float64[::1], nt.int64[::1], nt.boolean[::1]
    sigs: dict[str, Any] = {
        "pf_books_step": nt.void(state, params, pmat, pmat, bars, i8v, b1v),
        "pf_env_step": [f8(state, params, pmat, bars, feats, out, i8, act, b1, f8, f8, b1, i8, pmat)
                        for act in (nt.float32[::1], f8v)],
        "pf_env_step_at": f8(i8v, i8, nt.float32[::1], i8),
        "pf_env_weights_at": f8(i8v, i8, f8v, i8),
        "project_rows": i8(pmat, f8, f8, b1),
        "pf_observe": nt.void(state, params, pmat, bars, feats, i8v, out, i8),
        "pf_vec_step": i8(state, params, pmat, bars, feats, i8v, i8v, i8v, pmat, b1v, b1v, b1v,
                          out, f8v, b1v, b1v, i8v, f8v, pmat, pmat, f8v),
    }
    return SimpleNamespace(**{
        name: njit(sig, cache=True)(globals()[name]) for name, sig in sigs.items()
    })
