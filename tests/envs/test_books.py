"""The books kernel: hand-computed liquidation, funding and borrow; scalar == vector; invariants."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy_books import trade_vec

from coinrl.envs.books import Account, Books
from coinrl.envs.config import EnvConfig
from coinrl.envs.domain import trade

NO_COSTS = {"taker_fee_rate": 0.0, "slippage_bps": 0.0, "rebalance_threshold": 0.0}


class VecAsScalar:
    """Books with N=1 behind the scalar Account API, so one test checks both kernels."""

    def __init__(self, cfg: EnvConfig) -> None:
        self.b = Books(1, cfg)

    def step_bar(self, target: float, o: float, h: float, lo: float, c: float, v: float, f: float = 0.0) -> bool:
        a = lambda x: np.array([x], dtype=np.float64)  # noqa: E731
        return bool(self.b.step_bar(a(target), a(o), a(h), a(lo), a(c), a(v), a(f))[0])

    def __getattr__(self, name: str) -> object:
        value = getattr(self.b, name)
        if callable(value):
            return lambda: float(value()[0])
        return float(value[0])


KERNELS = [pytest.param(Account, id="scalar"), pytest.param(VecAsScalar, id="vector")]


@pytest.mark.parametrize("kernel", KERNELS)
def test_long_liquidated_at_wick_price(kernel: type) -> None:
    cfg = EnvConfig(max_leverage=10.0, maintenance_margin_rate=0.01, **NO_COSTS)
    acct = kernel(cfg)
    # bar 1: target exposure 5 at open 100 with equity 10,000 -> qty = 5 * 10,000 / 100 = 500,
    # cash = 10,000 - 500 * 100 = -40,000. Low 99 is far from liquidation.
    assert not acct.step_bar(5.0, 100.0, 101.0, 99.0, 100.0, 1e9)
    assert acct.position_base == pytest.approx(500.0)
    assert acct.cash_quote == pytest.approx(-40_000.0)
    # liquidation price: cash + qty * P = mmr * qty * P  ->  P = 40,000 / (500 * 0.99) = 80.8080...
    p_liq = 40_000.0 / 495.0
    assert acct.liquidation_price_quote() == pytest.approx(p_liq)
    # bar 2 opens at 100, wicks down to 75: closed at P (not at the low, not at the close)
    assert acct.step_bar(5.0, 100.0, 100.0, 75.0, 95.0, 1e9)
    assert acct.position_base == 0.0
    # cash = -40,000 + 500 * P = 40,000 * 5 / 495 = 404.0404...
    assert acct.cash_quote == pytest.approx(40_000.0 * 5.0 / 495.0)
    assert acct.equity_quote == pytest.approx(40_000.0 * 5.0 / 495.0)
    assert acct.realised_pnl_quote == pytest.approx((p_liq - 100.0) * 500.0)
    assert acct.shortfall_quote == 0.0


@pytest.mark.parametrize("kernel", KERNELS)
def test_short_liquidated_at_high_wick(kernel: type) -> None:
    cfg = EnvConfig(max_leverage=10.0, maintenance_margin_rate=0.01, **NO_COSTS)
    acct = kernel(cfg)
    # short exposure 5 at 100: qty = -500, cash = 10,000 + 50,000 = 60,000
    acct.step_bar(-5.0, 100.0, 101.0, 99.0, 100.0, 1e9)
    assert acct.cash_quote == pytest.approx(60_000.0)
    # P solves 60,000 - 500 P = 0.01 * 500 * P  ->  P = 60,000 / 505 = 118.8118...
    assert acct.step_bar(-5.0, 100.0, 125.0, 99.0, 101.0, 1e9)
    # cash = 60,000 - 500 * 60,000 / 505 = 60,000 * 5 / 505 = 594.059...
    assert acct.cash_quote == pytest.approx(60_000.0 * 5.0 / 505.0)
    assert acct.position_base == 0.0


@pytest.mark.parametrize("kernel", KERNELS)
def test_gap_through_liquidation_fills_at_open_and_caps_loss_at_margin(kernel: type) -> None:
    cfg = EnvConfig(max_leverage=10.0, maintenance_margin_rate=0.01, taker_fee_rate=0.001,
                    slippage_bps=0.0, rebalance_threshold=0.0)
    acct = kernel(cfg)
    # cost-aware cap does not bind at exposure 5 < 10. qty = 500, fee = 50,000 * 0.001 = 50,
    # cash = 10,000 - 50,000 - 50 = -40,050
    acct.step_bar(5.0, 100.0, 101.0, 99.0, 100.0, 1e9)
    assert acct.cash_quote == pytest.approx(-40_050.0)
    # next bar gaps open at 70, below P = 40,050 / 495 = 80.9: closed at the open, 70:
    # cash = -40,050 + 500 * 70 - fee(35,000 * 0.001 = 35) = -5,085 -> floored at 0,
    # the 5,085 beyond the posted margin (the whole account) is the venue's shortfall.
    assert acct.step_bar(5.0, 70.0, 72.0, 69.0, 71.0, 1e9)
    assert acct.cash_quote == 0.0
    assert acct.equity_quote == 0.0
    assert acct.position_base == 0.0
    assert acct.shortfall_quote == pytest.approx(5_085.0)
    assert acct.fees_paid_quote == pytest.approx(50.0 + 35.0)
    assert acct.conservation_error_quote() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("side", [1.0, -1.0])
def test_funding_charged_only_at_funding_bars_with_the_right_sign(kernel: type, side: float) -> None:
    # a 50 % rebalance band: after the entry the position is held, only funding moves cash
    acct = kernel(EnvConfig(taker_fee_rate=0.0, slippage_bps=0.0, rebalance_threshold=0.5))
    acct.step_bar(side, 100.0, 100.0, 100.0, 100.0, 1e9, 0.0)
    qty = acct.position_base
    assert qty == pytest.approx(side * 100.0)  # +-10,000 / 100
    rates = [0.0, 0.0005, 0.0, -0.0002]
    opens = [102.0, 104.0, 103.0, 101.0]
    paid = []
    for o, f in zip(opens, rates, strict=True):
        funding0, cash0 = acct.funding_paid_quote, acct.cash_quote
        acct.step_bar(side, o, o, o, o, 1e9, f)
        paid.append(acct.funding_paid_quote - funding0)
        assert cash0 - acct.cash_quote == pytest.approx(paid[-1])  # nothing else moved cash
    assert acct.position_base == qty
    # payment = rate * qty * open of the funding bar: a long (qty +100) pays 0.0005 * 100 * 104
    # = 5.2 and receives 0.0002 * 100 * 101 = 2.02; a short the opposite; other bars nothing.
    expected = [0.0, 0.0005 * qty * 104.0, 0.0, -0.0002 * qty * 101.0]
    assert paid == pytest.approx(expected)
    assert (paid[1] > 0.0) == (side > 0.0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_borrow_charged_per_bar_on_short_notional_and_negative_cash(kernel: type) -> None:
    cfg = EnvConfig(max_leverage=3.0, borrow_rate_per_bar=0.0001, **NO_COSTS)
    acct = kernel(cfg)
    # long exposure 2 at 100: qty 200, cash -10,000 borrowed -> borrow = 0.0001 * 10,000 = 1
    acct.step_bar(2.0, 100.0, 100.0, 100.0, 100.0, 1e9)
    assert acct.borrow_paid_quote == pytest.approx(1.0)
    acct2 = kernel(cfg)
    # short exposure 1 at 100: qty -100 valued at close 110 -> borrow = 0.0001 * 11,000 = 1.1
    acct2.step_bar(-1.0, 100.0, 110.0, 100.0, 110.0, 1e9)
    assert acct2.borrow_paid_quote == pytest.approx(1.1)


def test_spot_account_has_no_liquidation_price() -> None:
    acct = Account(EnvConfig(allow_short=False, positions=(0.0, 1.0)))
    acct.step_bar(1.0, 100.0, 100.0, 100.0, 100.0, 1e9)
    assert acct.position_base > 0.0
    assert math.isnan(acct.liquidation_price_quote())


# ---------------------------------------------------------------------- properties
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
qtys = st.one_of(st.just(0.0), st.floats(-1e3, 1e3, allow_nan=False))
prices = st.floats(0.01, 1e6, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(qty=qtys, avg=prices, dq=qtys, price=prices)
@pytest.mark.slow
def test_trade_vector_form_equals_scalar_form_bit_for_bit(qty: float, avg: float, dq: float, price: float) -> None:
    avg = avg if qty != 0.0 else 0.0
    new_s, avg_s, r_s = trade(qty, avg, dq, price)
    new_v, avg_v, r_v = trade_vec(np.array([qty]), np.array([avg]), np.array([dq]), np.array([price]))
    assert new_v[0] == new_s
    assert avg_v[0] == avg_s
    assert r_v[0] == r_s


@st.composite
def bar_paths(draw: st.DrawFn) -> tuple[list[tuple[float, ...]], list[float]]:
    n = draw(st.integers(2, 25))
    rets = draw(st.lists(st.floats(-0.15, 0.15), min_size=n, max_size=n))
    bars = []
    p = 100.0
    for r in rets:
        o = p
        c = p * math.exp(r)
        wick = draw(st.floats(0.0, 0.1))
        bars.append((o, max(o, c) * (1 + wick), min(o, c) * (1 - wick), c,
                     draw(st.floats(0.01, 1e4)), draw(st.sampled_from([0.0, 0.0, 0.001, -0.001]))))
        p = c * math.exp(draw(st.floats(-0.05, 0.05)))  # gaps between close and next open
    targets = draw(st.lists(st.floats(-12.0, 12.0), min_size=n, max_size=n))
    return bars, targets


configs = st.builds(
    dict,
    taker_fee_rate=st.sampled_from([0.0, 0.001, 0.004]),
    slippage_bps=st.sampled_from([0.0, 5.0]),
    impact_coef=st.sampled_from([0.0, 0.3]),
    lot_size_base=st.sampled_from([0.0, 0.01]),
    min_notional_quote=st.sampled_from([0.0, 10.0]),
    rebalance_threshold=st.sampled_from([0.0, 0.01]),
    max_leverage=st.sampled_from([1.0, 3.0, 10.0]),
    allow_short=st.booleans(),
    maintenance_margin_rate=st.sampled_from([0.005, 0.05]),
    borrow_rate_per_bar=st.sampled_from([0.0, 1e-4]),
)


@settings(max_examples=200, deadline=None)
@given(path=bar_paths(), cfg_kw=configs)
@pytest.mark.slow
def test_scalar_and_vector_books_agree_and_money_is_conserved(
    path: tuple[list[tuple[float, ...]], list[float]], cfg_kw: dict[str, object]
) -> None:
    bars, targets = path
    cfg = EnvConfig(positions=(0.0, 1.0), **cfg_kw)  # type: ignore[arg-type]
    lo, hi = cfg.exposure_bounds
    acct = Account(cfg)
    books = Books(2, cfg)  # two identical accounts: the vector form must not mix them
    for (o, h, low, c, v, f), tgt in zip(bars, targets, strict=True):
        x = min(max(tgt, lo), hi)
        liq_s = acct.step_bar(x, o, h, low, c, v, f)
        a2 = lambda z: np.array([z, z])  # noqa: E731
        liq_v = books.step_bar(a2(x), a2(o), a2(h), a2(low), a2(c), a2(v), a2(f))
        for name in ("cash_quote", "position_base", "avg_entry_quote", "realised_pnl_quote",
                     "equity_quote", "fees_paid_quote", "slippage_paid_quote", "funding_paid_quote",
                     "borrow_paid_quote", "turnover_quote", "shortfall_quote", "bars_held"):
            arr = getattr(books, name)
            assert arr[0] == getattr(acct, name) == arr[1], name
        assert bool(liq_v[0]) == liq_s
        # equity is the cash plus the position at the close, and every cost is accounted for
        assert acct.equity_quote == acct.cash_quote + acct.position_base * c
        assert abs(acct.conservation_error_quote()) <= 1e-9 * max(1.0, abs(acct.turnover_quote) + 1e4)
        assert acct.fees_paid_quote >= 0.0
        assert acct.slippage_paid_quote >= 0.0
        if cfg.is_spot:
            assert acct.cash_quote >= 0.0
            assert acct.position_base >= 0.0
        if liq_s:
            assert acct.position_base == 0.0
            assert acct.cash_quote >= 0.0
            break
