"""The compiled env kernel: one bar of the books, the reward and the observation, per account.

Every env steps through these functions: :class:`~coinrl.envs.books.Account` (one account),
:class:`~coinrl.envs.books.Books` (N accounts), :class:`~coinrl.envs.trading_env.TradingEnv` (one
call per step, :func:`env_step_at`: books, reward and observation fused) and
:class:`~coinrl.envs.vector.TradingVectorEnv` (one call per step for all N envs, :func:`vec_step`). All of them run
the same per-account code (``_bar``, ``_reward``, ``_observe``), so a single env and a batched env
given the same actions give the same floats by construction.

The rules are those of :mod:`coinrl.envs.books` (the bar's order of events),
:mod:`coinrl.envs.execution` (sizing, exchange rules, costs), :func:`coinrl.envs.domain.trade`
and :mod:`coinrl.envs.rewards`, written out as scalar code on one account. The tests hold the
kernel to those reference forms bit for bit (``tests/envs/test_kernel.py``).

Compilation: :func:`compiled` hands out the entry points compiled by numba ``njit``, with
explicit signatures, ``cache=True`` and *no* ``fastmath``: LLVM then performs exactly the IEEE
operations written (no reassociation, no FMA contraction), so the compiled kernel equals the
interpreted functions of this module to the last bit (tested). numba is imported there, on the
first env or books construction, not at ``import coinrl.envs``; the machine code is cached next to
this file (``__pycache__``), so only the first construction after a change to this file compiles
(seconds). Without numba the same functions run interpreted (correct, ~100x slower; a warning
says so).

State: a float64 matrix ``(N_ROWS, N)``, one column per account, one row per field (the books
fields, the liquidation flag, the reward's state). Constants: a float64 vector ``params``
(:func:`make_params`); numbers that live in other modules (``SHAVE``, ``MIN_VOLUME_BASE``,
``MIN_EQUITY_RATIO``) travel in it, so a change to them can never meet stale compiled code.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt

from .config import EnvConfig
from .execution import MIN_VOLUME_BASE, SHAVE, ExecutionModel
from .rewards import MIN_EQUITY_RATIO

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]

# ---------------------------------------------------------------------- state rows
CASH = 0
QTY = 1
AVG_ENTRY = 2
REALISED = 3
EQUITY = 4
MARK = 5
FEES = 6
SLIPPAGE = 7
FUNDING = 8
BORROW = 9
TURNOVER = 10
SHORTFALL = 11
BARS_HELD = 12
LIQUIDATED = 13
"""1.0 where the last bar liquidated the account, else 0.0."""
REWARD_A = 14
"""Reward state: the differential Sharpe's moving mean, or the drawdown reward's peak equity."""
REWARD_B = 15
"""Reward state: the differential Sharpe's moving second moment, or the last drawdown."""
N_ROWS = 16

# ---------------------------------------------------------------------- params
P_MMR = 0
P_FEE = 1
P_SLIP = 2
P_IMPACT = 3
P_MAX_IMPACT = 4
P_MIN_NOTIONAL = 5
P_LOT = 6
P_THRESHOLD = 7
P_LEVERAGE = 8
P_SHORT = 9
P_COST_FRAC = 10
P_CAP = 11
P_BORROW = 12
P_CHARGE_FUNDING = 13
P_SHAVE = 14
P_MIN_VOLUME = 15
P_REWARD = 16
P_ETA = 17
P_PENALTY = 18
P_MIN_RATIO = 19
P_EQ_FLOOR = 20
P_WINDOW = 21
P_N_FEATURES = 22
P_ACCT_COL = 23
N_PARAMS = 24

# ---------------------------------------------------------------------- env_step_at context
CTX_STATE = 0
CTX_PARAMS = 1
CTX_BARS = 2
CTX_N_BARS = 3
CTX_FEATS = 4
CTX_N_FEATS = 5
CTX_OUT = 6
CTX_OUT_ROWS = 7
CTX_OUT_COLS = 8
N_CTX = 9

