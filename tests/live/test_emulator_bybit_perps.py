"""Linear perpetuals on the emulator through the real ccxt ``bybit`` client: positions on two
symbols over one cross-margin wallet, funding per symbol at its funding times, realised PnL on
close, Bybit's margin and reduce-only refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ccxt
import pandas as pd
import pytest
from live_helpers import ENV, KEY, SECRET, candles, ohlcv

from coinrl.live.emulator import EmulatorServer, FixedClock
from coinrl.pipeline.exchange_client import create_exchange

HOUR = 3_600_000
SOL, AVAX = "SOL/USDT:USDT", "AVAX/USDT:USDT"
RATES = {SOL: 1e-4, AVAX: -2e-4}
FRAMES = {SOL: candles(200, seed=5), AVAX: candles(200, seed=9)}
FIRST = FRAMES[SOL].ts_ms[FRAMES[SOL].ts_ms % (8 * HOUR) == 0].iloc[4]  # a funding time
K0 = int(FRAMES[SOL].index[FRAMES[SOL].ts_ms == FIRST][0]) - 3  # three bars before it


def funding(frame: pd.DataFrame, rate: float) -> pd.DataFrame:
    ts = frame.ts_ms[frame.ts_ms % (8 * HOUR) == 0]
    return pd.DataFrame({"ts_ms": ts.to_numpy(), "funding_rate": rate})


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    server = EmulatorServer(
        {s: ohlcv(f) for s, f in FRAMES.items()},
        funding={s: funding(f, RATES[s]) for s, f in FRAMES.items()},
        clock=FixedClock(int(FRAMES[SOL].ts_ms.iloc[K0])), execution=ENV,
        accounts={KEY: (SECRET, {"USDT": 1_000.0})},
    )
    with server:
        yield server


@pytest.fixture
def ex(emu: EmulatorServer) -> Any:
    client = create_exchange("bybit", exchange_url=emu.base_url,
                             config={"apiKey": KEY, "secret": SECRET, "enableRateLimit": False})
    client.load_markets()
    return client


def open_both(ex: Any) -> None:
    ex.create_order(SOL, "market", "buy", 10.0, None, {"clientOrderId": "sol-long"})
    ex.create_order(AVAX, "market", "sell", 10.0, None, {"clientOrderId": "avax-short"})


def test_positions_on_two_symbols_share_one_cross_margin_wallet(ex, emu):
    open_both(ex)
    fills = {t.client_order_id: t for t in emu.trades()}
    positions = {p["symbol"]: p for p in ex.fetch_positions()}
    assert {s: (p["side"], p["contracts"]) for s, p in positions.items()} == {
        SOL: ("long", 10.0), AVAX: ("short", 10.0)}
    assert positions[SOL]["entryPrice"] == fills["sol-long"].price_quote
    assert positions[AVAX]["entryPrice"] == fills["avax-short"].price_quote
    usdt = ex.fetch_balance()["USDT"]
    fees = sum(t.fee_quote for t in fills.values())
    assert usdt["total"] == pytest.approx(1_000.0 - fees, abs=1e-12)  # no notional moved
    im = sum(p["initialMargin"] for p in positions.values())
    assert usdt["used"] == pytest.approx(im, abs=1e-9)


def test_funding_is_paid_per_symbol_at_its_funding_times(ex, emu):
    open_both(ex)
    before = ex.fetch_balance()["USDT"]["total"]
    emu.clock.set(int(FIRST) + HOUR // 2)  # past the funding time
    emu.process_until()
    paid = {p.symbol: p for p in emu.matching.perps.payments}
    assert set(paid) == {SOL, AVAX}
    for symbol, p in paid.items():
        frame = FRAMES[symbol]
        mark = float(frame.open[frame.ts_ms == FIRST].iloc[0])
        assert (p.ts_ms, p.rate, p.mark_price_quote) == (int(FIRST), RATES[symbol], mark)
        assert p.payment_quote == p.size_base * mark * RATES[symbol]
    assert paid[SOL].payment_quote > 0  # a long pays a positive rate
    assert paid[AVAX].payment_quote > 0  # a short pays a negative one
    after = ex.fetch_balance()["USDT"]["total"]
    assert after == pytest.approx(before - sum(p.payment_quote for p in paid.values()), abs=1e-12)
    history = ex.fetch_funding_history(SOL)
    assert [(h["timestamp"], h["amount"]) for h in history] == [(int(FIRST), paid[SOL].payment_quote)]


def test_closing_a_position_realises_its_pnl_into_the_wallet(ex, emu):
    ex.create_order(SOL, "market", "buy", 10.0, None, {"clientOrderId": "open"})
    emu.clock.advance(2 * HOUR)
    ex.create_order(SOL, "market", "sell", 10.0, None, {"clientOrderId": "close", "reduceOnly": True})
    opened, closed = emu.trades()
    pnl = 10.0 * (closed.price_quote - opened.price_quote)
    usdt = ex.fetch_balance()["USDT"]
    assert usdt["total"] == pytest.approx(1_000.0 + pnl - opened.fee_quote - closed.fee_quote, abs=1e-9)
    assert ex.fetch_positions() == []


def test_margin_is_checked_across_symbols_and_reduce_only_cannot_open(ex, emu):
    open_both(ex)  # about 2 x 40 USDT of initial margin at 10x, prices near 38 and 41
    with pytest.raises(ccxt.InsufficientFunds, match="110007"):
        ex.create_order(SOL, "market", "buy", 250.0)  # ~956 margin+fees: fits 1,000 alone, not beside
    with pytest.raises(ccxt.InvalidOrder, match="110017"):
        ex.create_order(AVAX, "market", "sell", 1.0, None, {"reduceOnly": True})  # short grows
    ex.create_order(SOL, "market", "buy", 200.0)  # ~760 margin still fits beside the others
    assert len(emu.orders()) == 3
