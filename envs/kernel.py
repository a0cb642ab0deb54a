"""The kernel's shared parts: the account rows, the constants vector and the scalar rules.

There is one kernel: :mod:`coinrl.envs.portfolio_bar` steps one bar of an account holding cash
and A positions (``_pbar``), and every simulator runs it: the portfolio envs through
:mod:`coinrl.envs.portfolio_kernel`, the single-asset ones (:class:`~coinrl.envs.books.Account`,
:class:`~coinrl.envs.books.Books`, :class:`~coinrl.envs.trading_env.TradingEnv`,
:class:`~coinrl.envs.vector.TradingVectorEnv`, the rollouts' target loop) as ``A = 1`` of it
through :mod:`coinrl.envs.single_kernel`. This module holds what both read: the account rows of
the state matrix, the constants vector (:func:`make_params`), the trade arithmetic
(:func:`_trade`, :func:`coinrl.envs.domain.trade`), the order sizing (:func:`_size_order_eq`, also
what the exchange broker sizes live orders with), the rewards (:func:`_reward`,
:mod:`coinrl.envs.rewards`) and the single-asset account features (:func:`account_features`).
The tests hold them to independent numpy oracles bit for bit (``tests/envs/``).

Compilation: the entry points are compiled by numba ``njit`` with explicit signatures,
``cache=True`` and *no* ``fastmath`` (LLVM performs exactly the IEEE operations written: no
reassociation, no FMA contraction), so the compiled kernel equals the interpreted functions to
the last bit (tested). :func:`register` makes the helpers here inlinable into them; numba is
imported then, on the first env or books construction, not at ``import coinrl.envs``. Without
numba the same functions run interpreted (correct, ~100x slower; a warning says so).

Constants: a float64 vector ``params`` (:func:`make_params`); numbers that live in other modules
(``SHAVE``, ``MIN_VOLUME_BASE``, ``MIN_EQUITY_RATIO``) travel in it, so a change to them can never
meet stale compiled code.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
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

# ---------------------------------------------------------------------- account rows
CASH = 0
REALISED = 1
EQUITY = 2
FEES = 3
SLIPPAGE = 4
FUNDING = 5
BORROW = 6
TURNOVER = 7
SHORTFALL = 8
LIQUIDATED = 9
"""1.0 where the last bar liquidated the account, else 0.0."""
REWARD_A = 10
"""Reward state: the differential Sharpe's moving mean, or the drawdown reward's peak equity."""
REWARD_B = 11
"""Reward state: the differential Sharpe's moving second moment, or the last drawdown."""
N_ROWS = 12
"""Account rows; the portfolio kernel's own account rows and the asset rows follow
(:mod:`coinrl.envs.portfolio_bar`)."""

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
P_TURNOVER_PEN = 24
N_PARAMS = 25

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
    p[P_TURNOVER_PEN] = config.turnover_penalty
    return p


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


def _log_ratio(p: F64, eq_prev: float, eq_now: float) -> float:
    ratio = eq_now / eq_prev
    floor = p[P_MIN_RATIO]
    return math.log(floor if floor > ratio else ratio)


def _reward(s: F64, j: int, p: F64, eq_prev: float, eq_now: float, traded: float) -> float:
    """The reward of account ``j`` for one step (:mod:`coinrl.envs.rewards`, scalar forms), less
    the turnover term ``turnover_penalty * (traded / eq_prev)`` (``traded``: the step's filled
    notional, quote) when the penalty is positive (:func:`coinrl.envs.rewards.turnover_cost`)."""
    r = _kind_reward(s, j, p, eq_prev, eq_now)
    w = p[P_TURNOVER_PEN]
    if w > 0.0:
        r = r - w * (traded / eq_prev)
    return r


def _kind_reward(s: F64, j: int, p: F64, eq_prev: float, eq_now: float) -> float:
    """The reward of ``EnvConfig.reward`` for one step, updating its state in ``s``."""
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


def _f64_at(address: int, n: int) -> F64:
    """The ``n`` float64 values at ``address`` as an array (compiled: a numba ``carray``)."""
    return np.ctypeslib.as_array(ctypes.cast(int(address), ctypes.POINTER(ctypes.c_double)), shape=(n,))


def _i64_at(address: int, n: int) -> npt.NDArray[np.int64]:
    """The ``n`` int64 values at ``address`` as an array (compiled: a numba ``carray``)."""
    return np.ctypeslib.as_array(ctypes.cast(int(address), ctypes.POINTER(ctypes.c_int64)), shape=(n,))


def _f32_at(address: int, n: int) -> F32:
    """The ``n`` float32 values at ``address`` as an array (compiled: a numba ``carray``)."""
    return np.ctypeslib.as_array(ctypes.cast(int(address), ctypes.POINTER(ctypes.c_float)), shape=(n,))


_HELPERS = (_trade, _size_order_eq, _log_ratio, _kind_reward, _reward, account_features)


@functools.cache
def register() -> Any:
    """Register the helpers of this module for inlining into compiled entry points and give
    :func:`_f64_at`/:func:`_f32_at` their compiled forms (numba ``carray`` at an address).
    Returns numba's ``njit`` (imported here, once), or None without numba (and a warning)."""
    try:
        from numba import carray, njit
        from numba.extending import overload, register_jitable
    except ImportError:
        logger.warning("numba is not installed: the env kernel runs interpreted (same results, "
                       "~100x slower); pip install numba")
        return None
    from .kernel_cache import guard

    guard()  # a cached entry point is stale once any kernel source changes, not only its own
    for helper in _HELPERS:
        register_jitable(helper)
    void_ptr = void_ptr_intrinsic()

    def at(dtype: Any) -> Any:
        def typer(address: Any, n: Any) -> Any:
            def impl(address: Any, n: Any) -> Any:
                return carray(void_ptr(address), (n,), dtype)

            return impl

        return typer

    overload(_f64_at)(at(np.float64))
    overload(_f32_at)(at(np.float32))
    overload(_i64_at)(at(np.int64))
    return njit


@functools.cache
def void_ptr_intrinsic() -> Any:
    """The numba intrinsic turning an int64 address into a ``void*`` (for ``carray``), made once."""
    from numba import types as nt
    from numba.core import cgutils
    from numba.extending import intrinsic

    def void_ptr_typer(typingctx: Any, address: Any) -> Any:
        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            return builder.inttoptr(args[0], cgutils.voidptr_t)

        return nt.voidptr(nt.int64), codegen

    return intrinsic(void_ptr_typer)
