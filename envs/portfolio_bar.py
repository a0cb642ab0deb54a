"""One bar of a cross-margined account holding cash and A positions: the portfolio kernel's books.

Part of the compiled portfolio kernel (:mod:`coinrl.envs.portfolio_kernel` holds the entry points
and compiles them; these functions are its helpers, plain Python here, inlined there). The state
layout (account and asset rows, bar columns) is defined here, once.

One bar of account ``j`` (decision taken at the previous close), per asset ``a`` in asset order:

1. **Funding** at the open on each position held into a funding time:
   ``pay_a = funding_a * qty_a * open_a`` (longs pay positive rates); none on an untradable bar.
2. **Gap liquidation** (cross margin): if ``cash + sum_a (qty_a - mmr_a |qty_a|) open_a <= 0``
   every position is closed at its open, taker fee charged; cash floors at 0 and the uncovered
   loss goes to ``shortfall`` (the loss is capped at the account's margin).
3. **Rebalance** at the open toward target weights ``w_a`` (position notional / equity at the
   open). Per asset: the single-asset sizing (``kernel._size_order_eq``: its buying-power cap as if the asset were alone,
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
   open if already beyond it), as the single-asset books always did. Several: at the first point of the path on
   which every asset moves the same fraction ``theta`` of the way from its open to its adverse
   extreme and the maintenance margin is met; ``price_a = open_a + theta (adverse_a - open_a)``.
5. **Borrow**: ``rate * (sum_a short notional_a at the close + negative cash)``.
6. **Mark** at the closes: ``equity = cash + sum_a qty_a close_a``.

``lambda`` (step 3): with ``G = sum |x_a| o_a``, ``Gc = sum cf_a |x_a| o_a`` and
``Q = sum cf_a |qty_a| o_a``, the costs are at most ``lambda Gc + Q``, so
``lambda = L (E - Q) / (G + L Gc)`` (times ``SHAVE``, clipped to [0, 1]) keeps the budget.

State: a float64 matrix ``(N_ACCT_ROWS + A * N_ASSET_ROWS, N)``. The account rows are
:mod:`coinrl.envs.kernel`'s (``CASH``, ``EQUITY``, ``FEES`` ... ``REWARD_B``, read by the shared
reward code) then this module's ``SCALED``, ``SCALE_LAST``, ``BAD_ACTION``.
Asset ``a``'s rows start at ``N_ACCT_ROWS + a * N_ASSET_ROWS``. Params: :func:`coinrl.envs.kernel.make_params`'s
vector (account-wide: leverage, shorting, borrow, reward, observation layout) plus a matrix
``(A, N_PARAMS)`` of per-asset vectors (fees, slippage, impact, lot, min notional, mmr).

Bars: float64 ``(T, A, 7)``: open, high, low, close, volume, funding, tradable (1.0/0.0).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

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
    P_FEE,
    P_IMPACT,
    P_LEVERAGE,
    P_LOT,
    P_MAX_IMPACT,
    P_MIN_NOTIONAL,
    P_MIN_VOLUME,
    P_MMR,
    P_SHAVE,
    P_SLIP,
    P_THRESHOLD,
    REALISED,
    SHORTFALL,
    SLIPPAGE,
    TURNOVER,
    _size_order_eq,
    _trade,
)

F64 = npt.NDArray[np.float64]

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
    floor cash at 0 (the rest is shortfall)."""
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
    return _fill_row(s, j, pa[a], N_ACCT_ROWS + a * N_ASSET_ROWS, dq, o, v, cash)


def _fill_row(s: F64, j: int, p: F64, r: int, dq: float, o: float, v: float, cash: float) -> float:
    """:func:`_fill` of the asset whose params are ``p`` (its row of ``pa``) and whose state rows
    start at ``r``."""
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


