"""Brokers: the paper broker fills like the env's execution model; the exchange broker sizes with
the env's rules, rounds to the exchange's lot step, refuses what the exchange would, never sends
a decision twice (deterministic client order ids, lookup on restart), journals every fill once,
backfills fills it missed, reconciles differences with the exchange, and cancels only its own
orders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from live_helpers import ENV, MARKET, SPEC, SYMBOL, candles, connect, emulator

from coinrl.envs.domain import Order, Side
from coinrl.envs.execution import ExecutionModel
from coinrl.envs.kernel import _size_order_eq, make_params
from coinrl.live.brokers import (
    OrderContext,
    PaperBroker,
    check_run_id,
    client_order_id,
    execute_trade,
    monitor_open_positions,
)
from coinrl.live.data import LiveDataFeed
from coinrl.live.emulator import FaultRule
from coinrl.live.exchange import CLIENT_ORDER_ID_PATTERN
from coinrl.live.exchange_broker import ExchangeBroker
from coinrl.live.journal import Journal
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.splits import prepare_data_for_model

K0 = 150
FRAME = candles(K0 + 20, seed=8)
PREP = prepare_data_for_model(candles(600, seed=3), spec=SPEC)
TS = FRAME.ts_ms.to_numpy()


def feed_for(client) -> LiveDataFeed:
    return LiveDataFeed(client, SYMBOL, "1h", spec=PREP.spec, normaliser=PREP.normaliser,
                        window=ENV.window, history_bars=K0)


def ctx_of(data) -> OrderContext:
    return OrderContext(bar_ts_ms=data.last_bar_ts_ms, now_ms=data.server_time_ms,
                        price_quote=float(data.market.close[-1]),
                        volume_base=float(data.market.volume[-1]))


def test_client_order_ids_are_deterministic_and_exchange_safe():
    a = client_order_id("run_1", int(TS[5]))
    assert a == client_order_id("run_1", int(TS[5]))
    assert a != client_order_id("run_1", int(TS[6]))
    assert a != client_order_id("run_1", int(TS[5]), seq=1)
    assert CLIENT_ORDER_ID_PATTERN.fullmatch(a)
    assert len(client_order_id("r" * 20, 2**62)) <= 36
    with pytest.raises(ConfigError, match="run id"):
        check_run_id("bad id!")


def test_paper_fill_is_the_env_execution_models_fill(tmp_path):
    with emulator(FRAME, K0) as (server, clock):
        from live_helpers import public

        feed = feed_for(public(server))
        j = Journal(tmp_path / "p.sqlite", run_id="pp")
        broker = PaperBroker(ENV, SYMBOL, run_id="pp", journal=j)
        data = feed.update()
        st = monitor_open_positions(broker, data)
        assert (st.cash_quote, st.position_base, st.equity_quote) == (10_000.0, 0.0, 10_000.0)
        (report,) = execute_trade(broker, 1.0, ctx_of(data))
        assert report.status == "pending"
        clock.set(int(TS[K0 + 1]))
        st = broker.sync(feed.update())
        (fill,) = st.new_fills
        o, v = float(FRAME.open.iloc[K0]), float(FRAME.volume.iloc[K0])
        model = ExecutionModel.from_config(ENV)
        dq = float(_size_order_eq(make_params(ENV), 1.0, 10_000.0, 0.0, o, v))  # the kernel's rule
        assert fill.qty_base == dq
        assert fill.qty_base % 0.25 == 0
        want = model.market_fill(Order(report.client_order_id, SYMBOL, Side.BUY, dq), o, v,
                                 fill.fill_id, int(TS[K0]))
        assert fill.price_quote == pytest.approx(want.price_quote, rel=1e-12)
        assert fill.fee_quote == pytest.approx(want.fee_quote, rel=1e-12)
        assert fill.slippage_quote == pytest.approx(want.slippage_quote, rel=1e-9)
        assert j.fills() == [fill]
        # hold: nothing trades; a canceled decision is dropped
        broker.submit_target(None, ctx_of(feed.update()))
        broker.submit_target(0.0, ctx_of(feed.update()))
        assert broker.cancel_all() == [client_order_id("pp", int(TS[K0]))]
        clock.set(int(TS[K0 + 2]))
        assert broker.sync(feed.update()).new_fills == ()
        # a restarted paper broker takes back the books and the queued decision
        broker.submit_target(0.5, ctx_of(feed.update()))
        b2 = PaperBroker(ENV, SYMBOL, run_id="pp", journal=j)
        b2.recover(j)
        assert b2.account.position_base == broker.account.position_base
        assert b2.account.cash_quote == broker.account.cash_quote
        assert b2._pending == 0.5


@pytest.fixture
def live(tmp_path: Path):
    with emulator(FRAME, K0) as (server, clock):
        client = connect(server)
        j = Journal(tmp_path / "x.sqlite", run_id="xb")
        broker = ExchangeBroker(client, SYMBOL, ENV, run_id="xb", journal=j)
        yield server, clock, client, j, broker, feed_for(client)


def test_exchange_order_is_sized_by_the_env_rules_and_filled_like_the_env(live):
    server, clock, client, j, broker, feed = live
    data = feed.update()
    broker.sync(data)
    (rep,) = broker.submit_target(1.0, ctx_of(data))
    assert rep.status == "sent"
    close = float(data.market.close[-1])
    dq = float(_size_order_eq(make_params(ENV), 1.0, 10_000.0, 0.0, close, float(data.market.volume[-1])))
    assert rep.qty_base == dq  # the env's quantity, a multiple of the 0.25 lot
    st = broker.sync(data)  # the order filled at the bar's open (now): learnt at the next sync
    (fill,) = st.new_fills
    assert fill.order_id == rep.client_order_id
    assert st.position_base == dq
    assert fill.slippage_quote == pytest.approx(dq * close * 2e-4, rel=1e-9)  # vs the sizing price
    assert [e.payload["status"] for e in j.events("order")] == ["intent"]
    assert j.fills() == [fill]
    assert j.count("reconciliation") == 0  # the opening books (flat, initial cash) agreed


def test_too_small_orders_are_skipped_with_the_reason_and_never_sent(tmp_path):
    strict = dataclasses.replace(MARKET, min_notional=50.0)
    loose = ENV.model_copy(update={"lot_size_base": 0.0, "min_notional_quote": 0.0,
                                   "rebalance_threshold": 0.0})
    with emulator(FRAME, K0, market=strict) as (server, _):
        client = connect(server)
        broker = ExchangeBroker(client, SYMBOL, loose, run_id="sk")
        data = feed_for(client).update()
        broker.sync(data)
        (rep,) = broker.submit_target(0.0005, ctx_of(data))  # 0.125 SOL: under one lot step
        assert rep.status == "skipped"
        assert "rounds to 0" in rep.reason
        (rep,) = broker.submit_target(0.001, ctx_of(data))  # 0.25 SOL ~ 10 USDT < 50 minimum
        assert rep.status == "skipped"
        assert "minimum 50" in rep.reason
        assert server.order_count() == 0


def test_insufficient_funds_is_a_rejected_report_not_a_crash(live):
    server, clock, client, j, broker, feed = live
    data = feed.update()
    client.create_order(SYMBOL, "buy", 200.0, "limit", 45.0, client_order_id="manual-1")  # locks 9000
    broker.sync(data)  # another system's resting order: left alone
    (rep,) = broker.submit_target(1.0, ctx_of(data))
    assert rep.status == "rejected"
    assert "insufficient balance" in rep.reason.lower()
    assert j.orders()[rep.client_order_id]["status"] == "rejected"
    assert [o.client_order_id for o in client.open_orders(SYMBOL)] == ["manual-1"]


def test_a_restarted_broker_finds_the_decisions_order_instead_of_resending(live, tmp_path):
    server, clock, client, j, broker, feed = live
    data = feed.update()
    broker.sync(data)
    (rep,) = broker.submit_target(1.0, ctx_of(data))
    # the process dies before it learns the fill; a new broker recovers from the journal
    b2 = ExchangeBroker(connect(server), SYMBOL, ENV, run_id="xb", journal=j)
    notes = b2.recover(j)
    assert any("backfilled" in n for n in notes)  # the fill the journal lacked
    assert j.count("fill") == 1
    st = b2.sync(feed.update())
    assert st.position_base == rep.qty_base
    (again,) = b2.submit_target(1.0, ctx_of(data))  # the same bar decided again
    assert again.status == "found"
    assert server.order_count() == 1
    recs = [e.payload for e in j.events("reconciliation")]
    assert any(r.get("what") == "restart" and r["fills_backfilled"] for r in recs)
    assert not any(r.get("what") == "difference" for r in recs)  # the books agreed


def test_a_difference_with_the_exchange_is_journalled_and_the_exchange_adopted(live):
    server, clock, client, j, broker, feed = live
    data = feed.update()
    broker.sync(data)
    server.add_account(client._client.apiKey, client._client.secret, {"USDT": 7_500.0, "SOL": 3.0})
    st = broker.sync(data)
    assert (st.cash_quote, st.position_base) == (7_500.0, 3.0)
    (rec,) = [e.payload for e in j.events("reconciliation") if e.payload["what"] == "difference"]
    assert (rec["journal_cash_quote"], rec["exchange_cash_quote"]) == (10_000.0, 7_500.0)
    assert (rec["journal_position_base"], rec["exchange_position_base"]) == (0.0, 3.0)
    assert st.avg_entry_quote == float(data.market.close[-1])  # unknown entry: marked now


def test_cancel_all_cancels_only_this_runs_orders(live):
    server, clock, client, j, broker, feed = live
    broker.sync(feed.update())
    client.create_order(SYMBOL, "buy", 1.0, "limit", 20.0, client_order_id="xb-manual-0")
    client.create_order(SYMBOL, "buy", 1.0, "limit", 20.0, client_order_id="other-1")
    assert broker.cancel_all() == ["xb-manual-0"]
    assert [o.client_order_id for o in client.open_orders(SYMBOL)] == ["other-1"]


def test_an_order_whose_answer_never_came_is_looked_up_at_the_next_sync(tmp_path):
    with emulator(FRAME, K0) as (server, clock):
        client = connect(server, max_retries=1)
        j = Journal(tmp_path / "u.sqlite", run_id="uk")
        broker = ExchangeBroker(client, SYMBOL, ENV, run_id="uk", journal=j)
        data = feed_for(client).update()
        broker.sync(data)
        server.faults.add(FaultRule(kind="server_error", status=503, count=2,
                                    path_prefix="/api/v3/order", method="POST"))
        (rep,) = broker.submit_target(1.0, ctx_of(data))
        assert rep.status == "unknown"
        broker.sync(data)
        assert j.orders()[rep.client_order_id]["status"] == "not_found"
        assert server.order_count() == 0