REWARD_CODES = {"log_return": 0, "simple_return": 1, "differential_sharpe": 2, "drawdown_penalised": 3}
"""``EnvConfig.reward`` -> the code the kernel branches on."""


def make_params(
    config: EnvConfig, *, n_features: int = 0, acct_col: int = 0, eq_floor_quote: float = 0.0
) -> F64:
    """The constants vector of the kernel for ``config``.

    Args:
        config: the env config (execution, account and reward settings).
        n_features: feature columns of the observation window (envs only).
        acct_col: column of the first account feature in the observation rows (envs only).
        eq_floor_quote: equity floor of the account features' denominators (envs only).
    """
    exe = ExecutionModel.from_config(config)
    p = np.zeros(N_PARAMS)
    p[P_MMR] = config.maintenance_margin_rate
    p[P_FEE] = exe.taker_fee_rate
    p[P_SLIP] = exe.slippage_frac
    p[P_IMPACT] = exe.impact_coef
    p[P_MAX_IMPACT] = exe.max_impact_frac
    p[P_MIN_NOTIONAL] = exe.min_notional_quote
    p[P_LOT] = exe.lot_size_base
    p[P_THRESHOLD] = exe.rebalance_threshold
    p[P_LEVERAGE] = exe.max_leverage
    p[P_SHORT] = 1.0 if exe.allow_short else 0.0
    p[P_COST_FRAC] = exe._cf
    p[P_CAP] = exe._k
    p[P_BORROW] = config.borrow_rate_per_bar
    p[P_CHARGE_FUNDING] = 1.0 if (config.use_funding and not config.is_spot) else 0.0
    p[P_SHAVE] = SHAVE
    p[P_MIN_VOLUME] = MIN_VOLUME_BASE
    p[P_REWARD] = REWARD_CODES[config.reward]
    p[P_ETA] = config.dsr_eta
    p[P_PENALTY] = config.drawdown_penalty
    p[P_MIN_RATIO] = MIN_EQUITY_RATIO
    p[P_EQ_FLOOR] = eq_floor_quote
    p[P_WINDOW] = config.window
    p[P_N_FEATURES] = n_features
    p[P_ACCT_COL] = acct_col
    return p


def new_state(n: int, initial_cash_quote: float) -> F64:
    """A fresh state matrix ``(N_ROWS, n)``: initial cash, no position, no costs."""
    s = np.zeros((N_ROWS, n))
    s[CASH] = initial_cash_quote
    s[EQUITY] = initial_cash_quote
    return s


def reset_reward_state(s: F64, idx: npt.NDArray[np.intp] | slice, params: F64) -> None:
    """Restart the reward state of accounts ``idx`` at their current equity (a new episode)."""
    if params[P_REWARD] == REWARD_CODES["drawdown_penalised"]:
        s[REWARD_A, idx] = s[EQUITY, idx]
    else:
        s[REWARD_A, idx] = 0.0
    s[REWARD_B, idx] = 0.0


# ---------------------------------------------------------------------- one account
def _trade(qty: float, avg_entry: float, dq: float, price: float) -> tuple[float, float, float]:
    """:func:`coinrl.envs.domain.trade`: ``(new_qty, new_avg_entry, realised)``."""
    new = qty + dq
    realised = 0.0
    if qty * dq < 0.0:
        adq = abs(dq)
        aq = abs(qty)
        r = (price - avg_entry) * (aq if aq < adq else adq)
        realised = r if qty > 0.0 else -r
    if new == 0.0:
        avg = 0.0
    elif qty * new <= 0.0:
        avg = price
    elif qty * dq > 0.0:
        avg = (avg_entry * abs(qty) + price * abs(dq)) / abs(new)
    else:
        avg = avg_entry
    return new, avg, realised


def _size_order(p: F64, target: float, cash: float, qty: float, price: float, volume: float) -> float:
    """:meth:`coinrl.envs.execution.ExecutionModel.size_order`: the order quantity (0 = none)."""
    return _size_order_eq(p, target, cash + qty * price, qty, price, volume)


