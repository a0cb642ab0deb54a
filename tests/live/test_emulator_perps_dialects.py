"""Linear perpetuals on both of the emulator's dialects (Binance ``/fapi``, Bybit v5
``category=linear``), driven by each exchange's real ccxt client: one engine, so the same orders
give the same positions, wallet and funding on either; each dialect words it its own way (ccxt's
funding amount is what Binance says the account RECEIVED and what Bybit says it PAID)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ccxt
import pandas as pd
import pytest
from live_helpers import DIALECTS, ENV, KEY, SECRET, candles, ohlcv

from coinrl.live.emulator import EmulatorServer, FixedClock
from coinrl.live.orders import OrderInsufficientFunds, classify_refusal
from coinrl.pipeline.exchange_client import create_exchange

HOUR = 3_600_000
SOL, AVAX = "SOL/USDT:USDT", "AVAX/USDT:USDT"
RATES = {SOL: 1e-4, AVAX: -2e-4}
FRAMES = {SOL: candles(200, seed=5), AVAX: candles(200, seed=9)}
FIRST = int(FRAMES[SOL].ts_ms[FRAMES[SOL].ts_ms % (8 * HOUR) == 0].iloc[4])  # a funding time
K0 = int(FRAMES[SOL].index[FRAMES[SOL].ts_ms == FIRST][0]) - 3


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


def client(emu: EmulatorServer, dialect: str) -> Any:
    ex = create_exchange(dialect, exchange_url=emu.base_url,
                         config={"apiKey": KEY, "secret": SECRET, "enableRateLimit": False})
    ex.load_markets()
    return ex


def session(emu: EmulatorServer, dialect: str) -> dict[str, Any]:
    """Long SOL, short AVAX, across a funding time, then close SOL at the next open: what the
    client reports."""
    ex = client(emu, dialect)
    ex.create_order(SOL, "market", "buy", 10.0, None, {"clientOrderId": "sol-long"})
    ex.create_order(AVAX, "market", "sell", 10.0, None, {"clientOrderId": "avax-short"})
    emu.clock.set(FIRST + HOUR // 2)
    positions = {p["symbol"]: (p["side"], p["contracts"], p["entryPrice"]) for p in ex.fetch_positions()}
    history = {s: [(h["timestamp"], h["amount"]) for h in ex.fetch_funding_history(s)] for s in (SOL, AVAX)}
    ex.create_order(SOL, "market", "sell", 10.0, None, {"clientOrderId": "sol-close", "reduceOnly": True})
    emu.clock.set(FIRST + HOUR)  # it fills at the next bar's open
    return {"positions": positions, "funding": history, "after": ex.fetch_positions(),
            "total": ex.fetch_balance({"type": "swap"})["USDT"]["total"]}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_positions_funding_and_close_are_the_engines_on_each_dialect(emu, dialect):
    got = session(emu, dialect)
    fills = {t.client_order_id: t for t in emu.trades()}
    paid = {p.symbol: p.payment_quote for p in emu.matching.perps.payments}
    assert got["positions"] == {SOL: ("long", 10.0, fills["sol-long"].price_quote),
                                AVAX: ("short", 10.0, fills["avax-short"].price_quote)}
    sign = -1.0 if dialect == "binance" else 1.0  # received (Binance) vs paid (Bybit)
    assert got["funding"] == {s: [(FIRST, sign * paid[s])] for s in (SOL, AVAX)}
    assert [(p["symbol"], p["side"]) for p in got["after"]] == [(AVAX, "short")]
    realised = 10.0 * (fills["sol-close"].price_quote - fills["sol-long"].price_quote)
    wallet = 1_000.0 + realised - sum(t.fee_quote for t in fills.values()) - sum(paid.values())
    assert emu.accounts.get(KEY).total("USDT") == pytest.approx(wallet, abs=1e-9)
    if dialect == "bybit":  # Bybit's total is the wallet; Binance's the margin balance (+ uPnL)
        assert got["total"] == pytest.approx(wallet, abs=1e-9)
    else:
        upnl = emu.matching.perps.unrealised(KEY, "USDT", emu.clock.now_ms())
        assert got["total"] == pytest.approx(wallet + upnl, abs=1e-9)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_margin_is_checked_across_symbols_on_each_dialect(emu, dialect):
    ex = client(emu, dialect)
    ex.create_order(SOL, "market", "buy", 10.0)
    ex.create_order(AVAX, "market", "sell", 10.0)
    with pytest.raises(ccxt.ExchangeError) as refused:  # ~956 margin+fees: fits 1,000 alone
        ex.create_order(SOL, "market", "buy", 250.0)
    assert classify_refusal(dialect, str(refused.value)) is OrderInsufficientFunds
    with pytest.raises(ccxt.ExchangeError, match="-2022|110017"):  # would grow the short
        ex.create_order(AVAX, "market", "sell", 1.0, None, {"reduceOnly": True})
    ex.create_order(SOL, "market", "buy", 200.0)
    assert len(emu.orders()) == 3


def test_the_same_orders_give_the_same_books_on_both_dialects():
    books = []
    for dialect in DIALECTS:
        server = EmulatorServer(
            {s: ohlcv(f) for s, f in FRAMES.items()},
            funding={s: funding(f, RATES[s]) for s, f in FRAMES.items()},
            clock=FixedClock(int(FRAMES[SOL].ts_ms.iloc[K0])), execution=ENV,
            accounts={KEY: (SECRET, {"USDT": 1_000.0})},
        )
        with server:
            session(server, dialect)
            books.append((server.accounts.get(KEY).total("USDT"),
                          {k: (p.size_base, p.entry_price_quote) for k, p in server.matching.perps.positions.items()}))
    assert books[0] == books[1]
