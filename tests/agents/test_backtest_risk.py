"""simulate_trading_strategy(..., risk=...): the paper/live risk layer between every backtest's
decisions and the env's books, with what it did recorded in the result (hand-checked books,
the plain backtest when every rule is off)."""

from __future__ import annotations

import numpy as np
import pytest

from coinrl.agents.backtest import simulate_many, simulate_trading_strategy
from coinrl.agents.rollout import rollout_policy, simulate_actions
from coinrl.envs.config import EnvConfig
from coinrl.envs.risk import RiskConfig
from coinrl.pipeline.dataset import MarketData
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.splits import prepare_data_for_model
from coinrl.pipeline.synthetic import gbm

HOUR = 3_600_000
T0 = 1_704_067_200_000
OFF = RiskConfig.permissive()


def only(**kw) -> RiskConfig:
    return OFF.model_copy(update=kw)


SPEC = {"features": [{"kind": "returns", "horizons": [1, 4]}, {"kind": "rsi", "window": 14}]}
ENV = EnvConfig(window=8, action="continuous", allow_short=False, max_leverage=1.0,
                episode_length_bars=None, rebalance_threshold=0.0)


@pytest.fixture(scope="module")
def market():
    return prepare_data_for_model(gbm(400, s0=40_000.0, seed=3), spec=SPEC).full


def momentum(obs):
    """Long when the newest 1-bar return is up, flat otherwise (a rule policy)."""
    col = (ENV.window - 1) * 3
    return np.where(np.asarray(obs)[:, col] > 0, 1.0, 0.0).astype(np.float32)[:, None]


def backtest(model, data, env=ENV, risk=None, **kw):
    return simulate_trading_strategy(model, data, env_config=env, risk=risk, baselines=False, **kw)


# -- the three numbers of the old backtest_with_risk, now through simulate_trading_strategy -----


def test_permissive_risk_equals_the_plain_backtest_bit_for_bit(market):
    res = backtest(momentum, market, risk=OFF)
    plain = rollout_policy(momentum, market, ENV)
    for field in ("equity_quote", "position_base", "fees_cum_quote", "turnover_cum_quote", "rewards"):
        assert np.array_equal(getattr(res.rollout, field), getattr(plain, field)), field
    assert np.array_equal(res.risk.proposed_exposure, res.risk.allowed_exposure)
    assert res.risk.counts()["allowed"] == res.rollout.n_steps
    assert plain.turnover_quote > 0  # the rule trades


def test_binding_leverage_cap_trims_every_long_decision(market):
    res = backtest(momentum, market, risk=only(max_leverage=0.5))
    rec = res.risk
    assert rec.allowed_exposure.max() == pytest.approx(0.5)
    assert {v for v, p in zip(rec.verdicts, rec.proposed_exposure, strict=True) if p == 1.0} == {"trimmed"}
    n_long = int((rec.proposed_exposure == 1.0).sum())
    assert rec.counts()["trimmed"] == rec.counts()["trims"] == n_long > 0
    assert rec.by_rule() == {"max_leverage": n_long}
    (capped,) = simulate_actions(market, ENV, np.minimum(rec.proposed_exposure, 0.5)[:, None])
    assert np.array_equal(res.rollout.equity_quote, capped.equity_quote)


def test_a_kill_holds_the_position_to_the_end_and_is_reported(market):
    res = backtest(momentum, market, risk=only(max_drawdown_frac=0.01))
    rec = res.risk
    k = rec.killed_at
    assert k is not None
    assert set(rec.verdicts[k:]) == {"kill"}
    assert rec.counts()["kills"] == 1
    assert rec.counts()["kill"] == len(rec.verdicts) - k
    # held: no order (with every threshold at 0 the books may trade float-rounding dust)
    np.testing.assert_allclose(res.rollout.position_base[k:], res.rollout.position_base[k], rtol=1e-12)
    assert res.meta["risk"]["killed_ts_ms"] == int(res.rollout.ts_ms[k])
    assert any("KILL-SWITCH" in w for w in res.warnings)
    # the kill's events are listed once, not once per held decision
    assert [e.rule for i, e in rec.events if i >= k] == ["max_drawdown"]


# -- hand-checked books ------------------------------------------------------------------------


def _bars(close, open_=None) -> MarketData:
    close = np.asarray(close, dtype=np.float64)
    n = len(close)
    o = np.r_[close[0], close[:-1]] if open_ is None else np.asarray(open_, dtype=np.float64)
    return MarketData(
        ts_ms=T0 + np.arange(n, dtype=np.int64) * HOUR, open=o, high=np.maximum(o, close),
        low=np.minimum(o, close), close=close, volume=np.full(n, 1e6),
        features=np.zeros((n, 1), dtype=np.float32), feature_names=("x",), symbol="TEST/USDT",
        timeframe="1h", meta={"split": "test"},
    )