def _size_order_eq(
    p: F64, target: float, equity: float, qty: float, price: float, volume: float
) -> float:
    """:func:`_size_order` given the account's ``equity`` (quote) at ``price`` (the portfolio
    kernel passes the whole account's equity; one asset: ``cash + qty * price``)."""
    eq_base = equity / price
    x = target * eq_base
    impact = p[P_IMPACT]
    if impact > 0.0:
        vol = p[P_MIN_VOLUME] if p[P_MIN_VOLUME] > volume else volume
        imp = impact * (abs(x - qty) / vol)
        max_imp = p[P_MAX_IMPACT]
        cf = p[P_COST_FRAC] + (max_imp if max_imp < imp else imp)
        lev = p[P_LEVERAGE]
        k = lev / (1.0 + lev * cf) * p[P_SHAVE]
    else:
        cf = p[P_COST_FRAC]
        k = p[P_CAP]
    cap = k * (eq_base + qty * cf)
    if x > cap:
        x = cap
    elif p[P_SHORT] != 0.0:
        low = -k * (eq_base - qty * cf)
        if x < low:
            x = low
    if x == 0.0:
        return -qty
    dq = x - qty
    lot = p[P_LOT]
    if lot > 0.0:
        dq = np.trunc(dq / lot) * lot
        if qty * (qty + dq) < 0.0 and x * qty >= 0.0:  # a flip by rounding: close exactly
            dq = -qty
    notional = abs(dq) * price
    if notional < p[P_MIN_NOTIONAL] or notional < p[P_THRESHOLD] * equity:
        return 0.0
    return dq


def _close(s: F64, j: int, p: F64, price: float) -> None:
    """Liquidate account ``j`` at ``price``: close, pay the taker fee, floor cash at 0."""
    q = s[QTY, j]
    new, avg, realised = _trade(q, s[AVG_ENTRY, j], -q, price)
    cash = s[CASH, j] + q * price
    notional = abs(q) * price
    fee = notional * p[P_FEE]
    cash = cash - fee
    short = 0.0 if 0.0 > -cash else -cash
    s[SHORTFALL, j] += short
    s[CASH, j] = cash + short
    s[FEES, j] += fee
    s[TURNOVER, j] += notional
    s[REALISED, j] += realised
    s[QTY, j] = new
    s[AVG_ENTRY, j] = avg


