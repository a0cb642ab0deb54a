"""The same risk decision in a backtest and a paper session: over the same candles, with limits
that bind, the paper session (the runner on the emulator, real ccxt) trims, blocks and
force-exits exactly the decisions the backtest does (``simulate_trading_strategy(...,
risk=...)``), to the same targets, and ends with the backtest's books bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from live_helpers import ENV, SPEC, SYMBOL, RulePolicy, candles, emulator, public

from coinrl.agents.backtest import simulate_trading_strategy
from coinrl.live.journal import Journal
from coinrl.live.live_env import SteppedClock
from coinrl.live.risk import RiskConfig
from coinrl.live.runner import ExitCode, RunnerConfig, build_runner
from coinrl.pipeline.splits import market_data_from_spec, prepare_data_for_model

pytestmark = pytest.mark.slow

HOUR = 3_600_000
K0 = 160  # the session starts with bars 0..K0-1 closed
N_DEC = 60  # decisions per session
FRAME = candles(K0 + N_DEC + 5, seed=5)
RISK = RiskConfig.permissive().model_copy(update={
    "max_leverage": 0.5,  # the rule's "full" position (1.0) is trimmed to 0.5
    "stop_loss_frac": 0.02,
    "max_orders_per_window": 1, "order_window_ms": 4 * HOUR,
})


@pytest.fixture(scope="module")
def prepared():
    return prepare_data_for_model(candles(600, seed=2), spec=SPEC)


def rule(obs):
    return RulePolicy().predict(obs)


def test_a_breach_trims_and_blocks_the_same_orders_in_a_backtest_and_a_paper_session(prepared, tmp_path: Path):
    md = market_data_from_spec(FRAME, prepared.spec, prepared.normaliser)
    i0 = int(np.searchsorted(md.ts_ms, FRAME.ts_ms.iloc[K0 - 1]))
    w = ENV.window
    split = md.slice(i0 - (w - 1), i0 + N_DEC + 1)  # decisions at bars K0-1 .. K0-2+N_DEC
    bt = simulate_trading_strategy(rule, split, env_config=ENV, risk=RISK, baselines=False)
    rec = bt.risk
    counts = rec.counts()
    assert len(rec.verdicts) == N_DEC
    # the limits bind: the comparison has trims, blocks and forced exits to compare
    assert counts["trims"] >= 20
    assert counts["blocks"] >= 5
    assert counts["forced_exits"] >= 1

    with emulator(FRAME, K0) as (server, clock):
        runner = build_runner(
            RulePolicy(), env_config=ENV, spec=prepared.spec, normaliser=prepared.normaliser,
            client=public(server), symbol=SYMBOL, timeframe="1h", mode="paper",
            journal=Journal(tmp_path / "paper.sqlite", run_id="riskpar"), risk_config=RISK,
            config=RunnerConfig(max_bars=N_DEC, reload_every_bars=0), clock=SteppedClock(clock),
            history_bars=K0, check_clock_skew=False,
        )
        assert runner.run() == ExitCode.OK
        state = runner.env.broker_state
    with Journal(tmp_path / "paper.sqlite") as j:
        decisions = [e.payload for e in j.events("decision")]
        risk_events = [e.payload for e in j.events("risk")]
        equity_path = [e.payload["equity_quote"] for e in j.events("balance")]

    # the same verdict, proposal and allowed target at every decision
    assert [d["verdict"] for d in decisions] == list(rec.verdicts)
    assert [d["proposed_exposure"] for d in decisions] == rec.proposed_exposure.tolist()
    assert [d["target_exposure"] for d in decisions] == rec.allowed_exposure.tolist()
    # the same rules acted, in the same order
    assert [e["rule"] for d in risk_events for e in d["events"]] == [e.rule for _, e in rec.events]
    # and the books are the backtest's, bit for bit
    assert np.array_equal(np.asarray(equity_path), bt.rollout.equity_quote)
    assert state.position_base == bt.rollout.position_base[-1]
    assert state.fees_paid_quote == bt.rollout.fees_paid_quote


def test_the_kill_switch_fires_at_the_same_decision_in_a_backtest_and_a_paper_session(
    prepared, tmp_path: Path
):
    kill = RiskConfig.permissive().model_copy(update={"max_drawdown_frac": 0.03})
    md = market_data_from_spec(FRAME, prepared.spec, prepared.normaliser)
    i0 = int(np.searchsorted(md.ts_ms, FRAME.ts_ms.iloc[K0 - 1]))
    split = md.slice(i0 - (ENV.window - 1), i0 + N_DEC + 1)
    bt = simulate_trading_strategy(rule, split, env_config=ENV, risk=kill, baselines=False)
    k = bt.risk.killed_at
    assert k is not None
    assert 5 <= k < N_DEC - 5  # mid-session: trades before it, decisions after it

    with emulator(FRAME, K0) as (server, clock):
        runner = build_runner(
            RulePolicy(), env_config=ENV, spec=prepared.spec, normaliser=prepared.normaliser,
            client=public(server), symbol=SYMBOL, timeframe="1h", mode="paper",
            journal=Journal(tmp_path / "kill.sqlite", run_id="riskkill"), risk_config=kill,
            config=RunnerConfig(max_bars=N_DEC, reload_every_bars=0, flatten_on_kill=False),
            clock=SteppedClock(clock), history_bars=K0, check_clock_skew=False,
        )
        assert runner.run() == ExitCode.KILL_SWITCH
        state = runner.env.broker_state
    with Journal(tmp_path / "kill.sqlite") as j:
        decisions = [e.payload for e in j.events("decision")]
    # the session stops at the kill: its decisions are the backtest's up to and with it
    assert [d["verdict"] for d in decisions] == list(bt.risk.verdicts[: k + 1])
    assert decisions[-1]["events"][0]["rule"] == bt.risk.events[-1][1].rule == "max_drawdown"
    # held, not flattened, on both sides: the position at the kill is kept
    assert state.position_base == bt.rollout.position_base[k]
    assert bt.rollout.position_base[-1] == pytest.approx(bt.rollout.position_base[k], rel=1e-12)
