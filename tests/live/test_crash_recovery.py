"""Crash recovery: a live runner in its own process, killed with SIGKILL at seeded random points
(while starting, reconciling, deciding, sending or journalling), restarted on the same journal
again and again, reconciles from the journal and the exchange and carries on: no decision is
ever sent twice, no fill is lost or booked twice, and at the end the journal and the exchange
agree.

The emulator runs in this process on a FixedClock; the runner process moves it bar by bar over
the emulator's admin endpoint, landing inside each bar (so the market waits while the runner is
dead, a restart lands in the very bar it died in, the dangerous case for duplicates, and its
working order still rests on the book: it must be adopted, not cancelled and dropped). At the end
the journal's order statuses equal the exchange's.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from live_helpers import ENV, KEY, SPEC, SYMBOL, RulePolicy, candles, connect, emulator

from coinrl.live.journal import Journal
from coinrl.live.live_env import SteppedClock
from coinrl.live.risk import RiskConfig
from coinrl.live.runner import ExitCode, RunnerConfig, build_runner
from coinrl.pipeline.splits import prepare_data_for_model

pytestmark = pytest.mark.slow

K0 = 160
KILLS = 20
SEED = 20261124
FRAME = candles(K0 + 600, seed=23)
RUN_ID = "crash"
EXCHANGE_STATUS = {"FILLED": "closed", "CANCELED": "canceled", "NEW": "open", "EXPIRED": "expired"}
"""The emulator's order status -> what ccxt reports for it (Binance's words; the Bybit run of
this test in test_dialect_sessions.py swaps in Bybit's)."""

CHILD = textwrap.dedent("""
    import json, pickle, sys, urllib.request
    helpers, url, journal_path, model_path = sys.argv[1:5]
    sys.path.insert(0, helpers)
    from live_helpers import ENV, KEY, SECRET, SYMBOL, RulePolicy
    from coinrl.live.exchange import connect_to_exchange
    from coinrl.live.journal import Journal
    from coinrl.live.risk import RiskConfig
    from coinrl.live.runner import RunnerConfig, build_runner

    class AdminClock:
        # moves the emulator's FixedClock over its admin endpoint
        def __init__(self):
            self.stopped = False
        def _post(self, body):
            req = urllib.request.Request(url + "/_emulator/clock", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(json.loads(r.read())["now_ms"])
        def now_ms(self):
            return self._post({"advance_ms": 0})
        def sleep_until(self, ts_ms):
            # lands 20 minutes INTO the bar: market orders rest on the book until the next
            # open, so a restart in the same bar meets its own working order
            if self.stopped:
                return False
            if self.now_ms() < ts_ms + 1_200_000:
                self._post({"set_ms": int(ts_ms) + 1_200_000})
            return True
        def stop(self):
            self.stopped = True

    with open(model_path, "rb") as f:
        spec, normaliser = pickle.load(f)
    client = connect_to_exchange(KEY, SECRET, exchange_url=url, symbols=[SYMBOL],
                                 max_clock_skew_ms=None, config={"enableRateLimit": False})
    journal = Journal(journal_path, run_id="crash")
    runner = build_runner(RulePolicy(), env_config=ENV, spec=spec, normaliser=normaliser,
                          client=client, symbol=SYMBOL, timeframe="1h", mode="live",
                          journal=journal, risk_config=RiskConfig.permissive(),
                          config=RunnerConfig(reload_every_bars=0), clock=AdminClock(),
                          history_bars=160, check_clock_skew=False)
    print("running", flush=True)
    runner.run()
""")


def _decisions(path: Path) -> int:
    if not path.exists():
        return 0
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("SELECT COUNT(*) FROM events WHERE kind = 'decision'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_sigkilled_runner_restarts_without_duplicates_or_lost_fills(tmp_path):
    prepared = prepare_data_for_model(candles(600, seed=2), spec=SPEC)
    model_path = tmp_path / "model.pkl"
    model_path.write_bytes(pickle.dumps((prepared.spec, prepared.normaliser)))
    journal_path = tmp_path / "j.sqlite"
    helpers = str(Path(__file__).resolve().parent)
    rng = random.Random(SEED)
    killed_with_decisions = []
    with emulator(FRAME, K0) as (server, clock):
        for _ in range(KILLS):
            before = _decisions(journal_path)
            child = subprocess.Popen(
                [sys.executable, "-c", CHILD, helpers, server.base_url, str(journal_path),
                 str(model_path)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
            try:
                assert child.stdout is not None
                assert child.stdout.readline().strip() == "running"
                time.sleep(rng.uniform(0.0, 0.6))  # somewhere in recovery or the bar loop
                os.kill(child.pid, signal.SIGKILL)
                assert child.wait(timeout=30) == -signal.SIGKILL
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
            killed_with_decisions.append(_decisions(journal_path) - before)

        # the last restart runs to a clean end
        final = build_runner(
            RulePolicy(), env_config=ENV, spec=prepared.spec, normaliser=prepared.normaliser,
            client=connect(server), symbol=SYMBOL, timeframe="1h", mode="live",
            journal=Journal(journal_path, run_id=RUN_ID), risk_config=RiskConfig.permissive(),
            config=RunnerConfig(reload_every_bars=0, max_bars=5), clock=SteppedClock(clock),
            history_bars=K0, check_clock_skew=False,
        )
        assert final.run() == ExitCode.OK
        orders = server.orders()
        trades = server.trades()
        balances = {a: f + u for a, (f, u) in server.balances(KEY).items()}

    # the kills landed at different points: some before any decision, most after several
    assert sum(1 for n in killed_with_decisions if n > 0) >= KILLS // 2
    assert len(set(killed_with_decisions)) >= 3
    cids = [o.client_order_id for o in orders]
    assert len(orders) >= 10
    assert len(cids) == len(set(cids)), "a decision's order was sent twice"
    with Journal(journal_path) as j:
        starts = [e.payload["restarted"] for e in j.events("start")]
        assert starts == [False] + [True] * (len(starts) - 1)
        assert len(starts) >= KILLS  # a child killed before its first row leaves no start
        assert set(cids) <= set(j.orders())
        restarts = [e.payload for e in j.events("reconciliation") if e.payload.get("what") == "restart"]
        # some kills hit the window between sending an order and journalling its outcome
        assert any(p["orders_checked"] or p["fills_backfilled"] for p in restarts), restarts
        fills = j.fills()
        last = j.last("balance").payload
        assert j.integrity_check() == "ok"
        assert j.last("stop").payload["exit_name"] == "OK"
        journal_status = {c: p["status"] for c, p in j.orders().items() if p["status"] != "skipped"}
    exchange_status = {o.client_order_id: EXCHANGE_STATUS[o.status] for o in orders}
    assert {c: s for c, s in journal_status.items() if s not in ("not_found", "rejected")} == exchange_status
    # no decision dropped: every decision bar with an order has one that filled
    assert all(o.status == "FILLED" or o.executed_base > 0 for o in orders), [
        (o.client_order_id, o.status) for o in orders if o.status != "FILLED"]
    assert sorted(f.fill_id for f in fills) == sorted(str(t.trade_id) for t in trades)
    assert last["cash_quote"] == pytest.approx(balances["USDT"], rel=1e-12)
    assert last["position_base"] == pytest.approx(balances.get("SOL", 0.0), abs=1e-12)