def _bar(
    s: F64, j: int, p: F64, target: float, o: float, h: float, lo: float, c: float, v: float,
    f: float,
) -> bool:
    """One bar of account ``j`` (:meth:`coinrl.envs.books.Books.step_bar`); True if liquidated."""
    mmr = p[P_MMR]
    cash = s[CASH, j]
    qty = s[QTY, j]
    qty_old = qty
    liq = False
    # 1. funding on the position held into the funding time, at the open
    if f != 0.0 and p[P_CHARGE_FUNDING] != 0.0:
        pay = f * qty * o
        cash -= pay
        s[FUNDING, j] += pay
        s[CASH, j] = cash
    # 2. gap through the liquidation price: close at the open
    if cash + (qty - mmr * abs(qty)) * o <= 0.0:
        _close(s, j, p, o)
        cash = s[CASH, j]
        qty = s[QTY, j]
        target = 0.0
        liq = True
    # 3. rebalance at the open
    dq = _size_order(p, target, cash, qty, o, v)
    if dq != 0.0:
        adq = abs(dq)
        notional = adq * o
        fee = notional * p[P_FEE]
        impact = p[P_IMPACT]
        if impact > 0.0:
            vol = p[P_MIN_VOLUME] if p[P_MIN_VOLUME] > v else v
            imp = impact * (adq / vol)
            max_imp = p[P_MAX_IMPACT]
            sf = p[P_SLIP] + (max_imp if max_imp < imp else imp)
        else:
            sf = p[P_SLIP]
        slip = notional * sf
        cash = cash - dq * o - fee - slip
        s[CASH, j] = cash
        s[FEES, j] += fee
        s[SLIPPAGE, j] += slip
        s[TURNOVER, j] += notional
        new, avg, realised = _trade(qty, s[AVG_ENTRY, j], dq, o)
        s[REALISED, j] += realised
        s[AVG_ENTRY, j] = avg
        qty = new
        s[QTY, j] = qty
    # 4. the adverse wick reaches the new position's liquidation price
    den = qty - mmr * abs(qty)
    adverse = lo if qty > 0.0 else h
    if cash + den * adverse <= 0.0:
        if den != 0.0:
            p_liq = -cash / den
            if qty > 0.0:
                px = o if o < p_liq else p_liq
            else:
                px = o if o > p_liq else p_liq
        else:
            px = o
        _close(s, j, p, px)
        cash = s[CASH, j]
        qty = s[QTY, j]
        liq = True
    # 5. borrow on short notional and negative cash
    rate = p[P_BORROW]
    if rate > 0.0:
        b = rate * ((0.0 if 0.0 > -qty else -qty) * c + (0.0 if 0.0 > -cash else -cash))
        cash -= b
        s[BORROW, j] += b
        s[CASH, j] = cash
    # 6. mark at the close; bars held: +1 while the direction holds, 1 on entry, 0 flat
    s[EQUITY, j] = cash + qty * c
    s[MARK, j] = c
    if qty_old * qty > 0.0:
        s[BARS_HELD, j] += 1.0
    else:
        s[BARS_HELD, j] = 1.0 if qty != 0.0 else 0.0
    s[LIQUIDATED, j] = 1.0 if liq else 0.0
    return liq


def _log_ratio(p: F64, eq_prev: float, eq_now: float) -> float:
    ratio = eq_now / eq_prev
    floor = p[P_MIN_RATIO]
    return math.log(floor if floor > ratio else ratio)


def _reward(s: F64, j: int, p: F64, eq_prev: float, eq_now: float) -> float:
    """The reward of account ``j`` for one step (:mod:`coinrl.envs.rewards`, scalar forms)."""
    kind = p[P_REWARD]
    if kind == 0.0:
        return _log_ratio(p, eq_prev, eq_now)
    if kind == 1.0:
        return (eq_now - eq_prev) / eq_prev
    if kind == 2.0:
        r = (eq_now - eq_prev) / eq_prev
        a = s[REWARD_A, j]
        b = s[REWARD_B, j]
        da = r - a
        db = r * r - b
        var = b - a * a
        d = (b * da - 0.5 * a * db) / (var * math.sqrt(var)) if var > 0.0 else 0.0
        eta = p[P_ETA]
        s[REWARD_A, j] = a + eta * da
        s[REWARD_B, j] = b + eta * db
        return d
    lr = _log_ratio(p, eq_prev, eq_now)
    peak = s[REWARD_A, j]
    if eq_now > peak:
        peak = eq_now
    s[REWARD_A, j] = peak
    dd = (peak - eq_now) / peak
    inc = dd - s[REWARD_B, j]
    pen = p[P_PENALTY] * (0.0 if 0.0 > inc else inc)
    s[REWARD_B, j] = dd
    return lr - pen


def account_features(
    qty: float, price: float, equity: float, avg_entry: float, bars_held: float, window: float,
    mmr: float, eq_floor: float,
) -> tuple[float, float, float, float]:
    """The 4 account features of the observation, from an account's state at ``price``.

    ``(exposure, unrealised PnL / equity, time in position, distance to liquidation)``, with
    equity floored at ``eq_floor`` (quote) in the denominators. Plain Python here (what
    :class:`~coinrl.live.live_env.LiveTradingEnv` calls); inlined into the compiled kernel.
    """
    eqs = equity if equity > eq_floor else eq_floor
    aq = abs(qty)
    den = abs(qty - mmr * aq) * price
    if den == 0.0:
        dist = 1.0
    else:
        dist = (equity - mmr * aq * price) / den
        if 0.0 > dist:
            dist = 0.0
        if dist > 1.0:
            dist = 1.0
    return (qty * price / eqs, (price - avg_entry) * qty / eqs, bars_held / (bars_held + window),
            dist)


