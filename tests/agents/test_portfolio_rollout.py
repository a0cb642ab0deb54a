"""rollout_portfolio: hand-checked books on a tiny case, the env stepped by hand bit for bit,
the analytic constant-rebalanced portfolio, a policy equal to its weights, and bad signals."""

from __future__ import annotations

import numpy as np
import pytest
from portfolio_helpers import ZERO_COSTS, portfolio, random_walk

from coinrl.agents.portfolio_rollout import (
    rollout_portfolio,
    rollout_portfolio_policy,
    simulate_weights,
)
from coinrl.envs import PortfolioEnv
from coinrl.pipeline.errors import ConfigError, DataError

TINY = {"window": 1, "taker_fee_rate": 0.001, "slippage_bps": 0.0, "rebalance_threshold": 0.0,
        "initial_cash_quote": 1000.0, "max_leverage": 1.0, "allow_short": False}


def test_tiny_two_asset_books_match_the_hand_computed_numbers() -> None:
    # bar 0: decide 40/40; bar 1: A 100 -> 110, B 50 -> 45; decide 0/50; bar 2: A 110 -> 121, B flat
    data = portfolio(open_=[[100.0, 50.0], [100.0, 50.0], [110.0, 45.0]],
                     close=[[100.0, 50.0], [110.0, 45.0], [121.0, 45.0]])
    ro = rollout_portfolio(data, TINY, weights=[[0.4, 0.4], [0.0, 0.5]])
    # fill 1 at the opens (equity 1000): 4 A, 8 B, fees 0.4 + 0.4, cash 199.2
    # mark 1: 199.2 + 4 * 110 + 8 * 45 = 999.2
    # fill 2 (equity 999.2 at the opens): sell 4 A (fee 0.44), buy B to 499.6 / 45 (139.6 traded,
    # fee 0.1396); cash 199.2 + 440 - 0.44 - 139.6 - 0.1396 = 499.0204; mark 2: + 499.6
    np.testing.assert_allclose(ro.equity_quote, [1000.0, 999.2, 998.6204], rtol=1e-12)
    np.testing.assert_allclose(ro.position_base[1], [4.0, 8.0], rtol=1e-12)
    np.testing.assert_allclose(ro.position_base[2], [0.0, 499.6 / 45.0], rtol=1e-12)
    np.testing.assert_allclose(ro.weights[1], [440.0 / 999.2, 360.0 / 999.2], rtol=1e-12)
    np.testing.assert_allclose(ro.fees_quote, [0.84, 0.5396], rtol=1e-12)
    np.testing.assert_allclose(ro.turnover_quote, [840.0, 539.6], rtol=1e-12)
    np.testing.assert_allclose(ro.funding_quote, [0.0, 0.0])
    np.testing.assert_array_equal(ro.target_weights, [[0.4, 0.4], [0.0, 0.5]])
    assert list(ro.ts_ms) == list(data.ts_ms)
    m = ro.metrics()
    assert m["total_return"] == pytest.approx(-0.0013796, rel=1e-9)
    assert m["fees_frac"] == pytest.approx((0.84 + 0.5396) / 1000.0, rel=1e-12)
    assert m["turnover"] == pytest.approx((840.0 + 539.6) / np.mean([1000.0, 999.2, 998.6204]), rel=1e-12)
    assert m["max_drawdown"] == pytest.approx(1.0 - 998.6204 / 1000.0, rel=1e-9)
    for key in ("sharpe", "total_return", "max_drawdown", "turnover", "fees_frac", "funding_frac"):
        assert key in m


