"""Portfolio baselines: the analytic constant-rebalanced 1/N (daily) and buy-and-hold without
costs, the agent's costs charged to every baseline, turnover-matched random draws, verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from portfolio_helpers import portfolio, random_walk

from coinrl.agents.portfolio_baselines import (
    RANDOM_NAME,
    agent_turnover,
    play_portfolio_baselines,
    portfolio_verdicts,
    rebalance_decisions,
)
from coinrl.agents.portfolio_rollout import rollout_portfolio, weights_config

NO_COSTS = {"taker_fee_rate": 0.0, "slippage_bps": 0.0, "rebalance_threshold": 0.0,
            "allow_short": False, "max_leverage": 1.0, "window": 2, "use_funding": False}


def gapless(n: int, a: int, seed: int, vol: float = 0.01) -> np.ndarray:
    """Closes of a random walk; each bar opens at the previous close."""
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, (n, a)), axis=0))


def test_crp_daily_and_buy_and_hold_without_costs_are_the_analytic_portfolios() -> None:
    close = gapless(24 * 6, 3, seed=1)
    open_ = np.r_[close[:1], close[:-1]]
    data = portfolio(open_, close)
    runs = play_portfolio_baselines(data, NO_COSTS, n_random=2)
    o, c = open_[2:], close[2:]  # fills start at bar window = 2
    reb = rebalance_decisions(data, weights_config(NO_COSTS), 86_400_000)
    # analytic: at each rebalance fill, 1/3 of the equity in each asset at the open; held
    eq = 10_000.0
    qty = np.zeros(3)
    crp = []
    for k in range(len(c)):
        if reb[k]:
            eq_open = eq if k == 0 else float(qty @ o[k])
            qty = eq_open / 3.0 / o[k]
        eq = float(qty @ c[k])
        crp.append(eq)
    np.testing.assert_allclose(runs.rollouts["crp_daily"].equity_quote[1:], crp, rtol=1e-10)
    # UTC midnight fills: the data start at 00:00, decisions from bar 1, so day 2 starts at bar 24
    assert np.flatnonzero(reb).tolist() == [0, 22, 46, 70, 94, 118]
    hold = 10_000.0 / 3.0 * (c / o[0]).sum(axis=1)
    np.testing.assert_allclose(runs.rollouts["equal_weight_hold"].equity_quote[1:], hold, rtol=1e-10)
    one = 10_000.0 * c[:, 1] / o[0, 1]
    np.testing.assert_allclose(runs.rollouts["hold_A1/USD"].equity_quote[1:], one, rtol=1e-10)
    np.testing.assert_array_equal(runs.rollouts["cash"].equity_quote, 10_000.0)


def test_weekly_rebalances_fill_at_monday_midnight_utc() -> None:
    close = gapless(24 * 16, 2, seed=3)
    data = portfolio(np.r_[close[:1], close[:-1]], close)  # starts Monday 2024-01-01 00:00 UTC
    reb = rebalance_decisions(data, weights_config(NO_COSTS), 7 * 86_400_000, 3 * 86_400_000)
    fills = data.ts_ms[2:][reb]
    assert ((fills[1:] - data.ts_ms[0]) % (7 * 86_400_000) == 0).all()
    assert len(fills) == 3


def test_every_baseline_pays_the_agents_costs_per_asset() -> None:
    data = random_walk(24 * 8, 3, seed=4, vol=0.02)
    cfg = {"window": 4, "slippage_bps": 0.0, "taker_fee_rate": 0.002, "rebalance_threshold": 0.0,
           "asset_costs": {"A2/USD": {"taker_fee_rate": 0.01}}}
    runs = play_portfolio_baselines(data, cfg, n_random=3)
    for name, ro in [*runs.rollouts.items(), *((f"draw{i}", d) for i, d in enumerate(runs.random_draws))]:
        rates = np.array([0.002, 0.002, 0.01])
        np.testing.assert_allclose(ro.fees_quote, rates * ro.turnover_quote, rtol=1e-9, err_msg=name)
        if name != "cash":
            assert ro.fees_quote.sum() > 0, name


def test_random_weights_is_a_distribution_matched_to_the_agents_turnover() -> None:
    data = random_walk(400, 3, seed=6)
    cfg = {"window": 4}
    rng = np.random.default_rng(0)
    w = np.repeat(rng.dirichlet(np.ones(3), size=20) * 0.9, 20, axis=0)[:396]  # 20 rebalances
    agent = rollout_portfolio(data, cfg, weights=w)
    n_changes, turnover = agent_turnover(agent)
    runs = play_portfolio_baselines(data, cfg, agent=agent, n_random=8, seed=1)
    assert len(runs.random_draws) == 8
    finals = {round(float(d.equity_quote[-1]), 6) for d in runs.random_draws}
    assert len(finals) == 8  # eight different draws
    m = runs.metrics[RANDOM_NAME]
    assert m["n_draws"] == 8
    assert m["n_changes"] == n_changes
    assert m["target_turnover"] == pytest.approx(turnover)
    realised = [agent_turnover(d)[1] for d in runs.random_draws]
    assert np.mean(realised) == pytest.approx(turnover, rel=0.1)
    assert m["realised_turnover"] == pytest.approx(np.mean(realised))
    again = play_portfolio_baselines(data, cfg, agent=agent, n_random=8, seed=1)
    np.testing.assert_array_equal(again.random_draws[3].equity_quote, runs.random_draws[3].equity_quote)


def test_verdicts_judge_every_baseline_with_the_paired_bootstrap() -> None:
    close = gapless(500, 2, seed=7, vol=0.002) * np.exp(np.linspace(0.0, 0.6, 500))[:, None]  # a strong rise
    data = portfolio(np.r_[close[:1], close[:-1]], close)
    cfg = {"window": 2, "allow_short": False}
    agent = rollout_portfolio(data, cfg, weights=np.full((498, 2), 0.45))
    runs = play_portfolio_baselines(data, cfg, agent=agent, n_random=4)
    verdicts = {v.baseline: v for v in portfolio_verdicts(agent, runs, data="the test split")}
    assert set(verdicts) == set(runs.rollouts)
    assert verdicts["cash"].outcome == "beats"
    assert verdicts["cash"].confidence > 0.95
    assert verdicts[RANDOM_NAME].n_draws == 4
    assert "P(agent better)" in verdicts["crp_daily"].line()
    assert "the test split" in verdicts["cash"].line()


def test_random_draws_are_recalibrated_when_the_threshold_skips_their_small_trades() -> None:
    # an agent that trades 3 % of equity every bar: draws of as many tiny steps lose some to the
    # 1 % rebalance threshold (about 17 % of the turnover here) until they are planned again
    data = random_walk(300, 3, seed=6)
    cfg = {"window": 4, "rebalance_threshold": 0.01}
    agent = rollout_portfolio(data, cfg, weights=np.tile([[0.3, 0.3, 0.3], [0.33, 0.3, 0.3]], (148, 1)))
    _, turnover = agent_turnover(agent)
    m = play_portfolio_baselines(data, cfg, agent=agent, n_random=8, seed=1).metrics[RANDOM_NAME]
    assert m["turnover_scale"] > 1.05
    assert m["realised_turnover"] == pytest.approx(turnover, rel=0.05)
    assert m["target_turnover"] == pytest.approx(turnover)
