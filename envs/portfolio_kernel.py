"""The compiled portfolio kernel: one bar of an account holding cash and A positions.

The asset-axis generalisation of :mod:`coinrl.envs.kernel`: the same rules, per asset, on one
cross-margined account. With ``A = 1`` it performs the scalar kernel's floating-point operations
in the same order, so its books, fills and rewards equal :func:`coinrl.envs.kernel._bar`'s to the
last bit (``tests/envs/test_portfolio_kernel.py`` holds it to that on random targets and bars).
It shares the scalar kernel's helpers (``_trade``, ``_size_order_eq``, ``_reward``), so the
trade arithmetic, the order sizing and the rewards have one implementation.

Plan (stated so the two do not drift): this session lands the portfolio kernel beside the
scalar one and proves ``A = 1`` equal to it; the next one switches ``TradingEnv``, ``Books`` and
the vector env to ``A = 1`` of this kernel and deletes the scalar ``_bar``.

One bar of account ``j`` (decision taken at the previous close), per asset ``a`` in asset order:

1. **Funding** at the open on each position held into a funding time:
   ``pay_a = funding_a * qty_a * open_a`` (longs pay positive rates); none on an untradable bar.
2. **Gap liquidation** (cross margin): if ``cash + sum_a (qty_a - mmr_a |qty_a|) open_a <= 0``
   every position is closed at its open, taker fee charged; cash floors at 0 and the uncovered
   loss goes to ``shortfall`` (the loss is capped at the account's margin).
3. **Rebalance** at the open toward target weights ``w_a`` (position notional / equity at the
   open). Per asset: the scalar kernel's sizing (its buying-power cap as if the asset were alone,
   lot rounding, min notional, rebalance threshold against the account's equity). With A > 1
   the account's gross budget is then checked with every asset's costs:
   ``sum |x_a| open_a <= L (E - sum cf_a |x_a - qty_a| open_a)``; a rebalance that breaks it is
   scaled down (all targets times ``lambda``, the closed form below) and counted in
   ``SCALED`` (``SCALE_LAST`` holds ``lambda``), never skipped. Sells fill before buys.
   An asset whose ``tradable`` flag is 0 on this bar is not traded (its position is kept and
   marked at the bar's prices, which the data holds at its last tradable close). Only a
   liquidation (2, 4) touches it: every position is closed, a masked one at that price.
4. **Wick liquidation**: every position at its adverse extreme within the bar (low for longs,
   high for shorts): if ``cash + sum_a (qty_a - mmr_a |qty_a|) adverse_a <= 0`` the account is
   liquidated. One open position: at its liquidation price ``-cash / (qty - mmr |qty|)`` (the
   open if already beyond it), as the scalar kernel. Several: at the first point of the path on
   which every asset moves the same fraction ``theta`` of the way from its open to its adverse
   extreme and the maintenance margin is met; ``price_a = open_a + theta (adverse_a - open_a)``.
5. **Borrow**: ``rate * (sum_a short notional_a at the close + negative cash)``.
6. **Mark** at the closes: ``equity = cash + sum_a qty_a close_a``.

``lambda`` (step 3): with ``G = sum |x_a| o_a``, ``Gc = sum cf_a |x_a| o_a`` and
``Q = sum cf_a |qty_a| o_a``, the costs are at most ``lambda Gc + Q``, so
``lambda = L (E - Q) / (G + L Gc)`` (times ``SHAVE``, clipped to [0, 1]) keeps the budget.

State: a float64 matrix ``(N_ACCT_ROWS + A * N_ASSET_ROWS, N)``. The account rows reuse the
scalar kernel's row numbers (``CASH``, ``EQUITY``, ``FEES`` ... ``REWARD_B``) so its reward code
runs unchanged; the account's ``QTY``/``AVG_ENTRY``/``MARK``/``BARS_HELD`` rows are unused.
Asset ``a``'s rows start at ``N_ACCT_ROWS + a * N_ASSET_ROWS``. Params: the scalar kernel's
vector (account-wide: leverage, shorting, borrow, reward, observation layout) plus a matrix
``(A, N_PARAMS)`` of per-asset vectors (fees, slippage, impact, lot, min notional, mmr).

Bars: float64 ``(T, A, 7)``: open, high, low, close, volume, funding, tradable (1.0/0.0).
"""