def _observe(
    s: F64, j: int, p: F64, feats: F32, t: int, c: float, mkt_out: F32, acct_out: F32, row: int
) -> None:
    """Write account ``j``'s observation for decision bar ``t`` (close ``c``) into ``row``.

    The window (feature rows ``t - window + 1 .. t``, oldest first) goes to
    ``mkt_out[row, :window * F]``, the account features to ``acct_out[row, acct_col:acct_col + 4]``
    (see :mod:`coinrl.envs.trading_env`): exposure, unrealised PnL / equity, time in position,
    distance to liquidation.
    """
    w = p[P_WINDOW]
    exposure, upnl, in_position, dist = account_features(
        s[QTY, j], c, s[EQUITY, j], s[AVG_ENTRY, j], s[BARS_HELD, j], w, p[P_MMR], p[P_EQ_FLOOR]
    )
    col = int(p[P_ACCT_COL])
    acct_out[row, col] = exposure
    acct_out[row, col + 1] = upnl
    acct_out[row, col + 2] = in_position
    acct_out[row, col + 3] = dist
    wf = int(w) * int(p[P_N_FEATURES])
    end = (t + 1) * int(p[P_N_FEATURES])
    # slice first, then index with the loop counter (known >= 0): LLVM vectorises the copy
    src = feats[end - wf : end]
    dst = mkt_out[row]
    for k in range(wf):
        dst[k] = src[k]


# ---------------------------------------------------------------------- entry points
def books_step(
    s: F64, p: F64, liq_out: BoolArr, target: F64, o: F64, h: F64, lo: F64, c: F64, v: F64, f: F64
) -> None:
    """One bar of every account (:meth:`coinrl.envs.books.Books.step_bar`)."""
    for j in range(s.shape[1]):
        liq_out[j] = _bar(s, j, p, target[j], o[j], h[j], lo[j], c[j], v[j], f[j])


def account_step(s: F64, p: F64, target: float, o: float, h: float, lo: float, c: float, v: float, f: float) -> bool:
    """One bar of account 0 (:meth:`coinrl.envs.books.Account.step_bar`)."""
    return _bar(s, 0, p, target, o, h, lo, c, v, f)


def env_step(s: F64, p: F64, bars: F64, feats: F32, out: F32, t: int, target: float, row: int) -> float:
    """One TradingEnv step on account 0: the bar ``t`` (``bars[t]`` = open, high, low, close,
    volume, funding), the reward (returned), and the observation for decision ``t`` into
    ``out[row]`` (window, then the account features at ``acct_col``)."""
    eq_prev = s[EQUITY, 0]
    c = bars[t, 3]
    _bar(s, 0, p, target, bars[t, 0], bars[t, 1], bars[t, 2], c, bars[t, 4], bars[t, 5])
    r = _reward(s, 0, p, eq_prev, s[EQUITY, 0])
    _observe(s, 0, p, feats, t, c, out, out, row)
    return r


def _f64_at(address: int, n: int) -> F64:
    """The ``n`` float64 values at ``address`` as an array (compiled: a numba ``carray``)."""
    return np.ctypeslib.as_array(ctypes.cast(int(address), ctypes.POINTER(ctypes.c_double)), shape=(n,))


def _f32_at(address: int, n: int) -> F32:
    """The ``n`` float32 values at ``address`` as an array (compiled: a numba ``carray``)."""
    return np.ctypeslib.as_array(ctypes.cast(int(address), ctypes.POINTER(ctypes.c_float)), shape=(n,))