FREE = EnvConfig(window=1, action="continuous", allow_short=True, max_leverage=3.0,
                 taker_fee_rate=0.0, slippage_bps=0.0, rebalance_threshold=0.0,
                 maintenance_margin_rate=0.0, initial_cash_quote=1000.0, episode_length_bars=None)


def test_notional_cap_buys_exactly_the_capped_quantity():
    # signal 2x long, cap 400 quote. Decision 0 (close 100, equity 1000): target 0.4, filled at
    # open 100: 4 units. Decision 1: the same 0.4, no trade; the close of bar 2 (110) marks
    # equity 600 + 440 = 1040. Decision 2: cap 400 / 1040, filled at open 110 with equity 1040:
    # 400 / 110 units.
    data = _bars([100.0, 100.0, 110.0, 120.0])
    res = backtest(np.full(3, 2.0), data, env=FREE, risk=only(max_position_notional_quote=400.0))
    assert res.risk.verdicts == ("trimmed", "trimmed", "trimmed")
    assert res.risk.allowed_exposure.tolist() == pytest.approx([0.4, 0.4, 400.0 / 1040.0])
    assert res.rollout.position_base.tolist() == pytest.approx([0.0, 4.0, 4.0, 400.0 / 110.0], rel=1e-12)
    assert res.rollout.equity_quote[2] == pytest.approx(1040.0)
    assert res.rollout.equity_quote[3] == pytest.approx(1040.0 + 400.0 / 110.0 * 10.0)


def test_stop_loss_closes_the_position_at_the_next_open_and_records_when():
    # long 1x from open 100; close 94 is a 6 % adverse move: the stop at 5 % forces flat
    data = _bars([100.0, 100.0, 94.0, 90.0, 95.0])
    res = backtest(np.full(4, 1.0), data, env=FREE, risk=only(stop_loss_frac=0.05))
    rec = res.risk
    assert rec.verdicts == ("allowed", "allowed", "trimmed", "allowed")  # 0 -> exit at decision 2
    assert rec.allowed_exposure.tolist()[2] == 0.0
    (k, e), = rec.events
    assert (k, e.rule, e.action) == (2, "stop_loss", "force_exit")
    assert rec.event_rows()[0]["ts_ms"] == T0 + 2 * HOUR  # decided at the close of bar 2
    # bought 10 at 100, sold 10 at the open of bar 3 (= close 94): equity 940, flat
    assert res.rollout.position_base[3] == 0.0
    assert res.rollout.equity_quote[3] == pytest.approx(940.0)
    # decision 3 re-enters at the open 90 (the stop acts on open positions only)
    assert res.rollout.position_base[4] == pytest.approx(940.0 / 90.0)


def test_order_rate_limit_blocks_orders_and_holds_the_position():
    # one order per 4 hours. The first order fills at the open of bar 1 (T0 + 1 h, the paper
    # broker's fill time); the exits decided at T0 + 2 h and T0 + 4 h (the closes of bars 1 and
    # 3) fall in its window and are blocked; at T0 + 5 h it has left the window. Decision 2 wants
    # the position it has: no order, nothing to block.
    data = _bars([100.0] * 6)
    sig = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    res = backtest(sig, data, env=FREE, risk=only(max_orders_per_window=1, order_window_ms=4 * HOUR))
    rec = res.risk
    assert rec.verdicts == ("allowed", "blocked", "allowed", "blocked", "allowed")
    assert rec.counts()["blocked"] == rec.counts()["blocks"] == 2
    assert [r["now_ms"] for r in rec.event_rows()] == [T0 + 2 * HOUR, T0 + 4 * HOUR]
    assert res.rollout.position_base.tolist() == [0.0, 10.0, 10.0, 10.0, 10.0, 0.0]
    assert len(res.fills) == 2


def test_risk_applies_to_discrete_agents_with_targets_between_positions(market):
    env = ENV.model_copy(update={"action": "discrete", "positions": (0.0, 1.0)})

    def discrete(obs):
        return momentum(obs)[:, 0].astype(np.int64)

    res = backtest(discrete, market, env=env, risk=only(max_leverage=0.25))
    assert set(np.round(res.rollout.target_exposure, 12)) <= {0.0, 0.25}
    assert res.rollout.actions.dtype == np.int64  # the policy's own actions are kept
    plain = backtest(discrete, market, env=env, risk=OFF)
    assert np.array_equal(plain.rollout.equity_quote, rollout_policy(discrete, market, env).equity_quote)