from __future__ import annotations

import functools
import logging
import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt

from . import kernel
from .kernel import (
    BORROW,
    CASH,
    EQUITY,
    FEES,
    FUNDING,
    LIQUIDATED,
    N_ROWS,
    P_BORROW,
    P_CHARGE_FUNDING,
    P_COST_FRAC,
    P_EQ_FLOOR,
    P_FEE,
    P_IMPACT,
    P_LEVERAGE,
    P_LOT,
    P_MAX_IMPACT,
    P_MIN_NOTIONAL,
    P_MIN_VOLUME,
    P_MMR,
    P_N_FEATURES,
    P_SHAVE,
    P_SLIP,
    P_THRESHOLD,
    P_WINDOW,
    REALISED,
    SHORTFALL,
    SLIPPAGE,
    TURNOVER,
    _reward,
    _size_order_eq,
    _trade,
)

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]

# ---------------------------------------------------------------------- account rows
SCALED = N_ROWS
"""Rebalances scaled down to fit the gross budget, so far (a count)."""
SCALE_LAST = N_ROWS + 1
"""The last bar's scale factor ``lambda`` (1.0 when the rebalance fitted)."""
BAD_ACTION = N_ROWS + 2
"""-1.0, or the index of the asset whose action was NaN/inf in the last env step (no step)."""
N_ACCT_ROWS = N_ROWS + 3

# ---------------------------------------------------------------------- asset rows (offsets)
A_QTY = 0
A_AVG = 1
A_REALISED = 2
A_MARK = 3
A_FEES = 4
A_SLIPPAGE = 5
A_FUNDING = 6
A_TURNOVER = 7
A_BARS_HELD = 8
N_ASSET_ROWS = 9

# ---------------------------------------------------------------------- bar columns
B_OPEN, B_HIGH, B_LOW, B_CLOSE, B_VOLUME, B_FUNDING, B_TRADABLE = range(7)
N_BAR_COLS = 7
N_PF_ACCOUNT_FEATURES = 4
PF_ACCOUNT_FEATURES = ("cash_frac", "gross_exposure", "margin_ratio", "distance_to_liquidation")


def row(a: int, field: int) -> int:
    """State row of ``field`` (an ``A_*`` offset) of asset ``a``."""
    return N_ACCT_ROWS + a * N_ASSET_ROWS + field


def new_state(n: int, n_assets: int, initial_cash_quote: float) -> F64:
    """A fresh state matrix for ``n`` accounts of ``n_assets`` assets: cash, no positions."""
    s = np.zeros((N_ACCT_ROWS + n_assets * N_ASSET_ROWS, n))
    s[CASH] = initial_cash_quote
    s[EQUITY] = initial_cash_quote
    s[SCALE_LAST] = 1.0
    s[BAD_ACTION] = -1.0
    return s


# ---------------------------------------------------------------------- one account
def _close_all(s: F64, j: int, pa: F64, n: int, px: F64) -> None:
    """Liquidate account ``j``: close every position at ``px[a]`` with the taker fee, then
    floor cash at 0 (the rest is shortfall). One asset: the scalar kernel's ``_close``."""
    cash = s[CASH, j]
    for a in range(n):
        r = N_ACCT_ROWS + a * N_ASSET_ROWS
        q = s[r + A_QTY, j]
        price = px[a]
        new, avg, realised = _trade(q, s[r + A_AVG, j], -q, price)
        cash = cash + q * price
        notional = abs(q) * price
        fee = notional * pa[a, P_FEE]
        cash = cash - fee
        s[FEES, j] += fee
        s[TURNOVER, j] += notional
        s[REALISED, j] += realised
        s[r + A_FEES, j] += fee
        s[r + A_TURNOVER, j] += notional
        s[r + A_REALISED, j] += realised
        s[r + A_QTY, j] = new
        s[r + A_AVG, j] = avg
    short = 0.0 if 0.0 > -cash else -cash
    s[SHORTFALL, j] += short
    s[CASH, j] = cash + short


