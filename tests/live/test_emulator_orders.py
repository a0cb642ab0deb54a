"""The emulator's order half: Binance's signed API, matching against candles, order faults.

HTTP tests sign requests by hand (``requests`` + HMAC) to check Binance's exact answers, and use
the real ccxt ``binance`` client to check ccxt understands them. Matching rules are checked on
tiny hand-made candles against hand-computed fills and against the env's own execution model
(:class:`coinrl.envs.execution.ExecutionModel`), and as invariants with hypothesis.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import ccxt
import numpy as np
import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from coinrl.envs.config import EnvConfig
from coinrl.envs.domain import Order, OrderType, Side
from coinrl.envs.execution import ExecutionModel
from coinrl.live.emulator import (
    Accounts,
    EmulatedMarkets,
    EmulatorServer,
    FaultPlan,
    FixedClock,
    MarketSpec,
    MatchingEngine,
    OrderRejected,
    sign_payload,
)
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.exchange_client import override_api_urls

HOUR_MS = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
KEY = "TESTKEY0123456789abcdefABCDEF"
SECRET = "s3cret-0123456789-abcdefghijklmnop"  # noqa: S105 - a test account
SYMBOL = "BTC/USDT"
TAKER, MAKER, SLIP_BPS = 0.001, 0.0008, 2.0

# Hand-made bars around 100: open, high, low, close, volume.
BARS = [
    (100.0, 101.0, 99.0, 100.0, 10.0),   # 0
    (100.0, 102.0, 98.0, 101.0, 11.0),   # 1
    (101.0, 103.0, 97.0, 102.0, 12.0),   # 2  low 97
    (102.0, 104.0, 96.0, 103.0, 13.0),   # 3  low 96
    (103.0, 108.0, 95.0, 104.0, 14.0),   # 4  high 108
    (104.0, 105.0, 94.0, 104.5, 15.0),   # 5
    (104.5, 106.0, 93.0, 105.0, 16.0),   # 6
    (105.0, 107.0, 92.0, 106.0, 17.0),   # 7
]
SPEC = MarketSpec(
    symbol=SYMBOL, kind="spot", base="BTC", quote="USDT", tick_size=0.01, step_size=0.001,
    min_qty=0.001, max_qty=1000.0, min_notional=5.0, min_price=0.01, max_price=100_000.0,
)
ENV_CFG = EnvConfig(taker_fee_rate=TAKER, maker_fee_rate=MAKER, slippage_bps=SLIP_BPS)


def ts(i: int) -> int:
    """Open time of hand-made bar ``i``."""
    return T0 + i * HOUR_MS


def bars_frame(rows: list[tuple[float, float, float, float, float]] = BARS) -> pd.DataFrame:
    arr = np.asarray(rows, dtype=np.float64)
    frame = pd.DataFrame({
        "ts_ms": T0 + np.arange(len(rows), dtype=np.int64) * HOUR_MS,
        "open": arr[:, 0], "high": arr[:, 1], "low": arr[:, 2], "close": arr[:, 3],
        "volume": arr[:, 4],
    })
    frame.attrs["timeframe"] = "1h"
    return frame


def model() -> ExecutionModel:
    return ExecutionModel.from_config(ENV_CFG)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(ts(1) + HOUR_MS // 2)  # inside bar 1


@pytest.fixture
def emu(clock: FixedClock) -> Iterator[EmulatorServer]:
    server = EmulatorServer(
        {SYMBOL: bars_frame()}, clock=clock, markets={SYMBOL: SPEC}, execution=ENV_CFG,
        accounts={KEY: (SECRET, {"USDT": 1000.0, "BTC": 2.0})},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def signed(
    emu: EmulatorServer, method: str, path: str, *, key: str = KEY, secret: str = SECRET,
    timestamp: int | None = None, **params: object,
) -> requests.Response:
    """One request signed the way Binance (and ccxt) signs it."""
    query = urlencode({**params, "timestamp": timestamp if timestamp is not None else now_ms()})
    sig = sign_payload(secret, query)
    headers = {"X-MBX-APIKEY": key}
    url = f"{emu.base_url}{path}"
    if method in ("GET", "DELETE"):
        return requests.request(method, f"{url}?{query}&signature={sig}", headers=headers, timeout=10)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return requests.request(method, url, data=f"{query}&signature={sig}", headers=headers,
                            timeout=10)


def order(emu: EmulatorServer, **params: object) -> requests.Response:
    base: dict[str, object] = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET"}
    base.update(params)
    return signed(emu, "POST", "/api/v3/order", **base)


def balances(emu: EmulatorServer) -> dict[str, tuple[float, float]]:
    r = signed(emu, "GET", "/api/v3/account")
    assert r.status_code == 200, r.text
    return {b["asset"]: (float(b["free"]), float(b["locked"])) for b in r.json()["balances"]}


def ccxt_client(emu: EmulatorServer, key: str = KEY, secret: str = SECRET) -> ccxt.Exchange:
    ex = ccxt.binance({"apiKey": key, "secret": secret, "enableRateLimit": False})
    ex.urls["api"] = override_api_urls(ex.urls["api"], emu.base_url)
    return ex


# -- authentication -------------------------------------------------------------------------------
def test_a_correctly_signed_request_reads_the_account(emu):
    r = signed(emu, "GET", "/api/v3/account")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["canTrade"] is True
    assert body["accountType"] == "SPOT"
    assert {b["asset"]: b["free"] for b in body["balances"]} == {"BTC": "2.0", "USDT": "1000.0"}
    assert body["commissionRates"]["taker"] == "0.001"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"secret": "wrong-secret"}, 400, -1022),
        ({"key": "UNKNOWNKEY123"}, 401, -2015),
        ({"key": "bad key!"}, 401, -2014),
        ({"timestamp": 1}, 400, -1021),  # far outside recvWindow
        ({"timestamp": now_ms() + 60_000}, 400, -1021),  # from the future
    ],
)
def test_bad_signatures_keys_and_timestamps_get_binance_errors(emu, kwargs, status, code):
    r = signed(emu, "GET", "/api/v3/account", **kwargs)
    assert r.status_code == status
    assert r.json()["code"] == code


def test_a_tampered_parameter_breaks_the_signature(emu):
    query = urlencode({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.1",
                       "timestamp": now_ms()})
    sig = sign_payload(SECRET, query)
    r = requests.post(f"{emu.base_url}/api/v3/order",
                      data=query.replace("0.1", "0.9") + f"&signature={sig}",
                      headers={"X-MBX-APIKEY": KEY,
                               "Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert r.json()["code"] == -1022
    assert emu.order_count() == 0


def test_missing_key_header_is_rejected_before_anything_else(emu):
    r = requests.get(f"{emu.base_url}/api/v3/account", params={"timestamp": now_ms()}, timeout=10)
    assert (r.status_code, r.json()["code"]) == (401, -2014)


def test_ccxt_maps_the_auth_errors_to_authentication_error(emu):
    for key, secret in ((KEY, "wrong-secret"), ("NOSUCHKEY", SECRET)):
        with pytest.raises(ccxt.AuthenticationError):
            ccxt_client(emu, key, secret).fetch_balance()


def test_accounts_can_be_added_over_the_admin_endpoint_and_secrets_are_never_answered(emu):
    r = requests.post(f"{emu.base_url}/_emulator/accounts", timeout=10, json={
        "api_key": "SECONDKEY42", "secret": "another-secret-xyz", "balances": {"USDT": 50}})
    assert r.status_code == 200, r.text
    assert signed(emu, "GET", "/api/v3/account", key="SECONDKEY42",
                  secret="another-secret-xyz").status_code == 200  # noqa: S106
    listing = requests.get(f"{emu.base_url}/_emulator/accounts", timeout=10).text
    assert "another-secret-xyz" not in listing
    assert SECRET not in listing
    assert KEY not in listing  # keys are masked too
    bad = requests.post(f"{emu.base_url}/_emulator/accounts", timeout=10,
                        json={"api_key": "K2", "secret": "x", "balances": {"USDT": -1}})
    assert bad.status_code == 400


def test_account_reprs_and_config_errors_never_show_the_secret():
    accounts = Accounts({KEY: (SECRET, {"USDT": 1.0})})
    assert SECRET not in repr(accounts) + repr(accounts.get(KEY)) + str(accounts.get(KEY))
    with pytest.raises(ConfigError) as e:
        accounts.add("BAD KEY", SECRET, {})
    assert SECRET not in str(e.value)
    with pytest.raises(ConfigError):
        Accounts({KEY: (SECRET, {"usdt": 1.0})})


# -- market orders ----------------------------------------------------------------------------
def test_market_order_fills_at_the_next_bars_open_with_the_env_fee_and_slippage(emu, clock):
    r = order(emu, quantity="1.5", newClientOrderId="m1")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "NEW"
    assert r.json()["fills"] == []
    clock.set(ts(2) - 1)  # bar 1's last millisecond: bar 2 has not opened
    assert signed(emu, "GET", "/api/v3/order", symbol="BTCUSDT",
                  origClientOrderId="m1").json()["status"] == "NEW"
    clock.set(ts(2))
    got = signed(emu, "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="m1").json()
    assert got["status"] == "FILLED"
    assert got["executedQty"] == "1.5"
    (trade,) = signed(emu, "GET", "/api/v3/myTrades", symbol="BTCUSDT").json()
    # hand-computed: open of bar 2 = 101, slippage 2 bps, taker fee 0.1 % of 1.5 * 101
    assert float(trade["price"]) == pytest.approx(101.0 * (1 + 2e-4), rel=1e-12)
    assert float(trade["commission"]) == pytest.approx(1.5 * 101.0 * TAKER, rel=1e-12)
    assert trade["commissionAsset"] == "USDT"
    assert trade["time"] == ts(2)
    assert trade["isMaker"] is False
    # and bit-identical to the env's own execution model
    env_fill = model().market_fill(Order("m1", SYMBOL, Side.BUY, 1.5), 101.0, 12.0, "1", ts(2))
    assert float(trade["price"]) == env_fill.price_quote
    assert float(trade["commission"]) == env_fill.fee_quote
    b = balances(emu)
    assert b["BTC"] == (2.0 + 1.5, 0.0)
    assert b["USDT"] == (1000.0 - 1.5 * env_fill.price_quote - env_fill.fee_quote, 0.0)


def test_a_market_order_sent_exactly_at_a_bar_open_fills_at_that_open_at_once(emu, clock):
    clock.set(ts(3))
    r = order(emu, side="SELL", quantity="0.5")
    body = r.json()
    assert body["status"] == "FILLED"
    (fill,) = body["fills"]
    env_fill = model().market_fill(Order("x", SYMBOL, Side.SELL, 0.5), 102.0, 13.0, "1", ts(3))
    assert float(fill["price"]) == env_fill.price_quote < 102.0  # a sell slips down
    assert balances(emu)["USDT"][0] == 1000.0 + 0.5 * env_fill.price_quote - env_fill.fee_quote


def test_market_fill_grace_lets_a_slightly_late_order_fill_at_the_open(clock):
    with EmulatorServer({SYMBOL: bars_frame()}, clock=clock, markets={SYMBOL: SPEC},
                        execution=ENV_CFG, accounts={KEY: (SECRET, {"USDT": 1000.0})},
                        market_fill_grace_ms=5_000) as server:
        clock.set(ts(3) + 4_000)
        fills = order(server, quantity="0.1").json()["fills"]
        assert float(fills[0]["price"]) == pytest.approx(102.0 * (1 + 2e-4), rel=1e-12)
        assert server.trades()[0].ts_ms == ts(3) + 4_000  # never before the order existed
        clock.set(ts(3) + 6_000)
        assert order(server, quantity="0.1").json()["status"] == "NEW"  # waits for bar 4


# -- limit orders -----------------------------------------------------------------------------
def test_a_limit_buy_fills_only_when_a_later_bar_trades_through_it(emu, clock):
    # bar 2 touches 97 exactly (low == limit): not through; bar 3's low 96 goes through
    r = order(emu, type="LIMIT", timeInForce="GTC", quantity="2", price="97.00",
              newClientOrderId="lim")
    assert r.json()["status"] == "NEW"
    assert balances(emu)["USDT"] == pytest.approx((1000.0 - 2 * 97 * (1 + MAKER), 2 * 97 * (1 + MAKER)))
    clock.set(ts(4) - 1)  # bar 3 traded through but is not closed yet: nothing revealed early
    assert emu.trades() == []
    clock.set(ts(4))
    (t,) = emu.trades()
    assert (t.price_quote, t.qty_base, t.ts_ms, t.is_maker) == (97.0, 2.0, ts(4), True)
    assert t.fee_quote == 2 * 97.0 * MAKER
    assert t.slippage_quote == 0.0
    assert balances(emu)["USDT"] == (1000.0 - 2 * 97.0 - 2 * 97.0 * MAKER, 0.0)


def test_a_limit_never_fills_in_the_bar_it_was_sent_in(emu, clock):
    clock.set(ts(2) + HOUR_MS // 2)  # bar 2's low (97) is below 97.5, but the order came late
    order(emu, type="LIMIT", timeInForce="GTC", quantity="1", price="97.5")
    clock.set(ts(3))
    assert emu.trades() == []
    clock.set(ts(4))
    assert [t.ts_ms for t in emu.trades()] == [ts(4)]


def test_a_limit_sell_fills_when_the_high_goes_through(emu, clock):
    order(emu, side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="105.00")
    clock.set(ts(8))
    (t,) = emu.trades()
    assert (t.price_quote, t.ts_ms) == (105.0, ts(5))  # bar 4's high 108 > 105


def test_cancel_releases_the_locked_funds_exactly_and_cannot_cancel_twice(emu):
    order(emu, type="LIMIT", timeInForce="GTC", quantity="3", price="90.00", newClientOrderId="c1")
    assert balances(emu)["USDT"][1] > 0
    r = signed(emu, "DELETE", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="c1")
    assert r.status_code == 200
    assert r.json()["status"] == "CANCELED"
    assert balances(emu)["USDT"] == (1000.0, 0.0)
    again = signed(emu, "DELETE", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="c1")
    assert (again.status_code, again.json()["code"]) == (400, -2011)
    missing = signed(emu, "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="nope")
    assert (missing.status_code, missing.json()["code"]) == (400, -2013)


def test_open_and_all_orders(emu, clock):
    order(emu, type="LIMIT", timeInForce="GTC", quantity="1", price="50.00", newClientOrderId="o1")
    order(emu, quantity="0.1", newClientOrderId="o2")
    clock.set(ts(2))
    open_ = signed(emu, "GET", "/api/v3/openOrders", symbol="BTCUSDT").json()
    assert [o["clientOrderId"] for o in open_] == ["o1"]
    every = signed(emu, "GET", "/api/v3/allOrders", symbol="BTCUSDT").json()
    assert [(o["clientOrderId"], o["status"]) for o in every] == [("o1", "NEW"), ("o2", "FILLED")]
    canceled = signed(emu, "DELETE", "/api/v3/openOrders", symbol="BTCUSDT").json()
    assert [o["origClientOrderId"] for o in canceled] == ["o1"]
    admin = requests.get(f"{emu.base_url}/_emulator/orders", timeout=10).json()
    assert admin["count"] == 2


# -- rejections -------------------------------------------------------------------------------
def test_a_client_order_id_of_an_open_order_is_rejected_and_no_second_order_exists(emu, clock):
    assert order(emu, quantity="0.1", newClientOrderId="dup").status_code == 200  # rests mid-bar
    r = order(emu, quantity="0.1", newClientOrderId="dup")
    assert (r.status_code, r.json()) == (400, {"code": -2010, "msg": "Duplicate order sent."})
    assert emu.order_count() == 1


def test_a_filled_orders_client_id_is_accepted_again_as_binance_does(emu, clock):
    """Binance documents newClientOrderId as unique among OPEN orders: a re-send after the first
    order filled is a second order. The brokers must prove absence before re-sending."""
    assert order(emu, quantity="0.1", newClientOrderId="dup").status_code == 200
    clock.set(ts(2))  # the first one filled
    assert order(emu, quantity="0.1", newClientOrderId="dup").status_code == 200
    assert emu.order_count() == 2


@pytest.mark.parametrize(
    ("params", "filter_name"),
    [
        ({"quantity": "0.0015"}, "LOT_SIZE"),  # not a multiple of the 0.001 step
        ({"quantity": "0.0001"}, "LOT_SIZE"),  # below min_qty
        ({"quantity": "0.04"}, "NOTIONAL"),  # 0.04 * 100 = 4 < 5
        ({"quantity": "200"}, "MARKET_LOT_SIZE"),  # above max_qty / 10 for market orders
        ({"type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "99.005"}, "PRICE_FILTER"),
        ({"type": "LIMIT", "timeInForce": "GTC", "quantity": "0.04", "price": "100"}, "NOTIONAL"),
    ],
)
def test_filters_reject_with_binance_filter_failures(emu, params, filter_name):
    r = order(emu, **params)
    assert (r.status_code, r.json()) == (400, {"code": -1013, "msg": f"Filter failure: {filter_name}"})
    assert emu.order_count() == 0


def test_insufficient_balance_counts_funds_locked_by_open_orders(emu):
    # 1000 USDT: a 9-unit limit at 100 locks 900.72, leaving too little for 1 more at 100
    assert order(emu, type="LIMIT", timeInForce="GTC", quantity="9", price="100").status_code == 200
    r = order(emu, type="LIMIT", timeInForce="GTC", quantity="1", price="100")
    assert r.json() == {"code": -2010, "msg": "Account has insufficient balance for requested action."}
    sell = order(emu, side="SELL", quantity="2.001")  # holds 2 BTC
    assert sell.json()["code"] == -2010
    with pytest.raises(ccxt.InsufficientFunds):
        ccxt_client(emu).create_order(SYMBOL, "limit", "buy", 1, 100)


def test_ccxt_round_trip_parses_orders_trades_and_balances(emu, clock):
    ex = ccxt_client(emu)
    ex.load_markets()
    o = ex.create_order(SYMBOL, "market", "buy", 0.25, params={"newClientOrderId": "cc1"})
    assert (o["status"], o["clientOrderId"], o["amount"]) == ("open", "cc1", 0.25)
    clock.set(ts(2))
    got = ex.fetch_order(o["id"], SYMBOL)
    assert got["status"] == "closed"
    assert got["filled"] == 0.25
    (t,) = ex.fetch_my_trades(SYMBOL)
    assert t["order"] == o["id"]
    assert t["fee"]["currency"] == "USDT"
    assert t["price"] == emu.trades()[0].price_quote
    assert ex.fetch_balance()["BTC"]["total"] == 2.25
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("999", SYMBOL)


# -- faults -----------------------------------------------------------------------------------
def test_partial_fill_fault_fills_the_rest_at_the_next_bar(emu, clock):
    emu.faults.partial_fill(0.5, symbol=SYMBOL, count=1)
    order(emu, quantity="1.25", newClientOrderId="pf")
    clock.set(ts(2))
    got = signed(emu, "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="pf").json()
    assert (got["status"], got["executedQty"]) == ("PARTIALLY_FILLED", "0.625")
    clock.set(ts(3))
    got = signed(emu, "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="pf").json()
    assert (got["status"], got["executedQty"]) == ("FILLED", "1.25")
    first, second = emu.trades()
    assert (first.qty_base, first.ts_ms, second.qty_base, second.ts_ms) == (0.625, ts(2), 0.625, ts(3))
    assert second.price_quote == pytest.approx(102.0 * (1 + 2e-4), rel=1e-12)
    assert balances(emu)["BTC"] == (3.25, 0.0)


def test_reject_fault_refuses_the_order_and_nothing_is_placed(emu):
    emu.faults.reject(message="Market is under maintenance (test).", count=1)
    r = order(emu, quantity="0.1")
    assert (r.status_code, r.json()["code"]) == (400, -2010)
    assert emu.order_count() == 0
    assert signed(emu, "GET", "/api/v3/order", symbol="BTCUSDT", orderId=1).json()["code"] == -2013
    assert order(emu, quantity="0.1").status_code == 200  # count=1: the next one goes through


def test_drop_after_accept_loses_the_answer_but_the_order_exists(emu):
    emu.faults.drop_after(count=1)
    with pytest.raises(requests.ConnectionError):
        order(emu, quantity="0.1", newClientOrderId="lost")
    assert emu.order_count() == 1
    got = signed(emu, "GET", "/api/v3/order", symbol="BTCUSDT", origClientOrderId="lost")
    assert got.json()["status"] == "NEW"
    (rec,) = [r for r in emu.requests("/api/v3/order") if r.fault]
    assert (rec.fault, rec.status) == ("drop_after", 0)


def test_drop_before_processing_places_nothing(emu):
    emu.faults.drop(count=1, path_prefix="/api/v3/order")
    with pytest.raises(requests.ConnectionError):
        order(emu, quantity="0.1")
    assert emu.order_count() == 0


def test_stale_fault_freezes_klines_while_orders_keep_matching(emu, clock):
    def last_open() -> int:
        rows = requests.get(f"{emu.base_url}/api/v3/klines", timeout=10,
                            params={"symbol": "BTCUSDT", "interval": "1h"}).json()
        return int(rows[-1][0])

    emu.faults.stale()
    assert last_open() == ts(1)  # the rule fires here: data frozen at this time
    order(emu, quantity="0.1")
    clock.set(ts(5))
    assert last_open() == ts(1)  # frozen
    assert len(emu.trades()) == 1  # matching runs on the real clock
    emu.faults.clear()
    assert last_open() == ts(5)


def test_order_fault_rules_only_hit_their_method_and_path():
    plan = FaultPlan()
    plan.drop_after(count=1)
    assert plan.decide("/api/v3/order", "GET").action is None
    assert plan.decide("/api/v3/openOrders", "POST").action is None
    action = plan.decide("/api/v3/order", "POST").action
    assert action is not None
    assert action.kind == "drop_after"
    plan.partial_fill(0.25, symbol="ETH/USDT")
    assert plan.decide("/api/v3/order", "POST").action is None  # engine kinds never hit requests
    assert plan.decide_fill("BTC/USDT") is None
    assert plan.decide_fill("ETH/USDT") == 0.25
    assert plan.decide_fill("ETH/USDT") is None  # count=1 used up


def test_a_market_buy_that_gaps_beyond_the_account_fills_what_it_can_and_expires(clock):
    rows = [(100.0, 101.0, 99.0, 100.0, 10.0), (100.0, 101.0, 99.0, 100.0, 10.0),
            (120.0, 121.0, 119.0, 120.0, 10.0)]
    with EmulatorServer({SYMBOL: bars_frame(rows)}, clock=clock, markets={SYMBOL: SPEC},
                        execution=ENV_CFG, accounts={KEY: (SECRET, {"USDT": 150.0})}) as server:
        assert order(server, quantity="1.4", newClientOrderId="gap").status_code == 200
        clock.set(ts(2))
        (t,) = server.trades()
        usdt = server.balances(KEY)["USDT"]
        assert usdt[0] >= 0.0
        assert usdt[1] == 0.0
        per_unit = 120.0 * (1 + 2e-4) + 120.0 * TAKER
        assert t.qty_base == math.floor(150.0 / per_unit / 0.001) * 0.001 == pytest.approx(1.248)
        got = signed(server, "GET", "/api/v3/order", symbol="BTCUSDT",
                     origClientOrderId="gap").json()
        assert got["status"] == "EXPIRED"


# -- invariants -------------------------------------------------------------------------------
_action = st.tuples(
    st.sampled_from(["market_buy", "market_sell", "limit_buy", "limit_sell", "cancel", "wait"]),
    st.integers(1, 400),  # quantity in lot steps
    st.floats(0.9, 1.1),  # limit price relative to the reference price
    st.integers(0, 3 * HOUR_MS),  # time to move on afterwards
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_action, min_size=3, max_size=25), st.integers(0, 10_000))
@pytest.mark.slow
def test_matching_invariants(actions, seed):
    """Money is conserved, balances never go negative, and no fill uses a bar not yet known."""
    rng = np.random.default_rng(seed)
    n = 40
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, n))
    frame = bars_frame(list(zip(open_, high, low, close, rng.uniform(1, 20, n), strict=True)))
    markets = EmulatedMarkets({SYMBOL: frame}, markets={SYMBOL: SPEC})
    accounts = Accounts({KEY: (SECRET, {"USDT": 1000.0, "BTC": 3.0})})
    plan = FaultPlan(seed=seed)
    plan.partial_fill(0.5, probability=0.3)
    engine = MatchingEngine(markets, accounts, plan, ENV_CFG)
    now = ts(0) + 1
    ids: list[int] = []
    for kind, steps, rel, wait in actions:
        try:
            if kind == "cancel" and ids:
                engine.cancel(KEY, SYMBOL, now_ms=now, order_id=ids[int(rng.integers(len(ids)))])
            elif kind != "wait" and kind != "cancel":
                side = Side.BUY if kind.endswith("buy") else Side.SELL
                otype = OrderType.MARKET if kind.startswith("market") else OrderType.LIMIT
                ref = engine.reference_price(markets.series[SYMBOL], now)
                price = round(ref * rel, 2) if otype is OrderType.LIMIT else None
                o = engine.submit(KEY, SYMBOL, side, otype, round(steps * 0.001, 3), now_ms=now,
                                  price_quote=price)
                ids.append(o.order_id)
        except OrderRejected as e:  # funds, unknown order, filters: expected refusals
            if e.code not in (-2010, -2011, -1013):
                raise
        now += wait
        engine.process_until(now)
        for asset, (free, locked) in engine.balances(KEY).items():
            assert free >= -1e-9, (asset, free, locked)
            assert locked >= -1e-9, (asset, free, locked)
    now += 2 * HOUR_MS
    engine.process_until(now)
    trades = engine.trades()
    event(f"fills: {min(len(trades), 3)}+; limit fills: {any(t.is_maker for t in trades)}")
    buys = sum(t.qty_base for t in trades if t.side is Side.BUY)
    sells = sum(t.qty_base for t in trades if t.side is Side.SELL)
    flow = sum((-1 if t.side is Side.BUY else 1) * t.quote_qty - t.fee_quote for t in trades)
    acct = accounts.get(KEY)
    assert acct is not None
    assert acct.total("BTC") == pytest.approx(3.0 + buys - sells, abs=1e-9)
    assert acct.total("USDT") == pytest.approx(1000.0 + flow, abs=1e-7)
    by_id = {o.order_id: o for o in engine.orders()}
    for t in trades:
        o = by_id[t.order_id]
        assert t.ts_ms >= o.submit_ms
        assert t.ts_ms <= now
        assert t.fee_quote >= 0
        k = int(np.searchsorted(frame.ts_ms, t.ts_ms, side="right")) - 1
        if o.order_type is OrderType.MARKET:
            ref = float(frame.open.iloc[k])
            sign = 1 if t.side is Side.BUY else -1
            assert t.price_quote == pytest.approx(ref * (1 + sign * SLIP_BPS * 1e-4), rel=1e-12)
        else:  # stamped at the close of the bar that traded through it (= next bar's open)
            assert t.ts_ms % HOUR_MS == 0
            assert t.price_quote == o.limit_price_quote
            j = k - 1
            if t.side is Side.BUY:
                assert frame.low.iloc[j] < t.price_quote
            else:
                assert frame.high.iloc[j] > t.price_quote
        assert o.executed_base <= o.qty_base + 1e-12
