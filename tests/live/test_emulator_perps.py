"""The matching engine's linear perpetual books (no HTTP): realised PnL on reduce and flip, the
wallet + unrealised PnL identity with spot-style cash + position * mark, and funding owed on
the position held BEFORE a fill at the same time."""

from __future__ import annotations

import pandas as pd
import pytest
from live_helpers import ENV, candles, ohlcv

from coinrl.envs.domain import OrderType, Side
from coinrl.live.emulator import Accounts, EmulatedMarkets, MatchingEngine
from coinrl.live.emulator.perps import mark_price

HOUR = 3_600_000
PERP = "SOL/USDT:USDT"
FRAME = candles(80, seed=3)
KEY = "PerpKey0123"


def engine(rate: float = 0.0) -> MatchingEngine:
    ts = FRAME.ts_ms[FRAME.ts_ms % (8 * HOUR) == 0]
    funding = {PERP: pd.DataFrame({"ts_ms": ts.to_numpy(), "funding_rate": rate})} if rate else None
    markets = EmulatedMarkets({PERP: ohlcv(FRAME)}, funding)
    return MatchingEngine(markets, Accounts({KEY: ("s3cret", {"USDT": 10_000.0})}), execution=ENV)


def market(e: MatchingEngine, side: Side, qty: float, bar: int) -> None:
    """A market order sent exactly at bar ``bar``'s open: it fills there at once."""
    e.submit(KEY, PERP, side, OrderType.MARKET, qty, now_ms=int(FRAME.ts_ms.iloc[bar]))


def test_reduce_and_flip_realise_pnl_and_the_rest_opens_at_the_fill_price():
    e = engine()
    market(e, Side.BUY, 10.0, 5)
    market(e, Side.SELL, 4.0, 6)  # reduce
    market(e, Side.SELL, 16.0, 7)  # close 6, open a 10 short
    t_open, t_reduce, t_flip = e.trades()
    pos = e.perps.positions[(KEY, PERP)]
    assert (pos.size_base, pos.entry_price_quote) == (-10.0, t_flip.price_quote)
    realised = 4.0 * (t_reduce.price_quote - t_open.price_quote) + 6.0 * (t_flip.price_quote - t_open.price_quote)
    assert pos.realised_quote == pytest.approx(realised, rel=1e-12)
    fees = sum(t.fee_quote for t in e.trades())
    assert e.accounts.get(KEY).total("USDT") == pytest.approx(10_000.0 + realised - fees, rel=1e-12)


def test_wallet_plus_unrealised_equals_cash_plus_position_at_mark():
    e = engine()
    for bar, (side, qty) in enumerate([(Side.BUY, 3.0), (Side.BUY, 2.0), (Side.SELL, 7.0),
                                       (Side.BUY, 1.5), (Side.SELL, 0.5)], start=10):
        market(e, side, qty, bar)
    now = int(FRAME.ts_ms.iloc[20])
    cash = 10_000.0 - sum(t.side.sign * t.qty_base * t.price_quote + t.fee_quote for t in e.trades())
    size = sum(t.side.sign * t.qty_base for t in e.trades())
    mark = mark_price(e.markets.series[PERP], now)
    wallet = e.accounts.get(KEY).total("USDT")
    assert e.perps.positions[(KEY, PERP)].size_base == pytest.approx(size, abs=1e-12)
    assert wallet + e.perps.unrealised(KEY, "USDT", now) == pytest.approx(cash + size * mark, rel=1e-12)


def test_funding_at_a_fill_time_is_owed_on_the_position_held_before_the_fill():
    e = engine(rate=1e-3)
    k = int(FRAME.index[FRAME.ts_ms % (8 * HOUR) == 0][1])  # a bar that opens at a funding time
    market(e, Side.BUY, 10.0, k - 3)
    e.process_until(int(FRAME.ts_ms.iloc[k]) - 1)
    market(e, Side.SELL, 10.0, k)  # closes at the funding time's open
    [paid] = [p for p in e.perps.payments if p.ts_ms == int(FRAME.ts_ms.iloc[k])]
    assert paid.size_base == 10.0
    assert paid.payment_quote == pytest.approx(10.0 * float(FRAME.open.iloc[k]) * 1e-3, rel=1e-15)
    assert e.perps.positions[(KEY, PERP)].size_base == 0.0