def test_a_weights_rollout_equals_stepping_the_env_by_hand_bit_for_bit() -> None:
    data = random_walk(200, 3, seed=3, vol=0.02, funding=True)
    cfg = {"window": 5, "taker_fee_rate": 0.0007, "slippage_bps": 2.0, "episode_length_bars": 50,
           "max_leverage": 2.0}
    t_steps = len(data) - 5
    rng = np.random.default_rng(1)
    w = rng.uniform(-0.6, 0.6, (t_steps, 3))
    ro = rollout_portfolio(data, cfg, weights=w)
    env = PortfolioEnv(data, {**cfg, "episode_length_bars": None})
    _, info = env.reset()
    eq, qty, wts = [info["equity_quote"]], [info["position_base"]], [info["weights"]]
    for k in range(t_steps):
        _, _, te, tr, info = env.step(w[k])
        eq.append(info["equity_quote"])
        qty.append(info["position_base"].copy())
        wts.append(info["weights"].copy())
    assert tr
    assert not te
    np.testing.assert_array_equal(ro.equity_quote, eq)
    np.testing.assert_array_equal(ro.position_base, np.stack(qty))
    np.testing.assert_array_equal(ro.weights, np.stack(wts))
    assert ro.fees_quote.sum() == pytest.approx(info["fees_paid_quote"], rel=1e-12)
    assert np.abs(ro.funding_quote).sum() > 0  # funding charged per asset
    assert ro.metrics()["funding_frac"] == pytest.approx(ro.funding_quote.sum() / 10_000.0)


def test_constant_equal_weights_without_costs_is_the_analytic_rebalanced_portfolio() -> None:
    data = random_walk(250, 4, seed=5, vol=0.02)
    cfg = {**ZERO_COSTS, "window": 3, "allow_short": False, "max_leverage": 1.0}
    t_steps = len(data) - 3
    ro = rollout_portfolio(data, cfg, weights=np.full((t_steps, 4), 0.25))
    o, c = data.open[3:], data.close[3:]
    # rebalanced to 1/N at every open, held to the close; from that close to the next open the
    # drifted quantities ride the gap: equity_open(t+1) = equity_open(t) * mean(o[t+1] / o[t])
    eq_open = 10_000.0 * np.r_[1.0, np.cumprod(np.mean(o[1:] / o[:-1], axis=1))]
    np.testing.assert_allclose(ro.equity_quote[1:], eq_open * np.mean(c / o, axis=1), rtol=1e-10)


def test_a_policy_and_the_same_weights_give_the_same_run_in_a_batch_of_many() -> None:
    data = random_walk(120, 2, seed=2)
    cfg = {"window": 4, "action": "continuous"}
    t_steps = len(data) - 4

    def policy(obs: np.ndarray) -> np.ndarray:
        assert obs.ndim == 2
        return np.tile(np.array([0.5, -0.25], dtype=np.float32), (len(obs), 1))

    runs = rollout_portfolio_policy(policy, data, cfg, n_accounts=3)
    by_weights = simulate_weights(data, cfg, np.tile([0.5, -0.25], (t_steps, 1)))[0]
    for ro in runs:
        np.testing.assert_array_equal(ro.equity_quote, by_weights.equity_quote)
    np.testing.assert_array_equal(runs[0].target_weights[0], [0.5, -0.25])
    single = rollout_portfolio(data, cfg, policy=policy)
    np.testing.assert_array_equal(single.equity_quote, by_weights.equity_quote)


def test_a_per_bar_signal_uses_the_rows_of_the_decision_bars() -> None:
    data = random_walk(60, 2, seed=4)
    rng = np.random.default_rng(0)
    per_bar = rng.uniform(0.0, 0.5, (60, 2))
    cfg = {"window": 6}
    a = rollout_portfolio(data, cfg, weights=per_bar)
    b = rollout_portfolio(data, cfg, weights=per_bar[5:-1])
    np.testing.assert_array_equal(a.equity_quote, b.equity_quote)


def test_bad_signals_raise_clear_errors() -> None:
    data = random_walk(40, 2)
    cfg = {"window": 4, "max_leverage": 1.0, "allow_short": False}
    ok = np.full((36, 2), 0.3)
    with pytest.raises(ConfigError, match="exactly one"):
        rollout_portfolio(data, cfg)
    nan = ok.copy()
    nan[7, 1] = np.nan
    with pytest.raises(DataError, match="A1/USD.*decision 7"):
        rollout_portfolio(data, cfg, weights=nan)
    with pytest.raises(DataError, match="must be"):
        rollout_portfolio(data, cfg, weights=ok[:, :1])
    with pytest.raises(ConfigError, match="gross budget"):
        rollout_portfolio(data, cfg, weights=ok * 2)
    short = ok.copy()
    short[3, 0] = -0.1
    with pytest.raises(ConfigError, match="allow_short"):
        rollout_portfolio(data, cfg, weights=short)
