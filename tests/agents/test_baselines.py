"""Baselines and the whole-split simulation: hand-checked books, exact turnover matching."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coinrl.agents.baselines import (
    count_changes,
    flat_exposure,
    long_exposure,
    play_baselines,
    random_targets,
    run_baselines,
)
from coinrl.agents.metrics import json_safe
from coinrl.agents.rollout import (
    actions_to_targets,
    n_decisions,
    rollout_policy,
    simulate_actions,
    targets_to_actions,
)
from coinrl.envs.config import EnvConfig
from coinrl.pipeline.errors import ConfigError
from coinrl.pipeline.splits import PreparedData

FREE = EnvConfig(window=8, taker_fee_rate=0.0, slippage_bps=0.0)


def test_buy_and_hold_without_costs_earns_the_price_move(planted: PreparedData) -> None:
    md = planted.validation
    t = n_decisions(md, FREE)
    (bh,) = simulate_actions(md, FREE, targets_to_actions(np.ones(t), FREE))
    # bought at the open after the first decision bar, marked at the last close
    expected = FREE.initial_cash_quote * md.close[-1] / md.open[FREE.window]
    assert bh.equity_quote[-1] == pytest.approx(expected, rel=1e-12)
    assert bh.equity_quote[0] == FREE.initial_cash_quote
    assert len(bh.equity_quote) == t + 1 == len(md) - FREE.window + 1
    np.testing.assert_array_equal(bh.ts_ms, md.ts_ms[FREE.window - 1 :])
    assert bh.fees_paid_quote == 0.0
    np.testing.assert_allclose(bh.exposure[1:], 1.0)


def test_fees_are_charged_once_on_the_entry(planted: PreparedData, small_env: EnvConfig) -> None:
    md = planted.validation
    t = n_decisions(md, small_env)
    (bh,) = simulate_actions(md, small_env, targets_to_actions(np.ones(t), small_env))
    assert bh.fees_paid_quote == pytest.approx(small_env.taker_fee_rate * bh.turnover_quote)
    assert bh.turnover_quote == pytest.approx(bh.equity_quote[0], rel=2e-3)  # one full buy
    free = simulate_actions(md, FREE, targets_to_actions(np.ones(t), FREE))[0]
    assert bh.equity_quote[-1] < free.equity_quote[-1]


def test_flat_never_trades(planted: PreparedData, small_env: EnvConfig) -> None:
    metrics, rollouts = run_baselines(planted.validation, small_env, n_random=2)
    assert metrics["flat"]["total_return"] == 0.0
    assert metrics["flat"]["fees_paid_quote"] == 0.0
    assert np.all(rollouts["flat"].equity_quote == small_env.initial_cash_quote)


def test_random_baseline_matches_the_agents_number_of_changes(
    planted: PreparedData, small_env: EnvConfig
) -> None:
    md = planted.validation
    t = n_decisions(md, small_env)
    agent = np.zeros(t)
    agent[10:40] = 1.0
    agent[100:] = -1.0  # 3 changes from flat
    metrics, rollouts = run_baselines(md, small_env, agent_targets=agent, n_random=3, seed=1)
    assert metrics["random"]["n_changes"] == 3
    assert count_changes(rollouts["random"].target_exposure) == 3
    again, _ = run_baselines(md, small_env, agent_targets=agent, n_random=3, seed=1)
    assert json_safe(again["random"]) == json_safe(metrics["random"])


def test_random_baseline_metrics_are_the_mean_of_its_draws_with_their_spread(
    planted: PreparedData, small_env: EnvConfig
) -> None:
    md = planted.validation
    t = n_decisions(md, small_env)
    agent = np.where(np.arange(t) % 20 < 10, 1.0, -1.0)
    runs = play_baselines(md, small_env, agent_targets=agent, n_random=6, seed=3)
    totals = np.array([d.metrics()["total_return"] for d in runs.random_draws])
    assert len(totals) == 6
    assert np.unique(totals).size > 1  # the draws differ
    m = runs.metrics["random"]
    assert m["total_return"] == pytest.approx(totals.mean())
    assert m["draws_mean_total_return"] == pytest.approx(totals.mean())
    assert m["draws_std_total_return"] == pytest.approx(totals.std())
    assert m["draws_q50_total_return"] == pytest.approx(np.median(totals))
    assert m["n_draws"] == 6.0
    # the chart keeps one draw; the numbers are never that one draw alone
    assert runs.rollouts["random"] is runs.random_draws[0]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 300), k=st.integers(0, 300), seed=st.integers(0, 10_000))
def test_random_targets_change_exactly_k_times(n: int, k: int, seed: int) -> None:
    cfg = EnvConfig()
    x = random_targets(n, cfg, k, np.random.default_rng(seed))
    assert count_changes(x, start=flat_exposure(cfg)) == min(k, n)
    assert set(np.unique(x)) <= set(cfg.discrete_positions)


def test_baseline_exposures_respect_the_action_space() -> None:
    spot = EnvConfig(allow_short=False, positions=(0.0, 0.5, 1.0))
    assert long_exposure(spot) == 1.0
    assert flat_exposure(spot) == 0.0
    lev = EnvConfig(action="continuous", max_leverage=3.0)
    assert long_exposure(lev) == 1.0
    with pytest.raises(ConfigError, match="not one of the env's discrete positions"):
        targets_to_actions(np.array([0.7]), EnvConfig())
    np.testing.assert_array_equal(actions_to_targets(targets_to_actions([-1.0, 1.0], EnvConfig()), EnvConfig()), [-1.0, 1.0])


def test_policy_rollout_and_replayed_actions_give_the_same_books(
    planted: PreparedData, small_env: EnvConfig, signal_policy: Callable[[np.ndarray], np.ndarray]
) -> None:
    """One simulator: replaying the policy's decisions reproduces its books bit for bit."""
    md = planted.validation
    ro = rollout_policy(signal_policy, md, small_env)
    (replay,) = simulate_actions(md, small_env, ro.actions)
    np.testing.assert_array_equal(ro.equity_quote, replay.equity_quote)
    np.testing.assert_array_equal(ro.position_base, replay.position_base)
    assert ro.fees_paid_quote == replay.fees_paid_quote


def test_the_planted_signal_is_worth_trading_net_of_fees(
    planted: PreparedData, small_env: EnvConfig, signal_policy: Callable[[np.ndarray], np.ndarray]
) -> None:
    """Sanity of the known-answer setup: the signal rule beats buy-and-hold after costs."""
    md = planted.test
    ro = rollout_policy(signal_policy, md, small_env)
    metrics, _ = run_baselines(md, small_env, agent_targets=ro.target_exposure)
    assert ro.fees_paid_quote > 0
    assert ro.metrics()["total_return"] > metrics["buy_and_hold"]["total_return"] + 0.05
    assert ro.metrics()["total_return"] > metrics["random"]["total_return"] + 0.05


def test_random_baseline_annualises_its_mean_total_return(planted: PreparedData, small_env: EnvConfig) -> None:
    md = planted.full
    t = n_decisions(md, small_env)
    agent = np.where(np.arange(t) % 50 < 25, 1.0, -1.0)
    runs = play_baselines(md, small_env, agent_targets=agent, n_random=4, seed=2)
    m = runs.metrics["random"]
    if m["short_sample"]:
        pytest.skip("the planted market is shorter than a quarter of a year")
    ppy = runs.random_draws[0].periods_per_year
    assert m["annualised_return"] == pytest.approx((1.0 + m["total_return"]) ** (ppy / t) - 1.0, rel=1e-12)
