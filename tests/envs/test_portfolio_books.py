"""Hand-computed books of a 2-asset, 6-bar account on the portfolio kernel.

Every expected number below is worked out by hand in the comments (plain arithmetic on the bar
prices: no kernel code), then compared at ``rel=1e-12`` (the kernel's own float order may differ
from the hand order in the last bits).

Account: 10,000 quote, taker fee 0.1 %, no slippage, leverage 2, maintenance margin 5 %,
rebalance threshold 5 % of equity, funding charged. Assets X and Y.
"""

from __future__ import annotations

import numpy as np
import pytest

from coinrl.envs import kernel
from coinrl.envs import portfolio_kernel as pk
from coinrl.envs.config import EnvConfig

CFG = EnvConfig(action="continuous", initial_cash_quote=10_000.0, taker_fee_rate=0.001,
                slippage_bps=0.0, max_leverage=2.0, maintenance_margin_rate=0.05,
                rebalance_threshold=0.05, allow_short=True, use_funding=True)
#            X: open  high   low  close |  Y: open  high  low  close | Y funding
BARS = [
    ((100.0, 111.0, 99.0, 110.0), (50.0, 51.0, 49.0, 50.0), 0.0),    # 0: buy both
    ((110.0, 112.0, 108.0, 112.0), (50.0, 50.5, 49.5, 50.0), 0.0),   # 1: sell X, buy Y
    ((112.0, 113.0, 111.0, 112.0), (55.0, 56.0, 54.0, 54.0), 0.0),   # 2: Y long -> short
    ((112.0, 113.0, 111.0, 112.0), (54.0, 54.5, 53.5, 54.0), 0.001), # 3: funding on Y short
    ((112.0, 113.0, 60.0, 70.0), (54.0, 90.0, 53.0, 85.0), 0.0),     # 4: wicks liquidate
    ((70.0, 71.0, 69.0, 70.0), (85.0, 86.0, 84.0, 85.0), 0.0),       # 5: flat
]
TARGETS = [(0.5, 0.5), (0.0, 1.0), (0.0, -0.5), (0.0, -0.5), (0.9, -0.9), (0.0, 0.0)]


def _run() -> list[np.ndarray]:
    bars = np.zeros((len(BARS), 2, 7))
    for t, (x, y, fy) in enumerate(BARS):
        bars[t, 0, :4] = x
        bars[t, 1, :4] = y
        bars[t, :, 4] = 1e6
        bars[t, 1, 5] = fy
        bars[t, :, 6] = 1.0
    p = kernel.make_params(CFG)
    pa = np.ascontiguousarray(np.repeat(p[None, :], 2, axis=0))
    s = pk.new_state(1, 2, CFG.initial_cash_quote)
    liq = np.zeros(1, dtype=bool)
    states = []
    for t, w in enumerate(TARGETS):
        pk.compiled().pf_books_step(s, p, pa, np.array([w]), bars, np.array([t]), liq)
        states.append(s[:, 0].copy())
    return states


def _qty(st: np.ndarray, a: int) -> float:
    return float(st[pk.row(a, pk.A_QTY)])


