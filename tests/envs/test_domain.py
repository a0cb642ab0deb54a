"""Orders, fills and the single-mutator Position."""

from __future__ import annotations

import pytest

from coinrl.envs.domain import Charge, ChargeKind, Fill, Order, OrderType, Position, Side, trade
from coinrl.pipeline.errors import InvalidOrder


@pytest.mark.parametrize(
    ("qty", "avg", "dq", "price", "expected"),
    [
        (0.0, 0.0, 2.0, 100.0, (2.0, 100.0, 0.0)),  # open long at 100
        (2.0, 100.0, 2.0, 110.0, (4.0, 105.0, 0.0)),  # add: (2*100 + 2*110) / 4 = 105
        (4.0, 105.0, -1.0, 115.0, (3.0, 105.0, 10.0)),  # reduce 1: (115 - 105) * 1 = 10
        (3.0, 105.0, -3.0, 95.0, (0.0, 0.0, -30.0)),  # close: (95 - 105) * 3 = -30
        (2.0, 100.0, -3.0, 110.0, (-1.0, 110.0, 20.0)),  # flip: close 2 at +10, short 1 at 110
        (-2.0, 100.0, 1.0, 90.0, (-1.0, 100.0, 10.0)),  # cover 1 short at 90: (100 - 90) * 1
        (-1.0, 100.0, 3.0, 120.0, (2.0, 120.0, -20.0)),  # flip short->long: -(120 - 100) * 1
    ],
)
def test_trade_average_cost_arithmetic(
    qty: float, avg: float, dq: float, price: float, expected: tuple[float, float, float]
) -> None:
    assert trade(qty, avg, dq, price) == pytest.approx(expected)


def _fill(fid: str, side: Side, qty: float, price: float, fee: float, slip: float = 0.0) -> Fill:
    return Fill(fid, "o-" + fid, "BTC/USD", side, qty, price, fee, ts_ms=0, slippage_quote=slip)


def test_position_books_fills_fees_and_slippage() -> None:
    pos = Position("BTC/USD", initial_cash_quote=10_000.0)
    # buy 1 at reference 100 with 0.1 slippage -> fill price 100.1, fee 0.2
    pos.apply(_fill("1", Side.BUY, 1.0, 100.1, 0.2, slip=0.1))
    assert pos.cash_quote == pytest.approx(10_000.0 - 100.1 - 0.2)
    assert pos.avg_entry_quote == pytest.approx(100.0)  # kept at the reference price
    # sell 1 at reference 110 with 0.1 slippage -> fill 109.9, fee 0.22
    realised = pos.apply(_fill("2", Side.SELL, 1.0, 109.9, 0.22, slip=0.1))
    assert realised == pytest.approx(10.0)
    assert pos.qty_base == 0.0
    # equity = 10,000 + 10 realised - 0.42 fees - 0.2 slippage
    assert pos.equity_quote(123.0) == pytest.approx(10_000.0 + 10.0 - 0.42 - 0.2)
    assert pos.fees_paid_quote == pytest.approx(0.42)
    assert pos.slippage_paid_quote == pytest.approx(0.2)


def test_duplicate_fill_id_is_an_error_and_not_double_counted() -> None:
    pos = Position("BTC/USD", initial_cash_quote=1_000.0)
    f = _fill("abc", Side.BUY, 1.0, 100.0, 0.1)
    pos.apply(f)
    with pytest.raises(InvalidOrder, match="already applied"):
        pos.apply(f)
    assert pos.qty_base == 1.0
    assert pos.cash_quote == pytest.approx(1_000.0 - 100.1)


def test_charges_move_cash_once() -> None:
    pos = Position("BTC/USD", initial_cash_quote=1_000.0)
    pos.apply(Charge("f1", ChargeKind.FUNDING, 1.5, ts_ms=0))
    pos.apply(Charge("b1", ChargeKind.BORROW, 0.5, ts_ms=0))
    with pytest.raises(InvalidOrder):
        pos.apply(Charge("f1", ChargeKind.FUNDING, 1.5, ts_ms=0))
    assert pos.cash_quote == pytest.approx(998.0)
    assert (pos.funding_paid_quote, pos.borrow_paid_quote) == (1.5, 0.5)


def test_fill_for_another_symbol_is_rejected() -> None:
    pos = Position("ETH/USD", initial_cash_quote=1_000.0)
    with pytest.raises(InvalidOrder, match="BTC/USD"):
        pos.apply(_fill("1", Side.BUY, 1.0, 100.0, 0.0))


def test_bad_orders_and_fills_raise_invalid_order() -> None:
    with pytest.raises(InvalidOrder, match="qty_base"):
        Order("o1", "BTC/USD", Side.BUY, 0.0)
    with pytest.raises(InvalidOrder, match="limit_price_quote"):
        Order("o2", "BTC/USD", Side.SELL, 1.0, order_type=OrderType.LIMIT)
    with pytest.raises(InvalidOrder, match="fee_quote"):
        _fill("1", Side.BUY, 1.0, 100.0, -0.1)
    assert Side.SELL.sign == -1.0
    assert _fill("2", Side.SELL, 2.0, 99.0, 0.0, slip=2.0).ref_price_quote == pytest.approx(100.0)
