"""Execution rules: sizing, buying-power cap, lot size, minimum notional, fees and slippage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy_books import size_order, size_orders

from coinrl.envs.books import Account, Books
from coinrl.envs.config import EnvConfig
from coinrl.envs.domain import Order, Position, Side
from coinrl.envs.execution import ExecutionModel
from coinrl.envs.kernel import _size_order_eq, make_params
from coinrl.pipeline.errors import InvalidOrder


def _exe(**kw: object) -> ExecutionModel:
    return ExecutionModel.from_config(EnvConfig(**kw))  # type: ignore[arg-type]


class _Sizer:
    """The kernel's sizing rule (``_size_order_eq``, the one production implementation: the books,
    the backtests and the exchange broker call it) for the config of ``kw``, in the scalar
    arguments the brokers have: ``size_order(target, cash, qty, price, volume) -> dq``."""

    def __init__(self, **kw: object) -> None:
        self.config = EnvConfig(**kw)  # type: ignore[arg-type]
        self.params = make_params(self.config)

    def size_order(self, target: float, cash: float, qty: float, price: float, volume: float) -> float:
        return float(_size_order_eq(self.params, target, cash + qty * price, qty, price, volume))


def test_spot_all_in_spends_the_cash_and_not_a_cent_more() -> None:
    kw = {"allow_short": False, "positions": (0.0, 1.0), "taker_fee_rate": 0.001, "slippage_bps": 10.0}
    dq = _Sizer(**kw).size_order(1.0, 10_000.0, 0.0, 100.0, 1e6)
    notional, fee, slip = _exe(**kw).costs(dq, 100.0, 1e6)
    # qty = 10,000 / (100 * (1 + 0.001 + 0.001)): the costs are paid out of the same cash
    assert dq == pytest.approx(10_000.0 / 100.2, rel=1e-11)
    cash_after = 10_000.0 - dq * 100.0 - fee - slip
    assert 0.0 <= cash_after < 1e-6


def test_lot_size_rounds_toward_zero_and_a_close_is_exact() -> None:
    exe = _Sizer(lot_size_base=0.01, rebalance_threshold=0.0, taker_fee_rate=0.0, slippage_bps=0.0)
    dq = exe.size_order(0.5, 1_000.0, 0.0, 33.0, 1e6)  # 0.5 * 1000 / 33 = 15.1515.. -> 15.15
    assert dq == pytest.approx(15.15)
    dq = exe.size_order(-0.5, 1_000.0, 0.0, 33.0, 1e6)
    assert dq == pytest.approx(-15.15)
    dq = exe.size_order(0.0, 500.0, 15.1500001, 33.0, 1e6)  # to flat: all of it, no dust
    assert dq == -15.1500001


def test_min_notional_and_rebalance_band_skip_small_orders_but_never_a_close() -> None:
    exe = _Sizer(min_notional_quote=100.0, rebalance_threshold=0.0)
    assert exe.size_order(0.005, 10_000.0, 0.0, 100.0, 1e6) == 0.0  # 50 quote < 100
    assert exe.size_order(0.02, 10_000.0, 0.0, 100.0, 1e6) == pytest.approx(2.0)  # 200
    assert exe.size_order(0.0, 10_000.0, 0.5, 100.0, 1e6) == -0.5  # 50 quote close allowed
    band = _Sizer(rebalance_threshold=0.01)
    # position worth 5,000 of equity 10,000 (cash 5,000); target 0.505 is a 50 rebalance < 100
    assert band.size_order(0.505, 5_000.0, 50.0, 100.0, 1e6) == 0.0
    assert band.size_order(0.6, 5_000.0, 50.0, 100.0, 1e6) == pytest.approx(10.0)


def test_slippage_fixed_bps_plus_capped_volume_impact() -> None:
    exe = _exe(taker_fee_rate=0.002, slippage_bps=5.0, impact_coef=0.1, max_impact_frac=0.01)
    # 10 traded of volume 1,000: impact 0.1 * 0.01 = 0.001 -> slippage fraction 0.0005 + 0.001
    notional, fee, slip = exe.costs(10.0, 200.0, 1_000.0)
    assert (notional, fee, slip) == pytest.approx((2_000.0, 4.0, 3.0))
    # 100 of volume 10: impact 0.1 * 10 = 1 -> capped at 0.01
    _, _, slip = exe.costs(-100.0, 200.0, 10.0)
    assert slip == pytest.approx(20_000.0 * (0.0005 + 0.01))


def test_market_fill_equals_the_books_costs_and_position_agrees() -> None:
    cfg = EnvConfig(taker_fee_rate=0.001, slippage_bps=10.0, rebalance_threshold=0.0, max_leverage=2.0)
    exe = ExecutionModel.from_config(cfg)
    fill = exe.market_fill(Order("o1", "BTC/USD", Side.BUY, 2.0), 100.0, 1e6, "f1", ts_ms=1)
    assert fill.price_quote == pytest.approx(100.1)  # 10 bps over the open
    assert fill.fee_quote == pytest.approx(0.2)
    pos = Position("BTC/USD", initial_cash_quote=10_000.0)
    pos.apply(fill)
    acct = Account(cfg)
    acct.step_bar(2.0 * 100.0 / 10_000.0, 100.0, 100.0, 100.0, 100.0, 1e6)  # exposure of 2 BTC
    assert acct.position_base == pytest.approx(pos.qty_base)
    assert acct.cash_quote == pytest.approx(pos.cash_quote)
    assert acct.avg_entry_quote == pytest.approx(pos.avg_entry_quote)


def test_orders_breaking_exchange_rules_are_rejected() -> None:
    exe = _exe(lot_size_base=0.01, min_notional_quote=10.0)
    with pytest.raises(InvalidOrder, match="lot size"):
        exe.market_fill(Order("o", "BTC/USD", Side.BUY, 0.015), 1_000.0, 1e6, "f", 0)
    with pytest.raises(InvalidOrder, match="minimum"):
        exe.market_fill(Order("o", "BTC/USD", Side.BUY, 0.01), 100.0, 1e6, "f", 0)
    assert exe.round_qty(0.0199) == pytest.approx(0.01)


@settings(max_examples=300, deadline=None)
@given(
    target=st.floats(-3.0, 3.0),
    cash=st.floats(-2e4, 3e4),
    qty=st.floats(-200.0, 200.0),
    price=st.floats(1.0, 1e3),
    volume=st.floats(0.0, 1e4),
    kw=st.fixed_dictionaries({
        "impact_coef": st.sampled_from([0.0, 0.5]),
        "lot_size_base": st.sampled_from([0.0, 0.1]),
        "min_notional_quote": st.sampled_from([0.0, 50.0]),
        "rebalance_threshold": st.sampled_from([0.0, 0.02]),
        "allow_short": st.booleans(),
    }),
)
@pytest.mark.slow
def test_kernel_sizing_equals_the_scalar_and_vector_oracles_bit_for_bit(
    target: float, cash: float, qty: float, price: float, volume: float, kw: dict[str, object]
) -> None:
    exe = _exe(max_leverage=3.0, **kw)
    if cash + qty * price <= 0.0:
        return  # the books liquidate such accounts before sizing
    target = max(target, 0.0) if not kw["allow_short"] else target
    dq_s, _ = size_order(exe, target, cash, qty, price, volume)
    a = lambda x: np.array([x])  # noqa: E731
    dq_v, notional_v = size_orders(exe, a(target), a(cash), a(qty), a(price), a(volume))
    dq_k = _Sizer(max_leverage=3.0, **kw).size_order(target, cash, qty, price, volume)
    assert dq_k == dq_v[0] == dq_s
    assert notional_v[0] == abs(dq_s) * price


def test_lot_rounding_never_flips_a_position_toward_a_target_on_its_side() -> None:
    """Found by hypothesis: buy 90.64, sell to 85.07, then sell toward a ~0 target; the lot
    multiples summed in floats do not cancel, and the last sell used to leave a spot account
    short by 1.4e-14 BTC. It now closes exactly, in every form of the rules."""
    cfg = EnvConfig(positions=(0.0, 1.0), taker_fee_rate=0.0, slippage_bps=0.0, lot_size_base=0.01,
                    rebalance_threshold=0.0, max_leverage=1.0, allow_short=False)
    p = 110.32278775230374
    acct, books = Account(cfg), Books(1, cfg)
    for tgt in (1.0, 0.9384840428623278):
        acct.step_bar(tgt, p, p, p, p, 1.0)
        books.step_bar(np.array([tgt]), *[np.array([p])] * 4, np.ones(1))
    qty, cash = acct.position_base, acct.cash_quote
    exe = ExecutionModel.from_config(cfg)
    dq_s, _ = size_order(exe, 1e-121, cash, qty, p, 1.0)
    dq_v, _ = size_orders(exe, *(np.array([z]) for z in (1e-121, cash, qty, p, 1.0)))
    dq_k = float(_size_order_eq(make_params(cfg), 1e-121, cash + qty * p, qty, p, 1.0))
    assert dq_k == dq_s == dq_v[0] == -qty
    acct.step_bar(1e-121, p, p, p, p, 1.0)
    books.step_bar(np.array([1e-121]), *[np.array([p])] * 4, np.ones(1))
    assert acct.position_base == books.position_base[0] == 0.0
    assert acct.cash_quote == books.cash_quote[0] == 10_000.0