def _fill(s: F64, j: int, pa: F64, a: int, dq: float, o: float, v: float, cash: float) -> float:
    """Fill ``dq`` of asset ``a`` at ``o`` (volume ``v``); returns the new cash."""
    r = N_ACCT_ROWS + a * N_ASSET_ROWS
    p = pa[a]
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
    s[r + A_FEES, j] += fee
    s[r + A_SLIPPAGE, j] += slip
    s[r + A_TURNOVER, j] += notional
    new, avg, realised = _trade(s[r + A_QTY, j], s[r + A_AVG, j], dq, o)
    s[REALISED, j] += realised
    s[r + A_REALISED, j] += realised
    s[r + A_AVG, j] = avg
    s[r + A_QTY, j] = new
    return cash


def _cost_frac(p: F64, dq: float, v: float) -> float:
    """Cost fraction (fee + slippage + impact) of trading ``dq`` on a bar of volume ``v``."""
    impact = p[P_IMPACT]
    if impact > 0.0:
        vol = p[P_MIN_VOLUME] if p[P_MIN_VOLUME] > v else v
        imp = impact * (abs(dq) / vol)
        max_imp = p[P_MAX_IMPACT]
        return p[P_COST_FRAC] + (max_imp if max_imp < imp else imp)
    return p[P_COST_FRAC]


