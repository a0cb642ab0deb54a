"""Parity on decisions, fills and PnL: a paper session and a live session on the emulator,
replaying the same candles with the same trained bundle, take the backtest's decisions and end
with the backtest's books.

The backtest is the one simulation path of agents (``rollout_policy`` over the env's books).
The paper broker steps those very books, so its books equal the backtest's bit for bit; the
live session sends real orders over ccxt to the emulator, which fills them with the env's fill
rules (the same lot step and minimum notional are configured on both sides), so its cash,
position, equity and fees equal the backtest's to 1e-9 (the exchange reports no slippage split;
the books are compared on cash, position, equity and fees).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from live_helpers import SYMBOL, candles, connect, emulator, public, tiny_bundle

from coinrl.agents.bundle import load_model
from coinrl.agents.rollout import rollout_policy
from coinrl.live.journal import Journal
from coinrl.live.live_env import SteppedClock
from coinrl.live.risk import RiskConfig
from coinrl.live.runner import ExitCode, RunnerConfig, build_runner
from coinrl.pipeline.splits import market_data_from_spec

pytestmark = pytest.mark.slow

K0 = 160  # the session starts with bars 0..K0-1 closed
N_DEC = 60  # decisions per session


@pytest.fixture(scope="module")
def agent(request):
    cache = Path(request.config.cache.mkdir("coinrl-live-tiny-bundle"))
    return load_model(tiny_bundle(cache / "bundle"))


@pytest.fixture(scope="module")
def frame():
    return candles(K0 + N_DEC + 5, seed=5)


@pytest.fixture(scope="module")
def backtest(agent, frame):
    md = market_data_from_spec(frame, agent.feature_spec, agent.normaliser)
    i0 = int(np.searchsorted(md.ts_ms, frame.ts_ms.iloc[K0 - 1]))
    w = agent.env_config.window
    split = md.slice(i0 - (w - 1), i0 + N_DEC + 1)  # decisions at bars K0-1 .. K0-2+N_DEC
    return rollout_policy(agent.model, split, agent.env_config)


def run_session(agent, frame, tmp_path: Path, mode: str):
    with emulator(frame, K0) as (server, clock):
        client = connect(server) if mode == "live" else public(server)
        journal = Journal(tmp_path / f"{mode}.sqlite", run_id=f"par{mode}")
        runner = build_runner(
            agent, env_config=agent.env_config, spec=agent.feature_spec,
            normaliser=agent.normaliser, client=client, symbol=SYMBOL, timeframe="1h",
            mode=mode, journal=journal, risk_config=RiskConfig.permissive(),
            config=RunnerConfig(max_bars=N_DEC, reload_every_bars=0), clock=SteppedClock(clock),
            history_bars=K0, check_clock_skew=False,
        )
        code = runner.run()
        balances = server.balances(list(server.accounts)[0].api_key) if mode == "live" else None
        trades = server.trades() if mode == "live" else None
        state = runner.env.broker_state
    with Journal(tmp_path / f"{mode}.sqlite") as j:
        decisions = [int(e.payload["action"][0]) for e in j.events("decision")]
        fills = j.fills()
        equity_path = [e.payload["equity_quote"] for e in j.events("balance")]
    return code, decisions, fills, equity_path, state, balances, trades


def test_paper_and_live_sessions_equal_the_backtest(agent, frame, backtest, tmp_path):
    bt = backtest
    assert bt.n_steps == N_DEC
    n_trades = int(np.count_nonzero(np.diff(bt.position_base)))
    assert n_trades >= 15  # the bundle trades: the comparison has something to compare

    p_code, p_dec, p_fills, p_eq, p_state, _, _ = run_session(agent, frame, tmp_path, "paper")
    l_code, l_dec, l_fills, l_eq, l_state, balances, trades = run_session(agent, frame, tmp_path, "live")
    assert p_code == l_code == ExitCode.OK

    # the same decisions, bar for bar
    assert p_dec == l_dec == bt.actions.tolist()

    # paper: the backtest's books bit for bit, at every mark
    assert np.array_equal(np.asarray(p_eq), bt.equity_quote)
    assert p_state.position_base == bt.position_base[-1]
    assert p_state.equity_quote == bt.equity_quote[-1]
    assert p_state.fees_paid_quote == bt.fees_paid_quote

    # the same fills: one per position change, same bar, side and quantity
    changes = np.flatnonzero(np.diff(bt.position_base))
    fill_ts = bt.ts_ms[changes + 1]
    for fills in (p_fills, l_fills):
        assert len(fills) == len(changes)
        assert [f.ts_ms for f in fills] == fill_ts.tolist()
        qty = [f.side.sign * f.qty_base for f in fills]
        np.testing.assert_allclose(qty, np.diff(bt.position_base)[changes], rtol=0, atol=1e-9)
    for pf, lf in zip(p_fills, l_fills, strict=True):
        assert lf.price_quote == pytest.approx(pf.price_quote, rel=1e-9)
        assert lf.fee_quote == pytest.approx(pf.fee_quote, rel=1e-9)

    # live: the exchange's books equal the backtest's to 1e-9
    cash = balances["USDT"][0] + balances["USDT"][1]
    pos = balances.get("SOL", (0.0, 0.0))[0] + balances.get("SOL", (0.0, 0.0))[1]
    final_close = float(bt.close_quote[-1])
    assert pos == pytest.approx(bt.position_base[-1], abs=1e-9)
    assert cash == pytest.approx(p_state.cash_quote, rel=1e-9)
    assert cash + pos * final_close == pytest.approx(bt.equity_quote[-1], rel=1e-9)
    assert sum(t.fee_quote for t in trades) == pytest.approx(bt.fees_paid_quote, rel=1e-9)
    # one mark per decision, then the final sync of terminate_trading at the same close
    assert len(l_eq) == len(bt.equity_quote) + 1
    np.testing.assert_allclose(l_eq[:-1], bt.equity_quote, rtol=1e-9)
    assert l_eq[-1] == pytest.approx(bt.equity_quote[-1], rel=1e-9)
    assert (l_state.cash_quote, l_state.position_base) == (cash, pos)
    # every exchange trade is journalled once
    assert sorted(f.fill_id for f in l_fills) == sorted(str(t.trade_id) for t in trades)
