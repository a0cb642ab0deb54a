"""The fault matrix: a live session over the emulator (real ccxt, signed orders) keeps going or
stops safely under each fault the emulator injects (latency, 429, 5xx, a connection dropped
before or after the order was accepted, partial fills, rejections, stale market data), and
afterwards: no decision sent twice (client order ids unique on the exchange), no fill lost (the
journal holds exactly the exchange's trades), and the journal's last balances are the
exchange's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from live_helpers import ENV, SPEC, SYMBOL, RulePolicy, candles, connect, emulator

import coinrl.pipeline.exchange_client as exchange_client
from coinrl.live.journal import Journal
from coinrl.live.live_env import SteppedClock
from coinrl.live.risk import RiskConfig
from coinrl.live.runner import ExitCode, RunnerConfig, build_runner
from coinrl.pipeline.splits import prepare_data_for_model

K0 = 160
BARS = 24
FRAME = candles(K0 + BARS + 10, seed=17)
ORDER = "/api/v3/order"

# each fault at a steady rate (seeded plan), on the requests it targets
FAULTS: dict[str, Any] = {
    "latency": lambda f: f.latency(25.0, probability=0.5, path_prefix="/api/v3"),
    "rate_limit_429": lambda f: f.rate_limit(retry_after_s=0, count=None, probability=0.3, path_prefix=ORDER),
    "server_error_5xx": lambda f: f.server_error(503, count=None, probability=0.3, path_prefix="/api/v3"),
    "drop_before": lambda f: f.drop(count=None, probability=0.3, path_prefix=ORDER),
    "drop_after_accept": lambda f: f.drop_after(probability=0.4),
    "partial_fill": lambda f: f.partial_fill(0.5, probability=0.5),
    "reject": lambda f: f.reject(probability=0.4),
    "stale_data": lambda f: f.stale(after=10),
}
FIRED_AS = {"rate_limit_429": "rate_limit", "server_error_5xx": "server_error",
            "drop_before": "drop", "drop_after_accept": "drop_after", "stale_data": "stale",
            "reject": "reject", "latency": "latency", "partial_fill": "partial_fill"}


@pytest.fixture(scope="module")
def prepared():
    return prepare_data_for_model(candles(600, seed=2), spec=SPEC)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(exchange_client, "RETRY_INITIAL_S", 0.001)
    monkeypatch.setattr(exchange_client, "RETRY_MAX_S", 0.01)


def _totals(balances: dict[str, tuple[float, float]]) -> dict[str, float]:
    return {a: free + used for a, (free, used) in balances.items()}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.slow
def test_the_runner_survives_each_fault_without_duplicates_or_lost_fills(fault, prepared, tmp_path: Path):
    risk = RiskConfig.permissive().model_copy(update={"max_data_delay_bars": 1.0})
    with emulator(FRAME, K0) as (server, clock):
        client = connect(server)
        server.faults.reseed(7)
        FAULTS[fault](server.faults)
        journal = Journal(tmp_path / "j.sqlite", run_id="fm")
        runner = build_runner(
            RulePolicy(), env_config=ENV, spec=prepared.spec, normaliser=prepared.normaliser,
            client=client, symbol=SYMBOL, timeframe="1h", mode="live", journal=journal,
            risk_config=risk, clock=SteppedClock(clock, offset_ms=1),
            config=RunnerConfig(max_bars=BARS, reload_every_bars=0, max_consecutive_halts=3,
                                max_consecutive_errors=5),
            history_bars=K0, check_clock_skew=False,
        )
        code = runner.run()
        fired = server.faults.fired()
        server.faults.clear()
        orders = server.orders()
        trades = server.trades()
        exchange = _totals(server.balances(next(iter(server.accounts)).api_key))

    assert fired.get(FIRED_AS[fault], 0) >= 1, f"the {fault} fault never fired: {fired}"
    # keeps going, or stops safely with a reason
    expected = {ExitCode.DATA_HALT} if fault == "stale_data" else {ExitCode.OK}
    assert code in expected
    cids = [o.client_order_id for o in orders]
    assert len(cids) == len(set(cids)), "an order was sent twice"
    assert len(orders) >= 3  # the session did trade through the faults
    with Journal(tmp_path / "j.sqlite") as j:
        journalled = j.orders()
        fills = j.fills()
        last = j.last("balance").payload
        stop = j.last("stop").payload
        decisions = j.events("decision")
        halts = j.events("halt")
    assert set(cids) <= set(journalled), "an order on the exchange the journal does not know"
    # no lost fill and none booked twice
    assert sorted(f.fill_id for f in fills) == sorted(str(t.trade_id) for t in trades)
    # the journal and the exchange agree afterwards
    assert last["cash_quote"] == pytest.approx(exchange["USDT"], rel=1e-12)
    assert last["position_base"] == pytest.approx(exchange.get("SOL", 0.0), abs=1e-12)
    assert not [o for o in orders if o.is_open]
    assert stop["exit_code"] == int(code)
    if fault == "stale_data":  # trading halts on data that stopped advancing: no order after
        assert halts, "stale data never halted a decision"
        assert all(o.submit_ms < halts[0].ts_ms for o in orders)
    else:
        assert len(decisions) == BARS
        assert not halts
