"""The emulator's Bybit v5 dialect, driven by the real ccxt ``bybit`` client with real signed
requests: markets, clock, candles, balances, orders by ``orderLinkId``, Bybit's own refusals
(typed by ccxt from their ``retCode``), several symbols on one account, funding, signatures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ccxt
import pandas as pd
import pytest
from live_helpers import ENV, KEY, MARKET, SECRET, SYMBOL, candles, ohlcv

from coinrl.live.emulator import EmulatorServer, FixedClock, MarketSpec
from coinrl.live.exchange import connect_to_exchange
from coinrl.pipeline.errors import AuthenticationError
from coinrl.pipeline.exchange_client import create_exchange

K0 = 120
HOUR = 3_600_000
OTHER = "AVAX/USDT"
OTHER_MARKET = MarketSpec(
    symbol=OTHER, kind="spot", base="AVAX", quote="USDT", tick_size=0.001, step_size=0.25,
    min_qty=0.25, max_qty=9_000_000.0, min_notional=5.0, min_price=0.001, max_price=100_000.0,
)
PERPS = ("SOL/USDT:USDT", "AVAX/USDT:USDT")
SOL, AVAX = candles(K0 + 40, seed=5), candles(K0 + 40, seed=9)


def funding(frame: pd.DataFrame, rate: float) -> pd.DataFrame:
    """A funding event every 8 h at a constant ``rate``."""
    ts = frame.ts_ms[frame.ts_ms % (8 * HOUR) == 0]
    return pd.DataFrame({"ts_ms": ts.to_numpy(), "funding_rate": rate})


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    server = EmulatorServer(
        {SYMBOL: ohlcv(SOL), OTHER: ohlcv(AVAX), PERPS[0]: ohlcv(SOL), PERPS[1]: ohlcv(AVAX)},
        funding={PERPS[0]: funding(SOL, 1e-4), PERPS[1]: funding(AVAX, -2e-4)},
        clock=FixedClock(int(SOL.ts_ms.iloc[K0])), markets={SYMBOL: MARKET, OTHER: OTHER_MARKET},
        execution=ENV, accounts={KEY: (SECRET, {"USDT": 1_000.0})},
    )
    with server:
        yield server


def bybit(emu: EmulatorServer, secret: str = SECRET, key: str = KEY) -> Any:
    return create_exchange("bybit", exchange_url=emu.base_url,
                           config={"apiKey": key, "secret": secret, "enableRateLimit": False})


@pytest.fixture
def ex(emu: EmulatorServer) -> Any:
    client = bybit(emu)
    client.load_markets()
    return client


def test_markets_list_spot_and_linear_perpetuals_with_their_rules(ex, emu):
    assert sorted(ex.markets) == sorted([SYMBOL, OTHER, *PERPS])
    spot, perp = ex.market(SYMBOL), ex.market(PERPS[0])
    assert (spot["type"], spot["precision"]["amount"], spot["limits"]["cost"]["min"]) == ("spot", 0.25, 5.0)
    assert (perp["type"], perp["linear"], perp["settle"], perp["contractSize"]) == ("swap", True, "USDT", 1.0)
    rules = emu.data.specs[PERPS[0]]
    assert (perp["precision"]["amount"], perp["limits"]["cost"]["min"]) == (rules.step_size, rules.min_notional)


def test_time_and_candles_are_the_emulator_clock_and_the_stored_bars(ex, emu):
    assert ex.fetch_time() == emu.clock.now_ms()
    for symbol, frame in ((SYMBOL, SOL), (PERPS[1], AVAX)):
        rows = ex.fetch_ohlcv(symbol, "1h", limit=5)
        assert [r[0] for r in rows] == frame.ts_ms.iloc[K0 - 4:K0 + 1].tolist()  # oldest first
        closed = frame.iloc[K0 - 4:K0]
        assert [r[1:6] for r in rows[:-1]] == closed[["open", "high", "low", "close", "volume"]].values.tolist()


def test_orders_by_order_link_id_fill_rest_list_and_cancel(ex, emu):
    placed = ex.create_order(SYMBOL, "market", "buy", 5.0, None, {"clientOrderId": "m-1"})
    assert (placed["id"], placed["clientOrderId"]) == ("1", "m-1")  # Bybit acknowledges only
    ex.create_order(SYMBOL, "limit", "buy", 1.0, 20.0, {"clientOrderId": "l-1"})
    assert [o["clientOrderId"] for o in ex.fetch_open_orders(SYMBOL)] == ["l-1"]
    [done] = ex.fetch_open_orders(SYMBOL, None, None, {"orderLinkId": "m-1"})  # any status
    assert (done["status"], done["filled"], done["side"]) == ("closed", 5.0, "buy")
    by_id = ex.fetch_order("1", SYMBOL, {"acknowledged": True})  # ccxt's UTA fetch_order
    assert (by_id["clientOrderId"], by_id["status"]) == ("m-1", "closed")
    ex.cancel_order(None, SYMBOL, {"orderLinkId": "l-1"})
    finished = {o["clientOrderId"]: o["status"] for o in ex.fetch_canceled_and_closed_orders(SYMBOL)}
    assert finished == {"m-1": "closed", "l-1": "canceled"}
    [trade] = ex.fetch_my_trades(SYMBOL)
    [fill] = emu.trades()
    assert (trade["order"], trade["amount"], trade["price"]) == ("1", 5.0, fill.price_quote)
    assert trade["fee"]["currency"] == "USDT"
    assert trade["fee"]["cost"] == fill.fee_quote
    usdt = ex.fetch_balance()["USDT"]
    assert usdt["total"] == pytest.approx(1_000.0 - fill.quote_qty - fill.fee_quote, abs=1e-12)


def test_an_order_link_id_is_refused_even_after_its_first_order_filled(ex, emu):
    ex.create_order(SYMBOL, "market", "buy", 1.0, None, {"clientOrderId": "once"})
    assert emu.orders()[0].status == "FILLED"
    with pytest.raises(ccxt.InvalidOrder, match='"retCode":110072'):
        ex.create_order(SYMBOL, "market", "buy", 1.0, None, {"clientOrderId": "once"})
    assert emu.order_count() == 1


def test_bybit_refusals_are_typed_by_ccxt_from_their_ret_codes(ex, emu):
    with pytest.raises(ccxt.InsufficientFunds, match="170131"):
        ex.create_order(SYMBOL, "limit", "buy", 100.0, 30.0)  # 3,000 USDT with 1,000
    with pytest.raises(ccxt.InvalidOrder, match="170140"):
        ex.create_order(SYMBOL, "limit", "buy", 0.25, 10.0)  # 2.5 USDT < 5 USDT minimum
    with pytest.raises(ccxt.OrderNotFound, match="170213"):
        ex.cancel_order(None, SYMBOL, {"orderLinkId": "never-sent"})
    assert emu.order_count() == 0


def test_spot_symbols_share_one_quote_balance(ex, emu):
    ex.create_order(SYMBOL, "limit", "buy", 20.0, 30.0, {"clientOrderId": "sol"})  # 600 USDT
    usdt = ex.fetch_balance()["USDT"]
    assert usdt["used"] == pytest.approx(600.0 * (1 + ENV.maker_fee_rate), abs=1e-9)
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(OTHER, "limit", "buy", 20.0, 30.0, {"clientOrderId": "avax"})
    ex.cancel_order(None, SYMBOL, {"orderLinkId": "sol"})
    ex.create_order(OTHER, "limit", "buy", 20.0, 30.0, {"clientOrderId": "avax"})
    assert [o.client_order_id for o in emu.orders()] == ["sol", "avax"]


def test_funding_history_per_perpetual(ex, emu):
    now = emu.clock.now_ms()
    for symbol, frame, rate in ((PERPS[0], SOL, 1e-4), (PERPS[1], AVAX, -2e-4)):
        rows = ex.fetch_funding_rate_history(symbol)
        expected = funding(frame, rate)
        expected = expected[expected.ts_ms <= now]
        assert [r["timestamp"] for r in rows] == expected.ts_ms.tolist()
        assert {r["fundingRate"] for r in rows} == {rate}


def test_a_wrong_secret_or_unknown_key_is_an_authentication_error(emu):
    wrong = "not-the-secret"  # noqa: S105 - a test secret
    for client in (bybit(emu, secret=wrong), bybit(emu, key="UnknownKey123")):
        with pytest.raises(ccxt.AuthenticationError):
            client.fetch_balance()
    with pytest.raises(AuthenticationError):
        connect_to_exchange(KEY, wrong, exchange="bybit", exchange_url=emu.base_url,
                            max_clock_skew_ms=None, config={"enableRateLimit": False})


def test_a_stale_request_timestamp_is_refused_as_a_nonce_error(ex, emu):
    ex.options["timeDifference"] = 60_000  # our clock one minute behind the exchange's
    with pytest.raises(ccxt.InvalidNonce, match="10002"):
        ex.fetch_balance()