@pytest.mark.slow
def test_two_asset_books_match_the_hand_computation() -> None:
    s = _run()
    approx = lambda v: pytest.approx(v, rel=1e-12, abs=1e-9)  # noqa: E731
    # bar 0 at the opens (100, 50), E = 10,000: X 0.5*10000/100 = 50, Y 0.5*10000/50 = 100;
    # fees 0.001*5000 each; cash 10000 - 5000 - 5 - 5000 - 5 = -10;
    # marked at the closes: -10 + 50*110 + 100*50 = 10,490
    assert _qty(s[0], 0) == approx(50.0)
    assert _qty(s[0], 1) == approx(100.0)
    assert s[0][kernel.CASH] == approx(-10.0)
    assert s[0][kernel.EQUITY] == approx(10_490.0)
    assert s[0][kernel.FEES] == approx(10.0)
    # bar 1: a rebalance that sells X to buy Y. E at the opens = -10 + 50*110 + 100*50 = 10,490.
    # X -> 0: sell 50 at 110 (notional 5500, fee 5.5, realised (110-100)*50 = 500) FIRST;
    # Y -> 1.0*10490/50 = 209.8: buy 109.8 at 50 (notional 5490, fee 5.49).
    # cash -10 + 5500 - 5.5 - 5490 - 5.49 = -10.99; equity -10.99 + 209.8*50 = 10,479.01
    assert _qty(s[1], 0) == approx(0.0)
    assert _qty(s[1], 1) == approx(209.8)
    assert s[1][pk.row(0, pk.A_REALISED)] == approx(500.0)
    assert s[1][kernel.CASH] == approx(-10.99)
    assert s[1][kernel.EQUITY] == approx(10_479.01)
    assert s[1][pk.row(1, pk.A_AVG)] == approx(50.0)
    # bar 2: flip Y to short. E at the open (55) = -10.99 + 209.8*55 = 11,528.01;
    # x = -0.5*11528.01/55 = -104.79100; sell 209.8 + 104.791 = 314.591 at 55:
    # notional 17,302.505 (fee 17.302505), realised (55-50)*209.8 = 1049, avg entry 55;
    # cash -10.99 + 17302.505 - 17.302505 = 17,274.212495; equity cash - 104.791*54
    x2 = -0.5 * 11_528.01 / 55.0
    sold = 209.8 - x2
    cash2 = -10.99 + sold * 55.0 - 0.001 * sold * 55.0
    assert _qty(s[2], 1) == approx(x2)
    assert s[2][pk.row(1, pk.A_REALISED)] == approx(1049.0)
    assert s[2][pk.row(1, pk.A_AVG)] == approx(55.0)
    assert s[2][kernel.CASH] == approx(cash2)
    assert s[2][kernel.EQUITY] == approx(cash2 + x2 * 54.0)
    # bar 3: funding 0.001 at the open 54 on the short: pay 0.001 * x2 * 54 < 0 (received).
    # The drift to -0.5 is below the 5 % threshold: no trade.
    pay = 0.001 * x2 * 54.0
    cash3 = cash2 - pay
    assert s[3][kernel.FUNDING] == approx(pay)
    assert s[3][pk.row(1, pk.A_FUNDING)] == approx(pay)
    assert pay < 0.0
    assert _qty(s[3], 1) == approx(x2)
    assert s[3][kernel.CASH] == approx(cash3)
    assert s[3][kernel.EQUITY] == approx(cash3 + x2 * 54.0)
    # bar 4: long X 0.9, short Y -0.9 at the opens (112, 54). E = cash3 + x2*54.
    e4 = cash3 + x2 * 54.0
    qx = 0.9 * e4 / 112.0
    qy = -0.9 * e4 / 54.0
    # gross 1.8 E <= 2 (E - costs): no scaling. Sell Y first (qy - x2 < 0), then buy X.
    cash4 = cash3 - (qy - x2) * 54.0 - 0.001 * abs(qy - x2) * 54.0 - qx * 112.0 - 0.001 * qx * 112.0
    # adverse extremes: X low 60, Y high 90. Margin at the adverse point:
    # cash4 + (qx - 0.05 qx) 60 + (qy - 0.05 |qy|) 90 <= 0 -> liquidated. Path fraction theta
    # with m0 = cash4 + 0.95 qx 112 + 1.05 qy 54 and dm = 0.95 qx (60-112) + 1.05 qy (90-54):
    m0 = cash4 + 0.95 * qx * 112.0 + 1.05 * qy * 54.0
    dm = 0.95 * qx * (60.0 - 112.0) + 1.05 * qy * (90.0 - 54.0)
    assert cash4 + 0.95 * qx * 60.0 + 1.05 * qy * 90.0 <= 0.0
    theta = -m0 / dm
    px = 112.0 + theta * (60.0 - 112.0)
    py = 54.0 + theta * (90.0 - 54.0)
    # close both at (px, py), taker fee on each; cash floors at 0 (shortfall takes the rest)
    cash_liq = cash4 + qx * px - 0.001 * qx * px + qy * py - 0.001 * abs(qy) * py
    assert s[4][kernel.LIQUIDATED] == 1.0
    assert _qty(s[4], 0) == 0.0
    assert _qty(s[4], 1) == 0.0
    assert s[4][kernel.CASH] == approx(max(cash_liq, 0.0))
    assert s[4][kernel.SHORTFALL] == approx(max(-cash_liq, 0.0))
    # at theta the equity before fees equals the maintenance margin (the liquidation point)
    eq_at = cash4 + qx * px + qy * py
    assert eq_at == approx(0.05 * (qx * px + abs(qy) * py))
    # bar 5: flat, nothing moves
    assert s[5][kernel.EQUITY] == approx(s[4][kernel.EQUITY])
    assert s[5][kernel.LIQUIDATED] == 0.0


def test_unaffordable_rebalance_is_scaled_down_and_reported() -> None:
    bars = np.zeros((1, 2, 7))
    bars[0, :, :4] = 100.0
    bars[0, :, 4] = 1e6
    bars[0, :, 6] = 1.0
    p = kernel.make_params(CFG)
    pa = np.ascontiguousarray(np.repeat(p[None, :], 2, axis=0))
    s = pk.new_state(1, 2, 10_000.0)
    # gross 2.0 E at leverage 2 cannot pay its fees: lambda = 2 E / (2 E + 2 * 0.001 * 2 E)
    pk.compiled().pf_books_step(s, p, pa, np.array([[1.0, 1.0]]), bars, np.array([0]), np.zeros(1, bool))
    lam = 2 * 10_000.0 / (20_000.0 + 2 * 0.001 * 20_000.0) * (1.0 - 1e-12)
    assert s[pk.SCALED, 0] == 1.0
    assert s[pk.SCALE_LAST, 0] == pytest.approx(lam, rel=1e-12)
    assert _qty(s[:, 0], 0) == pytest.approx(lam * 100.0, rel=1e-12)
    gross = (_qty(s[:, 0], 0) + _qty(s[:, 0], 1)) * 100.0
    assert gross <= 2.0 * s[kernel.EQUITY, 0]


def test_untradable_asset_is_never_filled() -> None:
    bars = np.zeros((3, 2, 7))
    bars[:, :, :4] = 100.0
    bars[:, :, 4] = 1e6
    bars[:, 0, 6] = 1.0
    bars[:2, 1, 6] = 0.0  # Y is listed from bar 2
    bars[2, 1, 6] = 1.0
    p = kernel.make_params(CFG)
    pa = np.ascontiguousarray(np.repeat(p[None, :], 2, axis=0))
    s = pk.new_state(1, 2, 10_000.0)
    ks = pk.compiled()
    for t in range(2):
        ks.pf_books_step(s, p, pa, np.array([[0.4, 0.4]]), bars, np.array([t]), np.zeros(1, bool))
        assert _qty(s[:, 0], 1) == 0.0
        assert s[pk.row(1, pk.A_TURNOVER), 0] == 0.0
        assert _qty(s[:, 0], 0) > 0.0
    ks.pf_books_step(s, p, pa, np.array([[0.4, 0.4]]), bars, np.array([2]), np.zeros(1, bool))
    assert _qty(s[:, 0], 1) > 0.0
