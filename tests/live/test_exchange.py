"""The live exchange boundary over real ccxt -> real HTTP -> the emulator, on a FixedClock.

Proves: a signed order round trip fills at the next bar's open with the env's fee and slippage
and moves the balances exactly; limits fill when traded through; duplicates, filters and funds
give our taxonomy's errors with clear messages; bad keys fail fast without retries; temporary
failures are retried; an order whose answer was lost is looked up, never sent twice; credentials
come from the environment or a private key file and never reach a log line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from coinrl.envs.config import EnvConfig
from coinrl.envs.domain import Order, Side
from coinrl.envs.execution import ExecutionModel
from coinrl.live.emulator import EmulatorServer, FixedClock, MarketSpec
from coinrl.live.exchange import ExchangeClient, connect_to_exchange
from coinrl.live.keys import Credentials, load_credentials, read_key_file
from coinrl.live.orders import DuplicateClientOrderId, FilterFailure
from coinrl.pipeline.errors import (
    AuthenticationError,
    BadSymbol,
    ConfigError,
    DataError,
    ExchangeError,
    InsufficientFunds,
    InvalidOrder,
    TemporaryExchangeError,
)

HOUR_MS = 3_600_000
KEY = "LiveTestKey0123456789abcdefXYZ"
SECRET = "LiveTestSecret-9f8e7d6c5b4a3210-never-log-me"  # noqa: S105 - a test account
SYMBOL = "BTC/USDT"
ENV_CFG = EnvConfig(taker_fee_rate=0.001, maker_fee_rate=0.0008, slippage_bps=2.0)
SPEC = MarketSpec(
    symbol=SYMBOL, kind="spot", base="BTC", quote="USDT", tick_size=0.01, step_size=0.00001,
    min_qty=0.00001, max_qty=9000.0, min_notional=5.0, min_price=0.01, max_price=1_000_000.0,
)


@pytest.fixture
def candles(candle_factory) -> pd.DataFrame:
    return candle_factory(200)


def ts(candles: pd.DataFrame, i: int) -> int:
    return int(candles.ts_ms.iloc[i])


@pytest.fixture
def clock(candles) -> FixedClock:
    return FixedClock(ts(candles, 10) + HOUR_MS // 2)  # inside bar 10


@pytest.fixture
def emu(candles, clock) -> Iterator[EmulatorServer]:
    server = EmulatorServer(
        {SYMBOL: candles}, clock=clock, markets={SYMBOL: SPEC}, execution=ENV_CFG,
        accounts={KEY: (SECRET, {"USDT": 10_000.0})},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def connect(emu: EmulatorServer, key: str = KEY, secret: str = SECRET, **kw) -> ExchangeClient:
    kw.setdefault("max_clock_skew_ms", None)  # the emulator replays 2024 on a FixedClock
    kw.setdefault("config", {"enableRateLimit": False})
    return connect_to_exchange(key, secret, exchange_url=emu.base_url, **kw)


@pytest.fixture
def client(emu) -> Iterator[ExchangeClient]:
    with connect(emu) as ex:
        yield ex


def signed_requests(emu: EmulatorServer) -> list[str]:
    """Paths of the signed requests the emulator received, in order."""
    signed = ("/api/v3/account", "/api/v3/order", "/api/v3/myTrades", "/api/v3/openOrders",
              "/sapi/")
    return [r.path for r in emu.requests() if r.path.startswith(signed)]


# -- connecting -------------------------------------------------------------------------------
def test_connect_checks_markets_keys_and_reads_balances(client):
    assert SYMBOL in client.symbols
    b = client.balances()
    assert (b["USDT"].free, b["USDT"].used, b["USDT"].total) == (10_000.0, 0.0, 10_000.0)


@pytest.mark.parametrize(("key", "secret"), [(KEY, "a-wrong-secret"), ("UnknownKey123", SECRET)])
def test_bad_key_or_secret_is_an_authentication_error_and_is_not_retried(emu, key, secret):
    with pytest.raises(AuthenticationError, match="rejected the API key: check COINRL_API_KEY"):
        connect(emu, key, secret)
    assert len(signed_requests(emu)) == 1  # one signed call, refused, never retried


def test_clock_skew_is_checked_against_the_exchange_time(emu):
    # The emulator's clock sits in 2024 while this machine's is now: a huge skew.
    with pytest.raises(ExchangeError, match="clock") as e:
        connect(emu, max_clock_skew_ms=1000.0)
    assert not isinstance(e.value, TemporaryExchangeError | AuthenticationError)


def test_an_unreachable_exchange_is_a_temporary_error_after_the_retries():
    with pytest.raises(TemporaryExchangeError, match="load_markets"):
        connect_to_exchange(KEY, SECRET, exchange_url="http://127.0.0.1:9", max_retries=0,
                            max_clock_skew_ms=None, config={"enableRateLimit": False})


def test_unknown_symbols_fail_at_connect_with_close_matches(emu):
    with pytest.raises(BadSymbol, match=r"BTC/USDT"):
        connect(emu, symbols=["BTC/USDX"])


def test_request_timestamps_outside_the_receive_window_are_a_clear_clock_error(client, emu):
    client._client.options["timeDifference"] = 120_000  # this machine 2 min behind
    before = len(signed_requests(emu))
    with pytest.raises(ExchangeError, match="sync it") as e:
        client.balances()
    assert not isinstance(e.value, TemporaryExchangeError)
    assert len(signed_requests(emu)) == before + 1  # not retried


# -- orders -----------------------------------------------------------------------------------
def test_market_order_round_trip_fills_at_next_open_and_balances_change_exactly(
    client, emu, clock, candles,
):
    placed = client.create_order(SYMBOL, "buy", 0.123456789, "market", client_order_id="rt-1")
    assert (placed.status, placed.qty_base, placed.client_order_id) == ("open", 0.12345, "rt-1")
    clock.set(ts(candles, 11))
    done = client.fetch_order("rt-1")  # symbol remembered from create_order
    assert (done.status, done.filled_base) == ("closed", 0.12345)
    (trade,) = client.my_trades(SYMBOL)
    open11, vol11 = float(candles.open.iloc[11]), float(candles.volume.iloc[11])
    env_fill = ExecutionModel.from_config(ENV_CFG).market_fill(
        Order("rt-1", SYMBOL, Side.BUY, 0.12345), open11, vol11, trade.trade_id, ts(candles, 11)
    )
    # the env's fill, bit for bit (an exchange reports no slippage split: the cash is the same)
    assert trade.to_fill() == dataclasses.replace(env_fill, slippage_quote=0.0)
    assert trade.price_quote == pytest.approx(open11 * (1 + 2e-4), rel=1e-12)  # by hand
    assert trade.fee_quote == pytest.approx(0.12345 * open11 * 0.001, rel=1e-12)
    assert (trade.client_order_id, trade.ts_ms, trade.liquidity) == ("rt-1", ts(candles, 11), "taker")
    b = client.balances()
    assert b["BTC"].total == 0.12345
    assert b["USDT"].total == 10_000.0 - 0.12345 * env_fill.price_quote - env_fill.fee_quote


def test_limit_order_rests_then_fills_when_a_later_bar_trades_through(client, emu, clock, candles):
    lows = candles.low.to_numpy()
    # a buy limit just above the lowest low of bars 11..30: some bar in there trades through
    j = 11 + int(lows[11:31].argmin())
    limit = round(float(lows[j]) + 0.02, 2)
    assert (lows[11:j] > limit).all() or j == 11
    placed = client.create_order(SYMBOL, "buy", 0.01, "limit", limit, client_order_id="lim-1")
    assert [o.client_order_id for o in client.open_orders(SYMBOL)] == ["lim-1"]
    assert client.balances()["USDT"].used == pytest.approx(0.01 * limit * 1.0008)
    clock.set(ts(candles, j) + HOUR_MS)  # the crossing bar has closed
    done = client.fetch_order("lim-1")
    assert (done.status, done.average_price_quote, placed.price_quote) == ("closed", limit, limit)
    (trade,) = client.my_trades(SYMBOL)
    assert (trade.liquidity, trade.fee_quote) == ("maker", pytest.approx(0.01 * limit * 0.0008))
    assert client.open_orders(SYMBOL) == []


def test_cancel_order_by_client_id(client):
    client.create_order(SYMBOL, "buy", 0.01, "limit", 1000.0, client_order_id="cx-1")
    done = client.cancel_order("cx-1")
    assert done.status == "canceled"
    assert client.balances()["USDT"].used == 0.0
    again = client.cancel_order("cx-1")  # already canceled: its state, not an error
    assert again.status == "canceled"


def test_duplicate_client_order_id_is_invalid_order(client, emu):
    client.create_order(SYMBOL, "buy", 0.001, client_order_id="dup-1")
    with pytest.raises(DuplicateClientOrderId, match="already used"):
        client.create_order(SYMBOL, "buy", 0.001, client_order_id="dup-1")
    assert emu.order_count() == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0.000004, "market"), {}, r"rounds down to 0 at the lot step 1e-05"),
        ((0.0001, "limit", 40_000.0), {}, r"notional .* = 4 USDT is below the exchange minimum 5"),
        ((0.0001, "market"), {"ref_price_quote": 40_000.0}, r"= 4 USDT .* send at least 0.00013 BTC"),
        ((9001.0, "limit", 40_000.0), {}, r"above the maximum"),
    ],
)
def test_filters_are_checked_before_sending_with_the_numbers(client, emu, args, kwargs, message):
    with pytest.raises(InvalidOrder, match=message):
        client.create_order(SYMBOL, "buy", *args, **kwargs)
    assert emu.requests("/api/v3/order") == []  # nothing was sent


def test_quantity_and_price_are_rounded_to_lot_and_tick(client, emu):
    placed = client.create_order(SYMBOL, "buy", 0.0123456, "limit", 30_000.123456)
    assert (placed.qty_base, placed.price_quote) == (0.01234, 30_000.12)
    assert emu.orders()[0].limit_price_quote == 30_000.12


def test_exchange_side_filter_failure_is_invalid_order(client, emu):
    # without a reference price the client cannot check a market order's notional: the
    # exchange does, and its -1013 "Filter failure: NOTIONAL" becomes InvalidOrder
    with pytest.raises(FilterFailure, match="Filter failure: NOTIONAL"):
        client.create_order(SYMBOL, "buy", 0.0001)


def test_insufficient_funds(client):
    with pytest.raises(InsufficientFunds):
        client.create_order(SYMBOL, "buy", 1.0)  # ~40,000 USDT with 10,000


# -- faults and idempotency -------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["rate_limit", "server_error", "drop"])
@pytest.mark.slow
def test_temporary_failures_are_retried_and_place_exactly_one_order(client, emu, fault):
    rules = {
        "rate_limit": lambda: emu.faults.rate_limit(retry_after_s=0, count=2,
                                                    path_prefix="/api/v3/order"),
        "server_error": lambda: emu.faults.server_error(503, count=2, path_prefix="/api/v3/order"),
        "drop": lambda: emu.faults.drop(count=2, path_prefix="/api/v3/order"),
    }
    rules[fault]()
    placed = client.create_order(SYMBOL, "buy", 0.001, client_order_id=f"retry-{fault}")
    assert placed.client_order_id == f"retry-{fault}"
    assert emu.order_count() == 1
    assert emu.faults.fired()[fault] == 2


def test_drop_after_accept_is_looked_up_not_resent(client, emu):
    emu.faults.drop_after(count=1)
    placed = client.create_order(SYMBOL, "buy", 0.001, client_order_id="lost-1")
    assert placed.client_order_id == "lost-1"
    assert placed.status == "open"
    assert emu.order_count() == 1  # exactly one order on the exchange
    calls = [(r.path, r.fault) for r in emu.requests("/api/v3/order")]
    # the POST whose answer was lost, then a GET that found the order; no second POST
    assert calls == [("/api/v3/order", "drop_after"), ("/api/v3/order", "")]
    assert [r.query.get("origClientOrderId") for r in emu.requests("/api/v3/order")][1] == "lost-1"


@pytest.mark.slow
def test_a_timed_out_order_that_the_exchange_accepted_late_is_not_duplicated(emu, clock):
    emu.faults.latency(1500.0, count=1, path_prefix="/api/v3/order")
    with connect(emu, timeout_ms=500) as ex:
        placed = ex.create_order(SYMBOL, "buy", 0.001, client_order_id="slow-1")
        assert placed.client_order_id == "slow-1"
    assert emu.order_count() == 1


def test_a_rejected_order_is_not_retried(client, emu):
    emu.faults.reject(count=1)
    with pytest.raises(InvalidOrder, match="rejected by the exchange emulator"):
        client.create_order(SYMBOL, "buy", 0.001)
    assert emu.order_count() == 0
    assert len(emu.requests("/api/v3/order")) == 1


def test_persistent_failure_says_the_order_state_is_unknown(emu):
    emu.faults.server_error(503, count=None, path_prefix="/api/v3/order")
    with connect(emu, max_retries=1) as ex, pytest.raises(
        TemporaryExchangeError, match="state of order 'unk-1' is unknown"
    ):
        ex.create_order(SYMBOL, "buy", 0.001, client_order_id="unk-1")
    assert emu.order_count() == 0


# -- candles ------------------------------------------------------------------------------------
def test_fetch_closed_candles_never_returns_the_bar_in_progress(client, candles):
    frame = client.fetch_closed_candles(SYMBOL, "1h", limit=5)
    assert frame.ts_ms.tolist() == candles.ts_ms.iloc[5:10].tolist()  # bar 10 is in progress
    assert frame.close.tolist() == candles.close.iloc[5:10].tolist()


def test_stale_candles_are_refused(client, emu, clock, candles):
    emu.faults.stale()
    client.fetch_closed_candles(SYMBOL, "1h", limit=3)  # the rule fires: data frozen now
    clock.set(ts(candles, 14))
    with pytest.raises(DataError, match="stale candles"):
        client.fetch_closed_candles(SYMBOL, "1h", limit=3)


# -- credentials --------------------------------------------------------------------------------
def test_credentials_come_from_per_exchange_then_generic_environment_variables():
    env = {"COINRL_API_KEY": "generic-key", "COINRL_API_SECRET": "generic-secret"}
    assert load_credentials("binance", env=env).api_key == "generic-key"
    env |= {"COINRL_BINANCE_API_KEY": "bn-key", "COINRL_BINANCE_API_SECRET": "bn-secret"}
    creds = load_credentials("binance", env=env)
    assert (creds.api_key, creds.reveal_secret(), creds.source) == (
        "bn-key", "bn-secret", "env:COINRL_BINANCE_API_KEY")
    with pytest.raises(ConfigError, match="COINRL_API_SECRET is not"):
        load_credentials("kraken", env={"COINRL_API_KEY": "k"})
    with pytest.raises(ConfigError, match="COINRL_API_KEY/COINRL_API_SECRET"):
        load_credentials("kraken", env={})


def test_key_file_must_be_private(tmp_path: Path):
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"binance": {"api_key": "file-key", "secret": "file-secret"}}))
    path.chmod(0o644)
    with pytest.raises(ConfigError, match=f"mode 0644.*chmod 600 {path}"):
        read_key_file(path)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_credentials("binance", env={"COINRL_KEY_FILE": str(path)})
    path.chmod(0o600)
    creds = load_credentials("binance", env={"COINRL_KEY_FILE": str(path)})
    assert (creds.api_key, creds.reveal_secret()) == ("file-key", "file-secret")


def test_a_bad_key_file_error_never_shows_its_content(tmp_path: Path):
    path = tmp_path / "keys.json"
    path.write_text('{"api_key": "k", "secret": "the-secret-value"')  # truncated JSON
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError) as e:
        read_key_file(path)
    assert "the-secret-value" not in str(e.value)


def test_credentials_never_show_or_save_the_secret():
    creds = Credentials(KEY, SECRET)
    assert SECRET not in repr(creds) + str(creds) + f"{creds}"
    assert KEY not in repr(creds)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(creds)


def test_secrets_never_reach_any_log_line(emu, clock, candles, caplog):
    loggers = [logging.getLogger(n) for n in ("", "ccxt", "urllib3", "aiohttp", "coinrl")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    try:
        with connect(emu) as ex:
            emu.faults.drop_after(count=1)
            ex.create_order(SYMBOL, "buy", 0.001, client_order_id="log-1")
            clock.set(ts(candles, 11))
            ex.my_trades(SYMBOL)
            ex.fetch_closed_candles(SYMBOL, "1h", limit=2)
            with pytest.raises(InsufficientFunds):
                ex.create_order(SYMBOL, "buy", 5.0)
        with pytest.raises(AuthenticationError) as e:
            connect(emu, KEY, "some-other-wrong-secret")
    finally:
        for lg, level in zip(loggers, old, strict=True):
            lg.setLevel(level)
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert len(caplog.records) > 20
    assert "X-MBX-APIKEY" in text
    assert SECRET not in text
    assert "some-other-wrong-secret" not in text
    assert KEY not in text  # the key is masked too
    assert SECRET not in str(e.value)
    assert KEY not in str(e.value)


# -- cancels and re-sends mirror Binance ----------------------------------------------------------
def test_a_cancel_is_booked_under_the_cancelled_orders_id_not_the_cancel_requests(client, emu):
    """Binance answers a cancel with the cancel request's own clientOrderId (the original is in
    origClientOrderId); the order is the original one."""
    placed = client.create_order(SYMBOL, "buy", 0.001, client_order_id="rest-1")  # rests mid-bar
    assert placed.status == "open"
    done = client.cancel_order("rest-1", SYMBOL)
    raw = emu.orders()[0]
    assert (done.client_order_id, done.order_id, done.status) == ("rest-1", placed.order_id, "canceled")
    assert raw.client_order_id == "rest-1"
    assert client._cid_of[placed.order_id] == "rest-1"  # later fills map to the real order


def test_a_lost_order_is_never_re_sent_on_a_lookup_by_id_alone(emu, clock, candles):
    """The first send is accepted and FILLS (sent at the bar's open), its answer is lost, and the
    lookup by client id says "does not exist" (-2013). Binance would accept a re-send with the
    same id (unique among open orders only): the exchange's order list since the intent shows
    the order, so nothing is re-sent."""
    clock.set(ts(candles, 11))  # a market order fills on arrival
    emu.faults.drop_after(count=1)
    emu.faults.reject(code=-2013, message="Order does not exist.", method="GET", count=None)
    with connect(emu) as ex:
        got = ex.create_order(SYMBOL, "buy", 0.001, client_order_id="lost-2",
                              since_ms=ts(candles, 11) - 1000)
    assert got.client_order_id == "lost-2"
    assert got.status == "closed"
    assert emu.order_count() == 1
    # the lookups (GET) were all answered "does not exist"; the only other request is the one POST
    assert [r.fault for r in emu.requests("/api/v3/order") if r.fault != "reject"] == ["drop_after"]
