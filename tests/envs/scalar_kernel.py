"""The scalar single-asset kernel as it was before the envs moved onto A = 1 of the portfolio
kernel, kept as an independent oracle (interpreted Python, its own state layout).

``tests/envs/test_portfolio_kernel.py`` holds the single-asset entry points
(:mod:`coinrl.envs.single_kernel`) to these floats bit for bit on random bars and targets. Do not
"fix" it to match the kernel. Constants come from :func:`coinrl.envs.kernel.make_params` (the
params layout is shared).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from coinrl.envs.kernel import (
    P_ACCT_COL,
    P_BORROW,
    P_CAP,
    P_CHARGE_FUNDING,
    P_COST_FRAC,
    P_EQ_FLOOR,
    P_ETA,
    P_FEE,
    P_IMPACT,
    P_LEVERAGE,
    P_LOT,
    P_MAX_IMPACT,
    P_MIN_NOTIONAL,
    P_MIN_RATIO,
    P_MIN_VOLUME,
    P_MMR,
    P_N_FEATURES,
    P_PENALTY,
    P_REWARD,
    P_SHAVE,
    P_SHORT,
    P_SLIP,
    P_THRESHOLD,
    P_WINDOW,
)

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]

# ---------------------------------------------------------------------- state rows (its own layout)
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



def new_state(n: int, initial_cash_quote: float) -> F64:
    """A fresh state matrix ``(N_ROWS, n)``."""
    s = np.zeros((N_ROWS, n))
    s[CASH] = initial_cash_quote
    s[EQUITY] = initial_cash_quote
    return s


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
    """:func:`coinrl.envs.kernel._size_order_eq` at equity ``cash + qty * price``: the order (0 = none)."""
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