def _pbar(s: F64, j: int, p: F64, pa: F64, w: F64, bars: F64, t: int, scratch: F64) -> bool:
    """One bar ``t`` of account ``j`` toward target weights ``w`` (A,); True if liquidated.

    ``scratch`` is a (3, A) work array (no allocation per bar).
    """
    n = pa.shape[0]
    base = N_ACCT_ROWS
    dq = scratch[0]
    px = scratch[1]
    q0 = scratch[2]
    for a in range(n):
        q0[a] = s[base + a * N_ASSET_ROWS + A_QTY, j]
    cash = s[CASH, j]
    liq = False
    # 1. funding at the open
    if p[P_CHARGE_FUNDING] != 0.0:
        for a in range(n):
            f = bars[t, a, B_FUNDING]
            if f != 0.0 and bars[t, a, B_TRADABLE] != 0.0:
                r = base + a * N_ASSET_ROWS
                pay = f * s[r + A_QTY, j] * bars[t, a, B_OPEN]
                cash -= pay
                s[FUNDING, j] += pay
                s[r + A_FUNDING, j] += pay
                s[CASH, j] = cash
    # 2. gap through the account's liquidation point: close everything at the open
    m = cash
    for a in range(n):
        r = base + a * N_ASSET_ROWS
        q = s[r + A_QTY, j]
        m = m + (q - pa[a, P_MMR] * abs(q)) * bars[t, a, B_OPEN]
    flat = False
    if m <= 0.0:
        for a in range(n):
            px[a] = bars[t, a, B_OPEN]
        _close_all(s, j, pa, n, px)
        cash = s[CASH, j]
        liq = True
        flat = True
    # 3. rebalance at the open: size each asset, check the gross budget, sells before buys
    equity = cash
    for a in range(n):
        equity = equity + s[base + a * N_ASSET_ROWS + A_QTY, j] * bars[t, a, B_OPEN]
    s[SCALE_LAST, j] = 1.0
    for a in range(n):
        r = base + a * N_ASSET_ROWS
        q = s[r + A_QTY, j]
        if flat or bars[t, a, B_TRADABLE] == 0.0:
            dq[a] = 0.0
        else:
            dq[a] = _size_order_eq(pa[a], w[a], equity, q, bars[t, a, B_OPEN], bars[t, a, B_VOLUME])
    if n > 1 and not flat:
        lev = p[P_LEVERAGE]
        gross = 0.0
        cost = 0.0
        gross_c = 0.0
        held_c = 0.0
        for a in range(n):
            r = base + a * N_ASSET_ROWS
            q = s[r + A_QTY, j]
            o = bars[t, a, B_OPEN]
            cf = _cost_frac(pa[a], dq[a], bars[t, a, B_VOLUME])
            x = q + dq[a]
            gross += abs(x) * o
            cost += cf * abs(dq[a]) * o
            gross_c += cf * abs(x) * o
            held_c += cf * abs(q) * o
        if gross > lev * (equity - cost):
            lam = lev * (equity - held_c) / (gross + lev * gross_c) * p[P_SHAVE]
            lam = 0.0 if lam < 0.0 else (1.0 if lam > 1.0 else lam)
            s[SCALE_LAST, j] = lam
            s[SCALED, j] += 1.0
            for a in range(n):
                r = base + a * N_ASSET_ROWS
                if bars[t, a, B_TRADABLE] == 0.0:
                    continue
                q = s[r + A_QTY, j]
                o = bars[t, a, B_OPEN]
                x = lam * (q + dq[a])
                d = x - q
                lot = pa[a, P_LOT]
                if lot > 0.0:
                    d = np.trunc(d / lot) * lot
                notional = abs(d) * o
                if x == 0.0:
                    d = -q
                elif notional < pa[a, P_MIN_NOTIONAL] or notional < p[P_THRESHOLD] * equity:
                    d = 0.0
                dq[a] = d
    for side in range(2):  # sells (dq < 0) first, then buys
        for a in range(n):
            d = dq[a]
            if (side == 0 and d < 0.0) or (side == 1 and d > 0.0):
                cash = _fill(s, j, pa, a, d, bars[t, a, B_OPEN], bars[t, a, B_VOLUME], cash)
    # 4. every position at its adverse extreme within the bar
    m = cash
    n_open = 0
    last = 0
    for a in range(n):
        r = base + a * N_ASSET_ROWS
        q = s[r + A_QTY, j]
        den = q - pa[a, P_MMR] * abs(q)
        adverse = bars[t, a, B_LOW] if q > 0.0 else bars[t, a, B_HIGH]
        m = m + den * adverse
        if den != 0.0:
            n_open += 1
            last = a
    if m <= 0.0:
        for a in range(n):
            px[a] = bars[t, a, B_OPEN]
        if n_open == 1:
            r = base + last * N_ASSET_ROWS
            q = s[r + A_QTY, j]
            den = q - pa[last, P_MMR] * abs(q)
            o = bars[t, last, B_OPEN]
            p_liq = -cash / den
            if q > 0.0:
                px[last] = o if o < p_liq else p_liq
            else:
                px[last] = o if o > p_liq else p_liq
        elif n_open > 1:
            m0 = cash
            dm = 0.0
            for a in range(n):
                r = base + a * N_ASSET_ROWS
                q = s[r + A_QTY, j]
                den = q - pa[a, P_MMR] * abs(q)
                o = bars[t, a, B_OPEN]
                adverse = bars[t, a, B_LOW] if q > 0.0 else bars[t, a, B_HIGH]
                m0 = m0 + den * o
                dm = dm + den * (adverse - o)
            theta = 0.0
            if m0 > 0.0 and dm < 0.0:
                theta = -m0 / dm
                theta = 1.0 if theta > 1.0 else theta
            for a in range(n):
                q = s[base + a * N_ASSET_ROWS + A_QTY, j]
                o = bars[t, a, B_OPEN]
                adverse = bars[t, a, B_LOW] if q > 0.0 else bars[t, a, B_HIGH]
                px[a] = o + theta * (adverse - o)
        _close_all(s, j, pa, n, px)
        cash = s[CASH, j]
        liq = True
    # 5. borrow on short notional and negative cash
    rate = p[P_BORROW]
    if rate > 0.0:
        short = 0.0
        for a in range(n):
            q = s[base + a * N_ASSET_ROWS + A_QTY, j]
            short = short + (0.0 if 0.0 > -q else -q) * bars[t, a, B_CLOSE]
        b = rate * (short + (0.0 if 0.0 > -cash else -cash))
        cash -= b
        s[BORROW, j] += b
        s[CASH, j] = cash
    # 6. mark at the closes; bars held per asset
    eq = cash
    for a in range(n):
        r = base + a * N_ASSET_ROWS
        q = s[r + A_QTY, j]
        c = bars[t, a, B_CLOSE]
        eq = eq + q * c
        s[r + A_MARK, j] = c
        if q0[a] * q > 0.0:
            s[r + A_BARS_HELD, j] += 1.0
        else:
            s[r + A_BARS_HELD, j] = 1.0 if q != 0.0 else 0.0
    s[EQUITY, j] = eq
    s[LIQUIDATED, j] = 1.0 if liq else 0.0
    return liq