def test_risk_with_a_delayed_fill_is_refused_with_the_fix(market):
    with pytest.raises(ConfigError, match="delay_bars=1"):
        backtest(momentum, market, env=ENV.model_copy(update={"delay_bars": 2}), risk=OFF)


def test_without_risk_the_result_has_no_risk_record(market):
    res = backtest(momentum, market)
    assert res.risk is None
    assert "risk" not in res.meta


def test_simulate_many_refuses_mismatched_pairs_with_risk_too():
    with pytest.raises(ConfigError, match="as many models as datas"):
        simulate_many([], [], risk=OFF)


def test_simulate_many_with_risk_gives_each_pair_its_single_risk_backtest(trained, planted):
    cap = only(max_leverage=0.5)
    many = simulate_many([trained, trained], [planted.test, planted.validation], baselines=False, risk=cap)
    for res, data in zip(many, (planted.test, planted.validation), strict=True):
        one = simulate_trading_strategy(trained, data, baselines=False, risk=cap)
        assert np.array_equal(res.rollout.equity_quote, one.rollout.equity_quote)
        assert res.risk.verdicts == one.risk.verdicts
        assert np.abs(res.rollout.target_exposure).max() <= 0.5 + 1e-12
    assert sum(r.risk.counts()["trims"] for r in many) > 0  # the agent takes full positions


# -- the portfolio layer a portfolio rollout calls around each step ----------------------------


def test_portfolio_layer_trims_holds_and_records_per_asset():
    from coinrl.agents.backtest_risk import PortfolioBacktestRiskLayer
    from coinrl.envs.risk_portfolio import PortfolioRiskConfig

    cfg = PortfolioRiskConfig.permissive().model_copy(update={
        "max_leverage": 1.0, "max_orders_per_window": 1, "order_window_ms": 3 * HOUR,
        "max_drawdown_frac": 0.2})
    layer = PortfolioBacktestRiskLayer(cfg, HOUR, ("BTC", "ETH"))
    flat = {"cash_quote": 1000.0, "positions_base": [0.0, 0.0], "avg_entry_quote": [0.0, 0.0],
            "close_quote": [100.0, 10.0], "equity_quote": 1000.0, "turnover_quote": 0.0,
            "fill_open_quote": [100.0, 10.0]}
    # decision 0: gross 1.5 scaled to 1 -> (0.6, 0.4); the step trades (turnover 1000)
    w = layer.review(T0, [0.9, 0.6], **flat)
    assert w.tolist() == pytest.approx([0.6, 0.4])
    layer.after_step(T0 + HOUR, 1000.0)
    # decision 1 (1 h later, bought 6 BTC and 40 ETH): another rebalance is blocked; the books
    # get the weights that keep the positions at the next opens (102, 9): equity 612 + 360
    held = {**flat, "cash_quote": 0.0, "positions_base": [6.0, 40.0], "avg_entry_quote": [100.0, 10.0],
            "turnover_quote": 1000.0, "fill_open_quote": [102.0, 9.0]}
    w = layer.review(T0 + HOUR, [0.0, 1.0], **held)
    assert w.tolist() == pytest.approx([612.0 / 972.0, 360.0 / 972.0])
    # decision 2: equity 790 is 21 % below the peak 1000: kill, latched at decision 3
    dd = {**held, "close_quote": [90.0, 6.25], "equity_quote": 790.0}
    layer.review(T0 + 2 * HOUR, [0.5, 0.5], **dd)
    layer.review(T0 + 3 * HOUR, [0.5, 0.5], **dd)
    rec = layer.record()
    assert rec.verdicts == ("trimmed", "blocked", "kill", "kill")
    assert rec.asset_verdicts[0] == ("trimmed", "trimmed")
    assert rec.asset_verdicts[1] == ("blocked", "blocked")
    assert rec.killed_at == 2
    assert rec.proposed_weights.shape == rec.allowed_weights.shape == (4, 2)
    rules = [(r["decision"], r["symbol"], r["rule"]) for r in rec.event_rows()]
    assert rules == [(0, None, "max_leverage"), (0, "BTC", "max_leverage"), (0, "ETH", "max_leverage"),
                     (1, None, "max_orders_per_window"), (2, None, "max_drawdown")]
    assert rec.counts()["assets"]["BTC"] == {"trimmed": 1, "blocked": 3}
    assert rec.to_dict()["killed_ts_ms"] == T0 + 2 * HOUR
