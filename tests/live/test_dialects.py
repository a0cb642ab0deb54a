"""The broker is exchange-agnostic: the same order lifecycle, faults and restarts on both of the
emulator's dialects (Binance and Bybit v5), driven by each exchange's real ccxt client, with
nothing but the quirks table telling them apart."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from live_helpers import (
    DIALECTS,
    ENV,
    KEY,
    MARKET,
    ORDER_PATHS,
    SECRET,
    SPEC,
    SYMBOL,
    candles,
    connect,
    emulator,
    ohlcv,
)

from coinrl.live.brokers import client_order_id
from coinrl.live.emulator import EmulatorServer, FixedClock
from coinrl.live.exchange import connect_to_exchange
from coinrl.live.journal import Journal
from coinrl.live.live_env import SteppedClock
from coinrl.live.orders import DuplicateClientOrderId, FilterFailure, OrderInsufficientFunds
from coinrl.live.risk import RiskConfig
from coinrl.live.runner import ExitCode, RunnerConfig, build_runner
from coinrl.pipeline.errors import InvalidOrder
from coinrl.pipeline.splits import prepare_data_for_model

K0 = 160
HOUR = 3_600_000
MID = HOUR // 3
FRAME = candles(K0 + 60, seed=41)


class Const:
    """Always the same discrete action (2 = fully long)."""

    def predict(self, observation: Any, deterministic: bool = True) -> np.ndarray:
        return np.full(len(observation), 2, dtype=np.int64)


@pytest.fixture(scope="module")
def prepared():
    return prepare_data_for_model(candles(600, seed=2), spec=SPEC)


def runner_on(server: Any, clock: Any, path: Any, prepared: Any, dialect: str, **cfg: Any):
    return build_runner(
        Const(), env_config=ENV, spec=prepared.spec, normaliser=prepared.normaliser,
        client=connect(server, exchange=dialect), symbol=SYMBOL, timeframe="1h", mode="live",
        journal=Journal(path, run_id="dl"), risk_config=RiskConfig.permissive(),
        config=RunnerConfig(**{"reload_every_bars": 0, **cfg}),
        clock=SteppedClock(clock, offset_ms=MID), history_bars=K0, check_clock_skew=False,
    )


@pytest.mark.parametrize("dialect", DIALECTS)
def test_order_round_trip_by_client_id_on_each_dialect(dialect):
    with emulator(FRAME, K0) as (server, clock), connect(server, exchange=dialect) as ex:
        filled = ex.create_order(SYMBOL, "buy", 10.0, client_order_id="rt-1")
        resting = ex.create_order(SYMBOL, "buy", 1.0, "limit", 20.0, client_order_id="rt-2")
        assert (filled.status, filled.filled_base) == ("closed", 10.0)
        assert resting.status == "open"
        assert [o.client_order_id for o in ex.open_orders(SYMBOL)] == ["rt-2"]
        done = ex.cancel_order("rt-2", SYMBOL)
        assert (done.client_order_id, done.status) == ("rt-2", "canceled")
        assert ex.locate_order("never-sent", SYMBOL, since_ms=0) is None
        trades = ex.my_trades(SYMBOL)
        [t] = server.trades()
        assert [(x.client_order_id, x.qty_base, x.price_quote, x.fee_quote) for x in trades] == [
            ("rt-1", t.qty_base, t.price_quote, t.fee_quote)]
        assert ex.balances()["USDT"].total == pytest.approx(
            10_000.0 - t.quote_qty - t.fee_quote, abs=1e-9)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_client_id_in_use_by_an_open_order_is_a_duplicate_on_each_dialect(dialect):
    with emulator(FRAME, K0) as (server, clock), connect(server, exchange=dialect) as ex:
        ex.create_order(SYMBOL, "buy", 1.0, "limit", 20.0, client_order_id="dup-1")
        with pytest.raises(DuplicateClientOrderId):
            ex.create_order(SYMBOL, "buy", 1.0, "limit", 20.0, client_order_id="dup-1")
        assert server.order_count() == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_lost_answer_after_accept_is_looked_up_not_resent_on_each_dialect(dialect):
    with emulator(FRAME, K0) as (server, clock), connect(server, exchange=dialect) as ex:
        server.faults.drop_after(count=1, path_prefix=ORDER_PATHS[dialect])
        placed = ex.create_order(SYMBOL, "buy", 1.0, "limit", 20.0, client_order_id="lost-1")
        assert (placed.client_order_id, placed.status) == ("lost-1", "open")
        assert server.order_count() == 1
        assert server.faults.fired()["drop_after"] == 1


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("fault", ["rate_limit", "server_error"])
def test_temporary_failures_are_retried_into_exactly_one_order_on_each_dialect(dialect, fault):
    with emulator(FRAME, K0) as (server, clock), connect(server, exchange=dialect) as ex:
        path = ORDER_PATHS[dialect]
        if fault == "rate_limit":
            server.faults.rate_limit(retry_after_s=0, count=2, path_prefix=path)
        else:
            server.faults.server_error(503, count=2, path_prefix=path)
        placed = ex.create_order(SYMBOL, "buy", 1.0, client_order_id=f"retry-{fault}")
        assert placed.client_order_id == f"retry-{fault}"
        assert server.order_count() == 1
        assert server.faults.fired()[fault] == 2


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_rejected_order_is_not_retried_on_each_dialect(dialect):
    with emulator(FRAME, K0) as (server, clock), connect(server, exchange=dialect) as ex:
        server.faults.reject(count=1, path_prefix=ORDER_PATHS[dialect])
        with pytest.raises(InvalidOrder):
            ex.create_order(SYMBOL, "buy", 1.0)
        assert server.order_count() == 0
        assert len(server.requests(ORDER_PATHS[dialect])) == 1


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_same_bar_restart_adopts_the_working_order_on_each_dialect(tmp_path, prepared, dialect):
    path = tmp_path / "j.sqlite"
    with emulator(FRAME, K0) as (server, clock):
        clock.set(int(FRAME.ts_ms.iloc[K0]) + MID)  # inside bar K0: a market order rests
        first = runner_on(server, clock, path, prepared, dialect)
        first._start()
        first.env.reset()
        _, reports = first.env.decide(2)  # sent, resting ... and the process dies here
        assert [(r.status, r.exchange_status) for r in reports] == [("sent", "open")]
        cid = reports[0].client_order_id
        first.journal.close()
        clock.advance(HOUR // 4)
        second = runner_on(server, clock, path, prepared, dialect, max_bars=1)
        assert second.run() == ExitCode.OK
        orders = server.orders()
    assert [(o.client_order_id, o.status) for o in orders] == [(cid, "FILLED")]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_order_cancelled_under_its_decision_is_replaced_once_on_each_dialect(
    tmp_path, prepared, dialect,
):
    path = tmp_path / "j.sqlite"
    with emulator(FRAME, K0) as (server, clock):
        clock.set(int(FRAME.ts_ms.iloc[K0]) + MID)
        first = runner_on(server, clock, path, prepared, dialect)
        first._start()
        first.env.reset()
        first.env.decide(2)
        first.env.broker.cancel_all()
        first.journal.close()
        second = runner_on(server, clock, path, prepared, dialect, max_bars=1)
        assert second.run() == ExitCode.OK
        orders = server.orders()
    bar = int(FRAME.ts_ms.iloc[K0 - 1])
    assert [(o.client_order_id, o.status) for o in orders] == [
        (client_order_id("dl", bar, 0), "CANCELED"), (client_order_id("dl", bar, 1), "FILLED")]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_exchange_refusals_are_typed_through_the_quirks_table_on_each_dialect(dialect):
    small_lots = dataclasses.replace(MARKET, min_notional=20.0)  # a 0.25 lot is ~10 USDT
    with emulator(FRAME, K0, market=small_lots) as (server, clock), connect(server, exchange=dialect) as ex:
        with pytest.raises(FilterFailure):  # no reference price: the exchange checks the notional
            ex.create_order(SYMBOL, "buy", 0.25)
        with pytest.raises(OrderInsufficientFunds):
            ex.create_order(SYMBOL, "buy", 1_000.0)  # ~40,000 USDT with 10,000
        assert server.order_count() == 0


@pytest.mark.parametrize("dialect", DIALECTS)
def test_spot_symbols_share_one_quote_balance_on_each_dialect(dialect):
    other = "AVAX/USDT"
    server = EmulatorServer(
        {SYMBOL: ohlcv(FRAME), other: ohlcv(candles(K0 + 60, seed=9))},
        clock=FixedClock(int(FRAME.ts_ms.iloc[K0])), execution=ENV,
        markets={SYMBOL: MARKET, other: dataclasses.replace(MARKET, symbol=other, base="AVAX")},
        accounts={KEY: (SECRET, {"USDT": 1_000.0})},
    )
    with server, connect_to_exchange(
        KEY, SECRET, exchange=dialect, exchange_url=server.base_url, symbols=[SYMBOL, other],
        max_clock_skew_ms=None, config={"enableRateLimit": False},
    ) as ex:
        ex.create_order(SYMBOL, "buy", 20.0, "limit", 30.0, client_order_id="sol")  # 600 USDT
        assert ex.balances()["USDT"].used == pytest.approx(600.0 * (1 + ENV.maker_fee_rate), abs=1e-9)
        with pytest.raises(OrderInsufficientFunds):
            ex.create_order(other, "buy", 20.0, "limit", 30.0, client_order_id="avax")
        ex.cancel_order("sol", SYMBOL)
        ex.create_order(other, "buy", 20.0, "limit", 30.0, client_order_id="avax")
        assert [o.client_order_id for o in ex.open_orders()] == ["avax"]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_lost_filled_order_is_found_in_the_order_lists_not_resent_on_each_dialect(dialect):
    """The first send FILLS on arrival and its answer is lost; every lookup by client id says
    "no such order". The exchange's order lists since the intent show it: nothing is re-sent."""
    lookups = {"binance": ("/api/v3/order", "GET"), "bybit": ("/v5/order/realtime", "GET")}
    with emulator(FRAME, K0) as (server, clock), connect(server, exchange=dialect) as ex:
        path, method = lookups[dialect]
        server.faults.drop_after(count=1, path_prefix=ORDER_PATHS[dialect])
        server.faults.reject(code=-2013, message="Order does not exist.", method=method,
                             path_prefix=path, count=None)
        got = ex.create_order(SYMBOL, "buy", 1.0, client_order_id="lost-2",
                              since_ms=int(FRAME.ts_ms.iloc[K0]) - 1000)
        assert (got.client_order_id, got.status) == ("lost-2", "closed")
        assert server.order_count() == 1
        assert server.faults.fired()["reject"] >= 1


def test_a_bybit_acknowledgement_whose_order_is_not_visible_yet_is_booked_as_sent():
    with emulator(FRAME, K0) as (server, clock), connect(server, exchange="bybit") as ex:
        server.faults.reject(code=-2013, message="Order does not exist.", method="GET",
                             path_prefix="/v5/order/realtime", count=1)
        placed = ex.create_order(SYMBOL, "buy", 1.0, "limit", 20.0, client_order_id="ack-1")
        assert (placed.client_order_id, placed.status, placed.qty_base, placed.price_quote) == (
            "ack-1", "open", 1.0, 20.0)
        assert ex.fetch_order("ack-1").order_id == placed.order_id  # visible on the next look
        assert server.order_count() == 1