def _pobserve(s: F64, j: int, p: F64, pa: F64, bars: F64, feats: F32, t: int, out: F32, row_: int) -> None:
    """Account ``j``'s observation for decision bar ``t`` into ``out[row_]``.

    Layout: the window of feature rows ``t - window + 1 .. t`` (each row: asset 0's features,
    ..., asset A-1's, then the market-wide ones), then the A weights ``qty_a close_a / equity``,
    then the account features: cash / equity, gross exposure, margin ratio (maintenance margin
    / equity, clipped to [0, 1]) and distance to liquidation (the fraction every price must move
    against its position to reach the account's liquidation point, clipped to [0, 1]; 1 when
    flat). Equity is floored at ``eq_floor`` in the denominators.
    """
    n = pa.shape[0]
    w = int(p[P_WINDOW])
    nf = int(p[P_N_FEATURES])
    wf = w * nf
    src = feats[(t + 1 - w) * nf : (t + 1) * nf]
    dst = out[row_]
    for k in range(wf):
        dst[k] = src[k]
    equity = s[EQUITY, j]
    floor = p[P_EQ_FLOOR]
    eqs = equity if equity > floor else floor
    gross = 0.0
    mm = 0.0
    den = 0.0
    for a in range(n):
        q = s[N_ACCT_ROWS + a * N_ASSET_ROWS + A_QTY, j]
        c = bars[t, a, B_CLOSE]
        dst[wf + a] = q * c / eqs
        aq = abs(q)
        gross += aq * c
        mm += pa[a, P_MMR] * aq * c
        den += abs(q - pa[a, P_MMR] * aq) * c
    col = wf + n
    dst[col] = s[CASH, j] / eqs
    dst[col + 1] = gross / eqs
    ratio = mm / eqs
    dst[col + 2] = 0.0 if ratio < 0.0 else (1.0 if ratio > 1.0 else ratio)
    if den == 0.0:
        dist = 1.0
    else:
        dist = (equity - mm) / den
        dist = 0.0 if dist < 0.0 else (1.0 if dist > 1.0 else dist)
    dst[col + 3] = dist


# ---------------------------------------------------------------------- action map
def _project_row(y: F64, gross: float, net: float, allow_short: bool) -> None:
    """One row of :func:`project_rows`, in place (entries known finite)."""
    a_n = y.shape[0]
    if a_n == 1:
        lo = -gross if allow_short else 0.0
        hi = gross if gross < net else net
        v = y[0]
        y[0] = hi if v > hi else (lo if v < lo else v)
        return
    g = 0.0
    t = 0.0
    for a in range(a_n):
        v = y[a]
        if not allow_short and v < 0.0:
            v = 0.0
            y[a] = 0.0
        g += abs(v)
        t += v
    scale = 1.0
    if g > gross:
        scale = gross / g
    if abs(t) > net:
        k = net / abs(t)
        scale = k if k < scale else scale
    if scale != 1.0:
        for a in range(a_n):
            y[a] = y[a] * scale


def _first_bad(y: F64) -> int:
    """Flat index of the first NaN/inf of ``y`` (1-D), or -1."""
    for a in range(y.shape[0]):
        v = y[a]
        if v != v or v == math.inf or v == -math.inf:
            return a
    return -1