def _pbar1(s: F64, j: int, p: F64, pa: F64, pa0: F64, w0: float, bars: F64, t: int, scratch: F64) -> bool:
    """:func:`_pbar` with one asset (``pa0`` = ``pa[0]``, ``w0`` its target weight): the general
    path's IEEE operations for ``A = 1`` in the same order, on scalars (no loops over assets, no
    per-asset work arrays; ``scratch[1]`` only on a liquidation), ~15% less time per account-bar
    in the batched single-asset env. Held bit for bit to the pre-switch scalar books
    (``tests/envs/scalar_kernel.py``) by ``tests/envs/test_portfolio_kernel.py``."""
    r = N_ACCT_ROWS
    o = bars[t, 0, B_OPEN]
    tradable = bars[t, 0, B_TRADABLE] != 0.0
    mmr = pa0[P_MMR]
    q0 = s[r + A_QTY, j]
    cash = s[CASH, j]
    liq = False
    # 1. funding at the open
    if p[P_CHARGE_FUNDING] != 0.0:
        f = bars[t, 0, B_FUNDING]
        if f != 0.0 and tradable:
            pay = f * q0 * o
            cash -= pay
            s[FUNDING, j] += pay
            s[r + A_FUNDING, j] += pay
            s[CASH, j] = cash
    # 2. gap through the liquidation point: close at the open
    q = q0
    flat = False
    if cash + (q - mmr * abs(q)) * o <= 0.0:
        px = scratch[1]
        px[0] = o
        _close_all(s, j, pa, 1, px)
        cash = s[CASH, j]
        q = s[r + A_QTY, j]
        liq = True
        flat = True
    # 3. rebalance at the open
    equity = cash + q * o
    s[SCALE_LAST, j] = 1.0
    if not flat and tradable:
        d = _size_order_eq(pa0, w0, equity, q, o, bars[t, 0, B_VOLUME])
        if d < 0.0 or d > 0.0:  # as the general path's sides: a NaN is not filled
            cash = _fill_row(s, j, pa0, r, d, o, bars[t, 0, B_VOLUME], cash)
            q = s[r + A_QTY, j]
    # 4. the position at its adverse extreme within the bar
    den = q - mmr * abs(q)
    adverse = bars[t, 0, B_LOW] if q > 0.0 else bars[t, 0, B_HIGH]
    if cash + den * adverse <= 0.0:
        px = scratch[1]
        px[0] = o
        if den != 0.0:
            p_liq = -cash / den
            if q > 0.0:
                px[0] = o if o < p_liq else p_liq
            else:
                px[0] = o if o > p_liq else p_liq
        _close_all(s, j, pa, 1, px)
        cash = s[CASH, j]
        q = s[r + A_QTY, j]
        liq = True
    # 5. borrow on short notional and negative cash
    c = bars[t, 0, B_CLOSE]
    rate = p[P_BORROW]
    if rate > 0.0:
        short = 0.0 + (0.0 if 0.0 > -q else -q) * c
        b = rate * (short + (0.0 if 0.0 > -cash else -cash))
        cash -= b
        s[BORROW, j] += b
        s[CASH, j] = cash
    # 6. mark at the close; bars held
    s[r + A_MARK, j] = c
    if q0 * q > 0.0:
        s[r + A_BARS_HELD, j] += 1.0
    else:
        s[r + A_BARS_HELD, j] = 1.0 if q != 0.0 else 0.0
    s[EQUITY, j] = cash + q * c
    s[LIQUIDATED, j] = 1.0 if liq else 0.0
    return liq


def _pbar(s: F64, j: int, p: F64, pa: F64, w: F64, bars: F64, t: int, scratch: F64) -> bool:
    """One bar ``t`` of account ``j`` toward target weights ``w`` (A,); True if liquidated.

    ``scratch`` is a (3, A) work array (no allocation per bar).
    """
    n = pa.shape[0]
    if n == 1:
        return _pbar1(s, j, p, pa, pa[0], w[0], bars, t, scratch)
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