def context(state: F64, params: F64, bars: F64, feats: F32, out: F32) -> I64:
    """The int64 context vector of :func:`env_step_at`: where the arrays are, and their shapes.

    The kernel dereferences these addresses without checks: the caller keeps every array alive
    while the vector is in use and makes a new vector when it replaces one.

    Raises:
        ValueError: an array of the wrong dtype, shape or layout (C-contiguous only).
    """
    want = ((state, np.float64, (N_ROWS, 1)), (params, np.float64, (N_PARAMS,)),
            (bars, np.float64, (bars.shape[0], 6)), (feats, np.float32, (feats.size,)),
            (out, np.float32, (out.shape[0], out.shape[-1])))
    for a, dtype, shape in want:
        if a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
            raise ValueError(f"the kernel takes a C-contiguous {np.dtype(dtype)} array of shape "
                             f"{shape}, got {a.dtype} {a.shape} (C-contiguous: {a.flags.c_contiguous})")
    ctx = np.zeros(N_CTX, dtype=np.int64)
    ctx[CTX_STATE] = state.ctypes.data
    ctx[CTX_PARAMS] = params.ctypes.data
    ctx[CTX_BARS] = bars.ctypes.data
    ctx[CTX_N_BARS] = bars.shape[0]
    ctx[CTX_FEATS] = feats.ctypes.data
    ctx[CTX_N_FEATS] = feats.size
    ctx[CTX_OUT] = out.ctypes.data
    ctx[CTX_OUT_ROWS] = out.shape[0]
    ctx[CTX_OUT_COLS] = out.shape[1]
    return ctx


def env_step_at(ctx: I64, t: int, target: float, row: int) -> float:
    """:func:`env_step` with its arrays passed by address (see :func:`context`).

    The TradingEnv calls this once per step: numba's dispatcher spends ~60 ns on each array
    argument of a call from Python (it checks its type), ~0.2 us of a ~1.5 us step for the five
    arrays; one int64 vector costs as much as one.
    """
    s = _f64_at(ctx[CTX_STATE], N_ROWS).reshape((N_ROWS, 1))
    p = _f64_at(ctx[CTX_PARAMS], N_PARAMS)
    bars = _f64_at(ctx[CTX_BARS], ctx[CTX_N_BARS] * 6).reshape((ctx[CTX_N_BARS], 6))
    feats = _f32_at(ctx[CTX_FEATS], ctx[CTX_N_FEATS])
    n_out = ctx[CTX_OUT_ROWS] * ctx[CTX_OUT_COLS]
    out = _f32_at(ctx[CTX_OUT], n_out).reshape((ctx[CTX_OUT_ROWS], ctx[CTX_OUT_COLS]))
    return env_step(s, p, bars, feats, out, t, target, row)


def observe(s: F64, p: F64, bars: F64, feats: F32, t: I64, mkt_out: F32, acct_out: F32, row0: int) -> None:
    """Observations of accounts ``0 .. len(t) - 1`` at their decision rows ``t``, into rows
    ``row0 + j``."""
    for j in range(t.shape[0]):
        _observe(s, j, p, feats, t[j], bars[t[j], 3], mkt_out, acct_out, row0 + j)


def vec_step(
    s: F64, p: F64, bars: F64, feats: F32, ts: I64, t: I64, last: I64, target: F64,
    fresh: BoolArr, done: BoolArr, liq_out: BoolArr, mkt_out: F32, acct_out: F32,
    rewards: F64, terminated: BoolArr, truncated: BoolArr,
    info_ts: I64, info_equity: F64, info_position: F64, info_fees: F64,
) -> int:
    """One TradingVectorEnv step of N envs; returns how many ended (terminated or truncated).

    Env ``j`` with ``fresh[j]`` was reset before this call (NEXT_STEP autoreset): its action is
    ignored and it reports its first observation with reward 0 and both flags False. Every other
    env plays bar ``t[j] + 1`` (``t`` is advanced in place). ``done`` may be ``fresh`` itself.
    """
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
            te = _bar(s, j, p, target[j], bars[tj, 0], bars[tj, 1], bars[tj, 2], bars[tj, 3],
                      bars[tj, 4], bars[tj, 5])
            r = _reward(s, j, p, eq_prev, s[EQUITY, j])
            tr = tj >= last[j] and not te
        liq_out[j] = te
        rewards[j] = r
        terminated[j] = te
        truncated[j] = tr
        _observe(s, j, p, feats, tj, bars[tj, 3], mkt_out, acct_out, j)
        info_ts[j] = ts[tj]
        info_equity[j] = s[EQUITY, j]
        info_position[j] = s[QTY, j]
        info_fees[j] = s[FEES, j]
        d = te or tr
        done[j] = d
        if d:
            n_done += 1
    return n_done