def project_rows(y: F64, gross: float, net: float, allow_short: bool) -> int:
    """:class:`~coinrl.envs.actions.ActionMap`'s continuous map, in place on rows of ``y``
    (N, A): negatives to 0 without shorting, then radial scaling onto ``sum |w| <= gross`` and
    ``|sum w| <= net``; one asset: the clip to ``[lo, min(gross, net)]``. Returns -1, or the
    flat index of the first NaN/inf entry (nothing is changed then)."""
    n, a_n = y.shape
    for i in range(n):
        bad = _first_bad(y[i])
        if bad >= 0:
            return i * a_n + bad
    for i in range(n):
        _project_row(y[i], gross, net, allow_short)
    return -1


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
    state's ``BAD_ACTION`` row gets its asset index and nothing else happens."""
    n = pa.shape[0]
    scratch = np.empty((4, n))
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
    _pbar(s, 0, p, pa, w, bars, t, scratch)
    r = _reward(s, 0, p, eq_prev, s[EQUITY, 0])
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
    state: F64, params: F64, pa: F64, bars: F64, feats: F32, out: F32, info: F64, amap: F64
) -> I64:
    """The int64 vector of :func:`pf_env_step_at`: the arrays' addresses and shapes (the caller
    keeps them alive and makes a new vector when it replaces one). ``amap`` is the action map's
    ``[gross, net, allow_short]``.

    Raises:
        ValueError: an array of the wrong dtype, shape or layout (C-contiguous only).
    """
    for arr, dtype in ((state, np.float64), (params, np.float64), (pa, np.float64),
                       (bars, np.float64), (feats, np.float32), (out, np.float32),
                       (info, np.float64), (amap, np.float64)):
        if arr.dtype != dtype or not arr.flags.c_contiguous:
            raise ValueError(f"the kernel takes C-contiguous {np.dtype(dtype)} arrays, got {arr.dtype}")
    if state.shape[1] != 1 or params.shape != (kernel.N_PARAMS,) or pa.shape[1] != kernel.N_PARAMS:
        raise ValueError("one account's state, the params vector and the (A, N_PARAMS) matrix")
    n = pa.shape[0]
    if bars.shape[1:] != (n, N_BAR_COLS) or info.shape != (out.shape[0], 2 * n) or amap.shape != (3,):
        raise ValueError(f"bars must be (T, {n}, {N_BAR_COLS}), info ({out.shape[0]}, {2 * n}), amap (3,)")
    return np.array([state.ctypes.data, state.shape[0], params.ctypes.data, pa.ctypes.data, n,
                     bars.ctypes.data, bars.shape[0], feats.ctypes.data, feats.size,
                     out.ctypes.data, out.shape[0], out.shape[1], info.ctypes.data,
                     amap.ctypes.data], dtype=np.int64)


def _step_ctx(ctx: I64, t: int, action: Any, project: bool, row_: int) -> float:
    n = ctx[4]
    s = kernel._f64_at(ctx[0], ctx[1]).reshape((ctx[1], 1))
    p = kernel._f64_at(ctx[2], kernel.N_PARAMS)
    pa = kernel._f64_at(ctx[3], n * kernel.N_PARAMS).reshape((n, kernel.N_PARAMS))
    bars = kernel._f64_at(ctx[5], ctx[6] * n * N_BAR_COLS).reshape((ctx[6], n, N_BAR_COLS))
    feats = kernel._f32_at(ctx[7], ctx[8])
    out = kernel._f32_at(ctx[9], ctx[10] * ctx[11]).reshape((ctx[10], ctx[11]))
    info = kernel._f64_at(ctx[12], ctx[10] * 2 * n).reshape((ctx[10], 2 * n))
    am = kernel._f64_at(ctx[13], 3)
    return pf_env_step(s, p, pa, bars, feats, out, t, action, project, am[0], am[1], am[2] != 0.0,
                       row_, info)


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
    ``info_w`` (weights at the closes) are (N, A)."""
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
            te = _pbar(s, j, p, pa, w[j], bars, tj, scratch)
            r = _reward(s, j, p, eq_prev, s[EQUITY, j])
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


_HELPERS = (_close_all, _fill, _cost_frac, _pbar, _pobserve, _project_row, _first_bad, pf_env_step,
            _step_ctx)
ENTRY_POINTS = ("pf_books_step", "pf_env_step", "pf_env_step_at", "pf_env_weights_at",
                "pf_observe", "pf_vec_step", "project_rows")


@functools.cache
def compiled() -> Any:
    """The entry points compiled by numba (no fastmath, cached next to this file), after the
    scalar kernel registered its shared helpers; interpreted without numba (a warning)."""
    kernel.compiled()  # registers _trade, _size_order_eq, _reward for inlining
    try:
        from numba import njit
        from numba import types as nt
        from numba.extending import register_jitable
    except ImportError:
        return SimpleNamespace(**{name: globals()[name] for name in ENTRY_POINTS})
    for helper in _HELPERS:
        register_jitable(helper)
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

