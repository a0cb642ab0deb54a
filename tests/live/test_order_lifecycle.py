"""Order states follow the exchange, on a clock that lands INSIDE bars (market orders rest on
the book until the next bar's open, as on the emulator; the old crash test set the clock exactly
to a bar's open, where market orders fill on arrival and none of this shows):

* a restart in the same bar adopts the decision's working order instead of cancelling it and
  dropping the decision; an order cancelled from under a decision is replaced once (new leg);
* filled orders leave "open" in the journal and in ``BrokerState.open_orders``; every sync
  brings the journal's order statuses in line with the exchange (corrections journalled);
* cancels and partial fills are booked under the original order (never a ``cancel_...`` id),
  and ``coinrl status`` counts the orders the exchange has;
* the order model refuses moves an exchange cannot make.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_helpers import ENV, SPEC, SYMBOL, RulePolicy, candles, connect, emulator

from coinrl.experiments.live_cmd import run_status
from coinrl.live.brokers import client_order_id
from coinrl.live.journal import Journal
from coinrl.live.live_env import SteppedClock
from coinrl.live.orders import OrderStateError, OrderStatus, transition
from coinrl.live.risk import RiskConfig
from coinrl.live.runner import ExitCode, RunnerConfig, build_runner
from coinrl.pipeline.splits import prepare_data_for_model

K0 = 160
HOUR = 3_600_000
FRAME = candles(K0 + 60, seed=41)
MID = HOUR // 3  # where decisions land in a bar: 20 minutes after its open
EXCHANGE_STATUS = {"NEW": "open", "PARTIALLY_FILLED": "open", "FILLED": "closed",
                   "CANCELED": "canceled", "EXPIRED": "expired"}


@pytest.fixture(scope="module")
def prepared():
    return prepare_data_for_model(candles(600, seed=2), spec=SPEC)


class Const:
    """Always the same discrete action (2 = fully long)."""

    def __init__(self, a: int = 2) -> None:
        self.a = a

    def predict(self, observation: Any, deterministic: bool = True) -> np.ndarray:
        return np.full(len(observation), self.a, dtype=np.int64)


def runner_on(server: Any, clock: Any, path: Path, prepared: Any, policy: Any = None, **cfg: Any):
    return build_runner(
        policy or RulePolicy(), env_config=ENV, spec=prepared.spec, normaliser=prepared.normaliser,
        client=connect(server), symbol=SYMBOL, timeframe="1h", mode="live",
        journal=Journal(path, run_id="ol"), risk_config=RiskConfig.permissive(),
        config=RunnerConfig(**{"reload_every_bars": 0, **cfg}),
        clock=SteppedClock(clock, offset_ms=MID), history_bars=K0, check_clock_skew=False,
    )


def test_a_same_bar_restart_adopts_the_working_order_instead_of_cancelling_it(tmp_path, prepared):
    path = tmp_path / "j.sqlite"
    with emulator(FRAME, K0) as (server, clock):
        clock.set(int(FRAME.ts_ms.iloc[K0]) + MID)  # inside bar K0: a market order rests
        first = runner_on(server, clock, path, prepared, Const())
        first._start()
        first.env.reset()
        _, reports = first.env.decide(2)  # sent, resting ... and the process dies here
        assert [(r.status, r.exchange_status) for r in reports] == [("sent", "open")]
        cid = reports[0].client_order_id
        first.journal.close()
        clock.advance(HOUR // 4)  # restarted later in the same bar
        second = runner_on(server, clock, path, prepared, Const(), max_bars=1)
        assert second.run() == ExitCode.OK
        orders = server.orders()
    assert [(o.client_order_id, o.status) for o in orders] == [(cid, "FILLED")]
    with Journal(path) as j:
        statuses = [e.payload["status"] for e in j.events("order_update") if e.client_order_id == cid]
        assert "canceled" not in statuses
        assert statuses[-1] == "closed"
        assert len(j.fills()) >= 1


def test_an_order_cancelled_from_under_its_decision_is_replaced_once_with_a_new_leg(tmp_path, prepared):
    path = tmp_path / "j.sqlite"
    with emulator(FRAME, K0) as (server, clock):
        clock.set(int(FRAME.ts_ms.iloc[K0]) + MID)
        first = runner_on(server, clock, path, prepared, Const())
        first._start()
        first.env.reset()
        _, reports = first.env.decide(2)
        first.env.broker.cancel_all()  # a SIGTERM's stop cancels it; the restart is in the bar
        first.journal.close()
        second = runner_on(server, clock, path, prepared, Const(), max_bars=1)
        assert second.run() == ExitCode.OK
        orders = server.orders()
    bar = int(FRAME.ts_ms.iloc[K0 - 1])
    assert [(o.client_order_id, o.status) for o in orders] == [
        (client_order_id("ol", bar, 0), "CANCELED"), (client_order_id("ol", bar, 1), "FILLED")]


@pytest.mark.slow
def test_journal_order_states_follow_the_exchange_and_status_counts_agree(tmp_path, prepared):
    path = tmp_path / "j.sqlite"
    with emulator(FRAME, K0) as (server, clock):
        clock.set(int(FRAME.ts_ms.iloc[K0]) + MID)
        server.faults.partial_fill(0.5, probability=0.5)  # some orders partly filled, then cancelled
        server.faults.reseed(3)
        runner = runner_on(server, clock, path, prepared, max_bars=16)
        assert runner.run() == ExitCode.OK
        state = runner.env.broker.state
        orders = server.orders()
        trades = server.trades()
    assert state is not None
    assert state.open_orders == ()
    exchange = {o.client_order_id: EXCHANGE_STATUS[o.status] for o in orders}
    assert len(exchange) >= 6
    assert any(o.status == "CANCELED" and o.executed_base > 0 for o in orders)  # partly filled
    with Journal(path) as j:
        journal = {c: p["status"] for c, p in j.orders().items() if p["status"] != "skipped"}
        fills = j.fills()
    assert journal == exchange  # no phantom cancel_... order, no filled order left "open"
    assert {f.order_id for f in fills} <= set(exchange)
    assert sorted(f.fill_id for f in fills) == sorted(str(t.trade_id) for t in trades)
    st = run_status(path)
    assert st["orders"] == len(orders)


def test_the_order_model_refuses_moves_an_exchange_cannot_make():
    assert transition("x", "intent", "open") is OrderStatus.OPEN
    assert transition("x", "open", "closed") is OrderStatus.CLOSED
    assert transition("x", "not_found", "closed") is OrderStatus.CLOSED  # it landed late
    for old, new in [("closed", "open"), ("canceled", "closed"), ("open", "intent"),
                     ("rejected", "open"), ("skipped", "open")]:
        with pytest.raises(OrderStateError, match=f"{old} -> {new}"):
            transition("x", old, new)