# ---------------------------------------------------------------------- compilation
_HELPERS = (
    _trade, _size_order_eq, _size_order, _close, _bar, _log_ratio, _reward, account_features, _observe, env_step
)
ENTRY_POINTS = ("books_step", "account_step", "env_step", "env_step_at", "observe", "vec_step")


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
    """The entry points compiled by numba, as a namespace: ``books_step``, ``account_step``,
    ``env_step``, ``env_step_at``, ``observe``, ``vec_step``. numba is imported on the first
    call, and each entry point compiled (or loaded from the cache) on its first use, so an env
    pays only for those it calls. Without numba, the interpreted functions of this module (and a
    warning).

    The helpers are registered with ``register_jitable``, so the compiled entry points inline
    them while the module-level functions stay plain Python: the interpreted reference.
    """
    try:
        from numba import carray, njit
        from numba import types as nt
        from numba.core import cgutils
        from numba.extending import intrinsic, overload, register_jitable
    except ImportError:
        logger.warning("numba is not installed: the env kernel runs interpreted (same results, "
                       "~100x slower); pip install numba")
        return SimpleNamespace(**{name: globals()[name] for name in ENTRY_POINTS})
    for helper in _HELPERS:
        register_jitable(helper)

    def void_ptr_typer(typingctx: Any, address: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], cgutils.voidptr_t)

        return nt.voidptr(nt.int64), codegen

    void_ptr: Any = intrinsic(void_ptr_typer)  # an int64 address as a void*, for carray

    def at(dtype: Any) -> Any:
        def typer(address: Any, n: Any) -> Any:
            def impl(address: Any, n: Any) -> Any:
                return carray(void_ptr(address), (n,), dtype)

            return impl

        return typer

    overload(_f64_at)(at(np.float64))
    overload(_f32_at)(at(np.float32))
    # Writeable C-contiguous arrays everywhere the envs call per step: numba's dispatcher types
    # those in its C fast path (a read-only array costs ~65 ns more per argument per call). The
    # kernel reads bars, features and params only; the envs own those arrays and never hand
    # them out writeable.
    state = nt.float64[:, ::1]
    params = nt.float64[::1]
    vec = nt.Array(nt.float64, 1, "A", readonly=True)  # Books.step_bar: any array, any layout
    bars = nt.float64[:, ::1]
    feats = nt.float32[::1]
    ts = nt.int64[::1]
    out = nt.float32[:, ::1]
    f8, i8, b1 = nt.float64, nt.int64, nt.boolean
    f8v, i8v, b1v = nt.float64[::1], nt.int64[::1], nt.boolean[::1]
    sigs = {
        "books_step": nt.void(state, params, b1v, vec, vec, vec, vec, vec, vec, vec),
        "account_step": b1(state, params, f8, f8, f8, f8, f8, f8, f8),
        "env_step": f8(state, params, bars, feats, out, i8, f8, i8),
        "env_step_at": f8(i8v, i8, f8, i8),
        "observe": nt.void(state, params, bars, feats, i8v, out, out, i8),
        "vec_step": i8(state, params, bars, feats, ts, i8v, i8v, f8v, b1v, b1v, b1v, out, out,
                       f8v, b1v, b1v, i8v, f8v, f8v, f8v),
    }
    return _Compiled(njit, sigs)
